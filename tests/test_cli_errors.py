"""Bad input: a non-zero exit and one line naming the problem and the valid choices."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resnet_ablate.cli import app

from .conftest import TINY

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
    (["bench", "--warmup", "-1"], "--warmup -1 must be 0 or more", ""),
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


@pytest.mark.parametrize("command", [["table", "table2"], ["report"]])
@pytest.mark.parametrize("target", ["a FIFO", "a character device", "a read-only folder", "a full disk"])
def test_out_writes_a_regular_file_or_refuses_in_one_line_and_leaves_what_was_there(tmp_path, command, target):
    """--out never replaces a device, never blocks on a FIFO, never ends in a traceback on a read-only or full disk
    (refused before the work where it can be known; the file there before kept where it cannot)."""
    import subprocess

    from resnet_ablate.config import compose
    from resnet_ablate.sweep import run_cells

    if target in ("a read-only folder", "a full disk"):
        mount = tmp_path / "mnt"
        mount.mkdir()
        options = "ro" if target == "a read-only folder" else "size=4k"
        if os.geteuid() or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)]).returncode:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        out = mount / "out.html"
    else:
        out = Path("/dev/null") if target == "a character device" else tmp_path / "fifo"
        if target == "a FIFO":
            os.mkfifo(out)
    try:
        if target == "a full disk":  # a real store, so that the work is done and only the write fails
            store = tmp_path / "store"
            tiny = [*TINY, "budget=smoke", "train.iterations=4", "train.eval_every=2", "train.checkpoint_every=2"]
            run_cells(compose([*tiny, f"store.root={store}", f"data.root={tmp_path / 'data'}"]))
            (out.parent / "out.html").write_text("before")
        else:
            store = tmp_path / "empty"
        args = [*command, "data=synthetic", "model=resnet20", f"store.root={store}", "--out", str(out)]
        result = CliRunner().invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]  # a long report says what it does
        errors = [line for line in lines if line.startswith("error:")]
        assert result.exit_code in (1, 2) and errors == lines[-1:], result.output
        assert str(out) in lines[-1] and "Traceback" not in result.output
        if target == "a character device":
            assert Path("/dev/null").is_char_device()
        if target == "a full disk":
            assert out.read_text() == "before" and "No space left" in lines[-1]
    finally:
        if target in ("a read-only folder", "a full disk"):
            subprocess.run(["umount", str(tmp_path / "mnt")])
