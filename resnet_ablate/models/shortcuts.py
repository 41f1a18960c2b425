"""Shortcut variants of Table 1, and the learnt branch scales that followed the paper: how the shortcut h(x) and the
residual F(x) are combined.

Every shortcut is ``forward(x, fx) -> y`` around a *path* for x: the identity, option A (subsample and
zero-pad) where a unit changes shape, or a 1x1 projection. The variants scale, gate or drop that path
right before the addition (paper, Sec. 3.1 and Fig. 2; docs/paper.md).

Each kind registers its factory and the ``shortcut.*`` parameters it reads; validation refuses a cell that sets
any other (``validate.py``), so one network never hides behind two run keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry
from .noise import Noise

SHORTCUTS = Registry("shortcut")  # kind -> factory(cfg, in_ch, out_ch, stride, path, norm)
PARAMETERS: dict[str, tuple[str, ...]] = {}  # per kind: the shortcut.* fields it reads


def register(name: str, parameters: tuple[str, ...] = ()):
    """Register a shortcut kind's factory and the ``shortcut.*`` parameters it reads."""

    def add(factory):
        SHORTCUTS.register(name, factory)
        PARAMETERS[name] = parameters
        return factory

    return add


class PadA(nn.Module):
    """Option A: parameter-free; subsample x[:, :, ::s, ::s] and zero-pad the new channels."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x):
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


def projection(in_ch: int, out_ch: int, stride: int, norm: Callable[[int], nn.Module] | None) -> nn.Module:
    """Option B / bottleneck projection: a 1x1 conv (no bias), optionally followed by the net's normalisation."""
    conv = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
    return nn.Sequential(conv, norm(out_ch)) if norm else nn.Sequential(conv)


class Sum(nn.Module):
    """y = h(x) + F(x): the identity shortcut (original), and the 1x1 conv shortcut when h is a projection."""

    def __init__(self, path: nn.Module):
        super().__init__()
        self.path = path

    def forward(self, x, fx):
        return self.path(x) + fx


class Scaling(nn.Module):
    """y = λ·h(x) + μ·F(x); λ = 0 removes the shortcut (a plain net)."""

    def __init__(self, path: nn.Module, scale: float, scale_residual: float):
        super().__init__()
        self.path, self.scale, self.scale_residual = path, scale, scale_residual

    def forward(self, x, fx):
        if self.scale == 0:
            return self.scale_residual * fx
        return self.scale * self.path(x) + self.scale_residual * fx


class Gating(nn.Module):
    """g = σ(W_g x + b_g); exclusive: (1−g)⊙h(x) + g⊙F(x); shortcut-only: (1−g)⊙h(x) + F(x)."""

    def __init__(self, path: nn.Module, in_ch: int, out_ch: int, stride: int, bias: float, exclusive: bool):
        super().__init__()
        self.path, self.exclusive = path, exclusive
        self.gate = nn.Conv2d(in_ch, out_ch, 1, stride, bias=True)
        nn.init.constant_(self.gate.bias, bias)

    def forward(self, x, fx):
        g = torch.sigmoid(self.gate(x))
        return (1 - g) * self.path(x) + (g * fx if self.exclusive else fx)


class LearnedScale(nn.Module):
    """y = h(x) + α·F(x), α learnt: one scalar per unit from 0 (ReZero, Bachlechner et al. 2020; with norm=none,
    SkipInit, De & Smith 2020), or one per channel from a small ε (LayerScale, Touvron et al. 2021)."""

    def __init__(self, path: nn.Module, alpha: torch.Tensor):
        super().__init__()
        self.path, self.alpha = path, nn.Parameter(alpha)

    def forward(self, x, fx):
        return self.path(x) + self.alpha * fx


class DropoutShortcut(nn.Module):
    """y = dropout(h(x)) + F(x). Paper reading: keep with prob 1−p, no rescaling; ×(1−p) at test.
    ``inverted``: PyTorch's dropout (÷(1−p) in training, identity at test)."""

    def __init__(self, path: nn.Module, p: float, inverted: bool):
        super().__init__()
        self.path, self.p, self.inverted = path, p, inverted
        self.noise = Noise()  # its masks: its network's own (noise.py)

    def forward(self, x, fx):
        h = self.path(x)
        if self.training:
            kept = h * (self.noise.uniform(h) >= self.p)
            return (kept / (1 - self.p) if self.inverted else kept) + fx
        return (h if self.inverted else h * (1 - self.p)) + fx


# Factories: (cfg, in_ch, out_ch, stride, path, norm) -> module. ``path`` is chosen by the network builder;
# ``norm`` is the net's normalisation (per width).
@register("identity")
def _identity(cfg, in_ch, out_ch, stride, path, norm):
    return Sum(path)


@register("scaling", ("scale", "scale_residual"))
def _scaling(cfg, in_ch, out_ch, stride, path, norm):
    return Scaling(path, cfg.scale, cfg.scale_residual)


@register("exclusive_gating", ("gate_bias",))
def _exclusive_gating(cfg, in_ch, out_ch, stride, path, norm):
    return Gating(path, in_ch, out_ch, stride, cfg.gate_bias, exclusive=True)


@register("shortcut_gating", ("gate_bias",))
def _shortcut_gating(cfg, in_ch, out_ch, stride, path, norm):
    return Gating(path, in_ch, out_ch, stride, cfg.gate_bias, exclusive=False)


@register("conv1x1")
def _conv1x1(cfg, in_ch, out_ch, stride, path, norm):
    return Sum(projection(in_ch, out_ch, stride, norm))


@register("rezero")
def _rezero(cfg, in_ch, out_ch, stride, path, norm):
    return LearnedScale(path, torch.zeros(()))


@register("layerscale", ("eps",))
def _layerscale(cfg, in_ch, out_ch, stride, path, norm):
    return LearnedScale(path, torch.full((out_ch, 1, 1), float(cfg.eps)))


@register("dropout", ("p", "inverted"))
def _dropout(cfg, in_ch, out_ch, stride, path, norm):
    return DropoutShortcut(path, cfg.p, cfg.inverted)


def make_shortcut(cfg, in_ch: int, out_ch: int, stride: int, path: nn.Module, norm=nn.BatchNorm2d) -> nn.Module:
    kind = str(cfg.kind)
    return SHORTCUTS.get_valid(kind)(cfg, in_ch, out_ch, stride, path, norm)
