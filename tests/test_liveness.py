"""Every accepted cell is a net that can learn (models/liveness.py; docs/paper.md, "Liveness"): a composition no
gradient can leave is refused in one line before anything trains, and every other gets a gradient everywhere."""

import copy
import itertools
import re

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from typer.testing import CliRunner

from resnet_ablate.cli import app
from resnet_ablate.config import compose, conf_dir
from resnet_ablate.models import build_model
from resnet_ablate.models.liveness import smallest
from resnet_ablate.models.shortcuts import SHORTCUTS
from resnet_ablate.models.units import ACTS, NORMS
from resnet_ablate.schema import Init
from resnet_ablate.validate import check_architecture, check_cells

UNITS = {p.stem: OmegaConf.load(p) for p in sorted((conf_dir() / "unit").glob("*.yaml"))}

# Found dead in review (0 of the branch's tensors moved after a step, or ~1e-7): each must be refused.
DEAD = [
    ["init=zero_last", "unit=relu_before_add"],
    ["init=zero_last", "unit=relu_before_add", "model=resnet164"],
    ["init=zero_last", "shortcut=rezero"],
    ["init=zero_last", "shortcut=layerscale"],  # near-dead: α = 1e-6 times a zeroed branch
    ["init=fixup", "norm=none", "shortcut=rezero"],
    ["init=fixup", "norm=none", "unit=relu_before_add"],
]


@pytest.mark.parametrize("overrides", DEAD, ids=[" ".join(o) for o in DEAD])
def test_a_composition_that_cannot_learn_is_refused_in_one_line_naming_why_and_what_would(overrides):
    result = CliRunner().invoke(app, ["describe", "model.depth=20", *overrides])
    line = result.output.strip()
    assert result.exit_code == 2 and len(line.splitlines()) == 1, result.output
    assert "cannot learn" in line and "use " in line
    init = next(o for o in overrides if o.startswith("init="))
    assert init in line


def test_a_dry_run_refuses_a_dead_cell_of_a_preset_and_a_bad_value_in_a_later_cell(cfg):
    ok = cfg("model=resnet110", "model.depth=8")
    with pytest.raises(ValueError, match="cannot learn"):
        check_cells([ok, cfg("model=resnet110", "model.depth=8", "init=zero_last", "shortcut=rezero")], data=False)
    # a later cell of an architecture already checked: its values are checked all the same
    bad = cfg("model=resnet110", "model.depth=8", "shortcut=scaling", "shortcut.scale=-1")
    with pytest.raises(ValueError, match="shortcut.scale=-1.0 is out of range; it must be >= 0"):
        check_cells([cfg("model=resnet110", "model.depth=8", "shortcut=scaling"), bad], data=False)
    for value in ("inf", "1e308", "-1e39"):  # 1e308 overflowed α's float32 tensor with an unnamed error
        with pytest.raises(ValueError, match=re.escape(f"shortcut.eps={float(value)} is not a finite float32")):
            check_cells(
                [cfg("model=resnet110", "model.depth=8", "shortcut=layerscale", f"shortcut.eps={value}")], data=False
            )
    with pytest.raises(ValueError, match="train.lr=1e"):
        check_cells([cfg("model=resnet110", "model.depth=8", "train.lr=1e300")], data=False)


def test_groupnorm_groups_must_divide_every_width_and_apply_only_to_groupnorm():
    for args, message in [
        (["norm=group", "groups=32"], "groups=32 does not divide the 16 channels of a layer"),
        (["groups=4"], "groups applies only with norm=group; leave it at 8"),
        (["norm=group", "groups=0"], "groups=0 is out of range; it must be >= 1"),
    ]:
        result = CliRunner().invoke(app, ["describe", *args])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert message in result.output
    result = CliRunner().invoke(app, ["describe", "--json", "norm=group"])
    assert '"channels_per_group": "16: 2, 32: 4, 64: 8"' in result.output


def _cells():
    """Every placement × shortcut kind × init × norm × act, basic and bottleneck, at one unit per stage."""
    bases = [smallest(compose([m])) for m in ("model=resnet110", "model=resnet164")]
    for base, unit, kind, init, norm, act in itertools.product(bases, UNITS, SHORTCUTS, Init, NORMS, ACTS):
        if init.name != init.value:
            continue  # an old spelling (zero_last_bn)
        c = copy.deepcopy(base)
        c.unit.name, c.unit.branch, c.unit.after_add = unit, UNITS[unit].branch, UNITS[unit].after_add
        c.shortcut.kind, c.init, c.norm, c.act = kind, init, norm, act
        yield c


def _every_parameter_gets_a_gradient(c) -> bool:
    """Our own measure, apart from liveness.py's: other images and labels, and any gradient that is not 0 counts."""
    torch.manual_seed(1)
    net = build_model(c).train()
    x, y = torch.randn(6, 3, 16, 16), torch.randint(c.data.num_classes, (6,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    moved = dict.fromkeys((n for n, _ in net.named_parameters()), False)
    for _ in range(5):
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(x), y).backward()
        for n, p in net.named_parameters():
            moved[n] = moved[n] or bool(p.grad.abs().max() > 0)
        opt.step()
    return all(moved.values())


def _judge(c) -> tuple[str, str]:
    """One composition: ("refused", its one-line reason), ("accepted", "") where every parameter gets a gradient,
    or ("dead", what it is) where an accepted net has a parameter no gradient reaches."""
    try:
        check_architecture(c)
    except ValueError as e:
        return "refused", str(e)
    alive = _every_parameter_gets_a_gradient(c)
    return ("accepted", "") if alive else ("dead", str((c.unit.name, c.shortcut.kind, c.init, c.norm, c.act)))


@pytest.mark.slow
def test_every_composition_the_schema_accepts_learns_or_is_refused_in_one_line():
    """All 2880 compositions, judged by two processes of one thread each (the nets are tiny: a core each does twice
    the work of two threads on one net)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cells = list(_cells())
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        verdicts = list(pool.map(_judge, cells, chunksize=32))
    for verdict, text in verdicts:
        assert verdict != "dead", f"accepted, but a parameter gets no gradient: {text}"
        if verdict == "refused":
            assert len(text.splitlines()) == 1 and ("cannot learn" in text or "without normalisation" in text), text
    accepted, refused = (sum(v == kind for v, _ in verdicts) for kind in ("accepted", "refused"))
    assert accepted > 1500 and refused > 500  # 2 blocks × 5 × 8 × 3 × 3 × 4 = 2880 in all
