"""Liveness: whether a composed net can learn. Axes compose freely (placement × shortcut × init × norm × act), and
some compositions start at a point no gradient leaves: a branch zeroed before a ReLU (whose gradient at 0 is 0),
or a branch and its learnt scale both zero (each one's gradient is the other). Such a net would still train to a
number, and that number would stand in a table as if it measured the idea. So every distinct architecture of a
grid is built small (its own placement, shortcut, init, norm and act at one unit per stage), takes a few SGD steps
on random data on the CPU, and a parameter whose gradient stays exactly zero refuses the cell before anything
trains (``validate.check_cells``); so does a zero-started branch under a learnt scale that starts near zero.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict

from ..schema import Block, Init
from .resnet import CONVS_PER_UNIT
from .units import Placement

STEPS = 5  # Fixup's classifier starts at 0: its gradient reaches the branches' first convs only at the third step
LR = 0.1
BATCH = 8
SIZE = 16  # images: liveness does not depend on their size, the cost does


def smallest(cfg: DictConfig) -> DictConfig:
    """``cfg``'s network at one unit per stage: the same placement, shortcut, init, norm, act and widths."""
    small = copy.deepcopy(cfg)
    with open_dict(small):
        model = small.model
        if model.stages is not None:
            model.stages = [1] * len(model.stages)
        else:
            model.depth = CONVS_PER_UNIT[Block(model.block)] * len(model.widths) + 2
    return small


def dead_parameters(cfg: DictConfig) -> list[str]:
    """The parameters of ``cfg``'s smallest net whose gradient is exactly 0 at each of ``STEPS`` SGD steps on
    random images and labels (measured over every composition: exactly the nets behind a ReLU at 0 and the
    zero-times-zero products; a net that learns has none); empty for a net that can learn."""
    from . import build_model

    cpu = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        with torch.device("cpu"):
            net = build_model(smallest(cfg)).train()
        x = torch.randn(BATCH, 3, SIZE, SIZE)
        y = torch.arange(BATCH) % cfg.data.num_classes
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
        moved = dict.fromkeys((n for n, _ in net.named_parameters()), False)
        for _ in range(STEPS):
            opt.zero_grad(set_to_none=False)
            F.cross_entropy(net(x), y).backward()
            for name, p in net.named_parameters():
                moved[name] = moved[name] or bool(p.grad.any())
            opt.step()
    finally:
        torch.random.set_rng_state(cpu)
    return [name for name, m in moved.items() if not m]


def refusal(cfg: DictConfig) -> str | None:
    """Why ``cfg``'s net cannot learn, in one line naming the combination and what would learn; None if it can.
    A branch that starts at 0 under a learnt scale that starts at (or near) 0 is refused by rule: each one's
    gradient is the other, 0 with ReZero's α = 0 and ~1e-7 with LayerScale's ε (it measures alive, barely)."""
    init, kind, act = Init(cfg.init), str(cfg.shortcut.kind), str(cfg.act)
    combo = f"init={init.value} with shortcut={kind}, unit={cfg.unit.name}, norm={cfg.norm}, act={act}"
    starts_at_zero = init in (Init.zero_last, Init.fixup)
    if starts_at_zero and _learns_a_branch_scale(cfg):
        return (
            f"{combo} cannot learn: the branch starts at 0 ({init.value}) and its learnt scale α ({kind}) at 0 or "
            f"near it: each one's gradient is the other, so neither moves; use init=he with shortcut={kind}, or "
            f"shortcut=identity with init={init.value}"
        )
    dead = dead_parameters(cfg)
    if not dead:
        return None
    if starts_at_zero and Placement.from_spec(cfg.unit.branch, cfg.unit.after_add).post[-1:] == ("relu",):
        why = (
            f"the branch ends in an activation after the layer {init.value} zeroes, and {act}'s gradient at 0 "
            "is 0, so no gradient reaches the branch; use init=he, an act whose slope at 0 is not 0 (elu, gelu, "
            "silu), or a unit whose branch ends in a conv or a BN (original, bn_after_add, relu_only_preact, "
            "full_preact)"
        )
    else:
        why = f"no gradient reaches {len(dead)} parameter tensors in {STEPS} SGD steps (first: {dead[0]}); use init=he"
    return f"{combo} cannot learn: {why}"


def _learns_a_branch_scale(cfg: DictConfig) -> bool:
    from . import build_model
    from .shortcuts import LearnedScale

    with torch.device("meta"):
        return any(isinstance(m, LearnedScale) for m in build_model(smallest(cfg)).modules())
