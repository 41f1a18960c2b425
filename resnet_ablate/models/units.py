"""Activation placements (Table 2) as data: a unit's op order, and the residual unit built from it. The
placements themselves are YAML (``conf/unit/*.yaml``, the one list of them).

A placement is the residual branch written for the *basic* unit (two ``conv`` ops) plus the ops after the
addition. It splits into ``pre`` (before the first conv), ``mid`` (between convs), ``post`` (after the last
conv); a bottleneck unit repeats ``mid`` between its three convs, a one-layer unit drops it. A non-empty
``pre`` makes the net *pre-activation* (paper, appendix; docs/paper.md): the first unit of each stage applies
``pre`` before the split, the stem is a bare conv, and ``pre`` runs once more after the last unit.

A placement says ``bn`` and ``relu`` as the paper does; they mean the normalisation and the activation chosen by
``norm`` and ``act`` (``Layers``): BatchNorm and ReLU by default, GroupNorm, none, ELU, GELU or SiLU otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..registry import Registry
from .noise import Noise

OPS = ("conv", "bn", "relu")


@dataclass(frozen=True)
class Placement:
    pre: tuple[str, ...]
    mid: tuple[str, ...]
    post: tuple[str, ...]
    after_add: tuple[str, ...]

    @classmethod
    def from_spec(cls, branch: Sequence[str], after_add: Sequence[str]) -> Placement:
        branch, after_add = tuple(branch), tuple(after_add)
        for op in branch + after_add:
            if op not in OPS:
                raise ValueError(f"unknown op {op!r} in unit spec; valid ops: {', '.join(OPS)}")
        if "conv" in after_add:
            raise ValueError("unit.after_add may not contain 'conv'; valid ops there: bn, relu")
        if branch.count("conv") != 2:
            raise ValueError(
                f"unit.branch must hold exactly 2 'conv' ops (it is written for the basic unit), "
                f"got {branch.count('conv')} in {list(branch)}"
            )
        first = branch.index("conv")
        second = branch.index("conv", first + 1)
        return cls(branch[:first], branch[first + 1 : second], branch[second + 1 :], after_add)

    @property
    def preact(self) -> bool:
        return bool(self.pre)

    def branch_ops(self, n_convs: int) -> list[str]:
        """The branch's op order for a unit with ``n_convs`` weight layers (1, 2 or 3)."""
        ops = [*self.pre, "conv"]
        for _ in range(n_convs - 1):
            ops += [*self.mid, "conv"]
        return ops + list(self.post)


def zeroes_a_norm(branch: Sequence[str], norm: str) -> bool:
    """Whether ``init=zero_last`` zeroes a norm's γ (a norm follows the branch's last conv), not the last conv."""
    return norm != "none" and "bn" in Placement.from_spec(branch, []).post


def group_norm(groups: int) -> Callable[[int], nn.Module]:
    """GroupNorm with ``groups`` groups (Wu & He 2018); a width it does not divide is a one-line ValueError."""

    def make(channels: int) -> nn.Module:
        if channels % groups:
            raise ValueError(
                f"groups={groups} does not divide the {channels} channels of a layer; use a divisor of every width "
                "(the CIFAR nets' widths are multiples of 16: 1, 2, 4, 8 or 16)"
            )
        return nn.GroupNorm(groups, channels)

    return make


NORMS = Registry("norm")  # what a placement's "bn" is: (groups) -> (channels) -> the layer
NORMS.register("batch", lambda groups: nn.BatchNorm2d)  # the paper's
NORMS.register("group", group_norm)  # GroupNorm (Wu & He 2018), ``groups`` groups per layer
NORMS.register("none", lambda groups: lambda channels: nn.Identity())  # SkipInit, Fixup

ACTS = Registry("act")  # what a placement's "relu" is: () -> the layer
ACTS.register("relu", nn.ReLU)  # the paper's
ACTS.register("elu", nn.ELU)  # Clevert et al. 2016
ACTS.register("gelu", nn.GELU)
ACTS.register("silu", nn.SiLU)


@dataclass(frozen=True)
class Layers:
    """What a placement's ``bn`` and ``relu`` build: the chosen normalisation (per width) and activation."""

    norm: Callable[[int], nn.Module] = nn.BatchNorm2d
    act: Callable[[], nn.Module] = nn.ReLU

    @classmethod
    def of(cls, norm: str, act: str, groups: int = 8) -> Layers:
        return cls(NORMS.get_valid(norm)(groups), ACTS.get_valid(act))


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int = 1


def build_ops(
    ops: Sequence[str], channels: int, convs: Sequence[ConvSpec] = (), layers: Layers = Layers()
) -> nn.Sequential:
    """Turn an op order into layers: each ``conv`` takes the next ConvSpec; ``bn`` (``layers.norm``) follows the
    current width; ``relu`` is ``layers.act``."""
    built: list[nn.Module] = []
    convs = iter(convs)
    for op in ops:
        if op == "conv":
            c = next(convs)
            built.append(nn.Conv2d(channels, c.out_channels, c.kernel, c.stride, c.kernel // 2, bias=False))
            channels = c.out_channels
        elif op == "bn":
            built.append(layers.norm(channels))
        else:
            built.append(layers.act())
    return nn.Sequential(*built)


class ResidualUnit(nn.Module):
    """x_{l+1} = f(shortcut(x', D(F(x')))), x' = split_act(x): split_act is the first unit's shared pre-activation.
    D is stochastic depth (Huang et al. 2016): in training each sample's whole branch is dropped with probability
    ``drop`` and a kept one is divided by 1 − drop, so its expectation is F(x'); at evaluation D is the identity."""

    def __init__(
        self, split_act: nn.Module, branch: nn.Module, shortcut: nn.Module, after_add: nn.Module, drop: float = 0.0
    ):
        super().__init__()
        self.split_act, self.branch, self.shortcut, self.after_add = split_act, branch, shortcut, after_add
        # A tensor, not a float: units that differ only in their rate share one compiled graph (compile=inductor)
        self.register_buffer("drop", torch.tensor(float(drop)) if drop else None, persistent=False)
        self.noise = Noise() if drop else None  # its masks: its network's own (noise.py)

    def forward(self, x):
        x = self.split_act(x)
        fx = self.branch(x)
        if self.training and self.drop is not None:
            keep = 1 - self.drop  # a mask per sample
            fx = fx * (self.noise.uniform(fx[:, :1, :1, :1]) < keep) / keep
        return self.after_add(self.shortcut(x, fx))
