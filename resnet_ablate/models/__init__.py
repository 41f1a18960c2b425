"""Build the paper's networks from configs, and describe them.

>>> from resnet_ablate.config import compose
>>> from resnet_ablate.models import build_model
>>> net = build_model(compose(["model=resnet110", "unit=full_preact"]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..schema import Block, Config
from .noise import seed_noise
from .resnet import CONVS_PER_UNIT, ResNet, build_resnet, units_per_stage, zeroed
from .shortcuts import SHORTCUTS
from .units import Layers, Placement, ResidualUnit

__all__ = ["build_model", "describe", "zeroed", "ResNet", "ResidualUnit", "Placement", "SHORTCUTS"]


def build_model(cfg: Config) -> ResNet:
    """The network of a composed config (``model``, ``unit``, ``shortcut``, ``data.num_classes``, ``norm``,
    ``act``, ``init``)."""
    layers = Layers.of(cfg.norm, cfg.act, cfg.groups)
    net = build_resnet(cfg.model, cfg.unit, cfg.shortcut, cfg.data.num_classes, layers, cfg.init)
    seed_noise(net, cfg.seed)  # its drop-path and dropout masks: its own, whatever it trains beside
    return net


def architecture(cfg: Config) -> str:
    """What decides a network's shape (its modules and their sizes) and whether it builds: cells equal in it build
    alike, whatever their shortcut parameters (λ, b_g, p are values, not shapes) or recipe."""
    return str([cfg.model, cfg.unit, cfg.shortcut.kind, cfg.data.num_classes, cfg.norm, cfg.groups, cfg.act, cfg.init])


def count_macs(net: nn.Module, image_size: int) -> int:
    """Multiply-adds of one forward pass of one image (convs and the classifier)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out[0].numel() * k
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, image_size, image_size, device=next(net.parameters()).device))
    net.train(was_training)
    for h in handles:
        h.remove()
    return total


def input_size(cfg: Config) -> int:
    """The side of the images the network sees: CIFAR's 32, or ImageNet's training crop."""
    return cfg.data.image_size if cfg.data.name == "imagenet" else 32


def describe(cfg: Config, net: ResNet | None = None) -> dict[str, Any]:
    """The architecture summary shown by ``resnet-ablate describe``."""
    if net is None:
        with torch.device("meta"):  # shapes only: counting a ResNet-1001 costs no memory and no arithmetic
            net = build_model(cfg)
    place = Placement.from_spec(cfg.unit.branch, cfg.unit.after_add)
    units = [u for u in net.modules() if isinstance(u, ResidualUnit)]
    branch_convs = sum(isinstance(m, nn.Conv2d) for u in units for m in u.branch.modules())
    stem_convs = sum(isinstance(m, nn.Conv2d) for m in net.stem.modules())

    def join(ops):
        return "-".join(ops) or "none"

    per_group = {m.num_channels: m.num_channels // m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)}

    return {
        "model": cfg.model.name,
        "unit": cfg.unit.name,
        "shortcut": str(cfg.shortcut.kind),
        "norm": str(cfg.norm),
        "act": str(cfg.act),
        "init": str(cfg.init.value if hasattr(cfg.init, "value") else cfg.init),
        "zeroed": zeroed(cfg.unit, cfg.norm, cfg.init) or "none",
        **({"channels_per_group": ", ".join(f"{c}: {g}" for c, g in sorted(per_group.items()))} if per_group else {}),
        "drop_path": cfg.model.drop_path,
        "depth": cfg.model.depth,
        "weight_layers": stem_convs + branch_convs + 1,  # as the paper counts depth: stem, branches, classifier
        "params": sum(p.numel() for p in net.parameters()),
        "macs": count_macs(net, input_size(cfg)),
        "units_per_stage": units_per_stage(cfg.model),
        "branch": join(place.branch_ops(CONVS_PER_UNIT[Block(cfg.model.block)])),
        "after_add": join(place.after_add),
        "preactivation": place.preact,
        "before_split_in_first_unit": join(place.pre),
        "before_pooling": join(place.pre),
        "num_classes": cfg.data.num_classes,
    }
