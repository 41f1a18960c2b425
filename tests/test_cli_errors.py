"""Bad input: a non-zero exit and one line naming the problem and the valid choices."""

import pytest
from typer.testing import CliRunner

from resnet_ablate.cli import app

BAD = [
    (["describe", "model.depth=111"], "depth 111 is not 6n+2", "valid depths: 8, 14, 20"),
    (["describe", "model=resnet111"], "unknown model 'resnet111'", "resnet110"),
    (["describe", "shortcut=bogus"], "unknown shortcut 'bogus'", "exclusive_gating"),
    (["describe", "shortcut.kind=bogus"], "unknown shortcut 'bogus'", "dropout"),
    (["describe", "shortcut=dropout", "shortcut.p=-0.1"], "shortcut.p=-0.1 is out of range", "it must be in [0, 1)"),
    (["describe", "unit=preact"], "unknown unit 'preact'", "full_preact"),
    (["describe", "unit.branch=[bn,relu,bn]"], "exactly 2 'conv'", "got 0"),
    (["describe", "unit.branch=[conv,tanh,conv]"], "unknown op 'tanh'", "conv, bn, relu"),
    (["describe", "model.stride_on=middle", "model=resnet164"], "model.stride_on must be", "3x3"),
    (["describe", "model.nope=1"], "unknown setting 'model.nope'", "valid at model: name, block, depth"),
    (["describe", "modle=resnet20"], "unknown setting 'modle'; did you mean model?", "valid at the top level: model"),
    (["train", "train.iteration=5"], "did you mean train.iterations?", "warmup_iterations"),
    (["describe", "model.depth=25"], "depth 25 is not 6n+2", "valid depths: 8, 14, 20, 26, 32, 38, …"),
    (
        ["train", "train.iterations=80", "train.milestones=[40,60]"],
        "warmup_iterations=400 reaches the first milestone (40)",
        "below 40",
    ),
    (["sweep", "table9", "--dry-run"], "unknown sweep preset 'table9'", "table2"),
    (["train", "train.precision=fp16"], "Invalid value 'fp16'", "bf16, fp32"),
    (["train", "train.compile=cudagraphs"], "Invalid value 'cudagraphs'", "none, graph, inductor"),
    (["bench", "--warmup", "3"], "--warmup 3 must exceed", "graph capture"),
    (["bench", "--jobs", "1,x"], "--jobs '1,x'", "positive integers"),
    (["bench", "--seeds", "1,2", "--compile", "inductor"], "train.compile=inductor", "graph or none"),
    (["sweep", "table2", "--dry-run", "launcher.seeds_together=5", "train.gpus=2"], "train.gpus=2", "train.gpus=1"),
]


@pytest.mark.parametrize("args,problem,choices", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_exits_nonzero_with_one_line(args, problem, choices):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and problem in lines[0] and choices in lines[0]
