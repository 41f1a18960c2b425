"""The network: stem, stages of residual units, (pre-activation) final activation, pooling, classifier.

``_stage`` is the one place where depth becomes units (appendix; docs/paper.md): CIFAR basic nets have depth 6n+2,
bottleneck nets 9n+2, one-layer-skip nets 3n+2; ImageNet nets give their units per stage explicitly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..schema import Block, Init, ModelConfig, ShortcutConfig, ShortcutOption, Stem, UnitConfig
from .shortcuts import PadA, make_shortcut, projection
from .units import ACTS, ConvSpec, Layers, Placement, ResidualUnit, build_ops, zeroes_a_norm

CONVS_PER_UNIT = {Block.basic: 2, Block.bottleneck: 3, Block.single: 1}
EXPANSION = {Block.basic: 1, Block.bottleneck: 4, Block.single: 1}


def units_per_stage(model: ModelConfig) -> list[int]:
    if model.stages is not None:
        return list(model.stages)
    block = Block(model.block)
    per_unit = CONVS_PER_UNIT[block]
    step = per_unit * len(model.widths)
    if model.depth < step + 2 or (model.depth - 2) % step:
        valid = ", ".join(str(step * n + 2) for n in range(1, 7)) + ", …"
        raise ValueError(f"depth {model.depth} is not {step}n+2 for a {block.value} net; valid depths: {valid}")
    return [(model.depth - 2) // step] * len(model.widths)


def _unit_convs(block: Block, width: int, stride: int, stride_on: str) -> list[ConvSpec]:
    if block is Block.single:
        return [ConvSpec(width, 3, stride)]
    if block is Block.basic:
        return [ConvSpec(width, 3, stride), ConvSpec(width, 3)]
    if stride_on not in ("first_1x1", "3x3"):
        raise ValueError(f"model.stride_on must be first_1x1 or 3x3, got {stride_on!r}")
    s1, s3 = (stride, 1) if stride_on == "first_1x1" else (1, stride)
    return [ConvSpec(width, 1, s1), ConvSpec(width, 3, s3), ConvSpec(EXPANSION[block] * width, 1)]


class ResNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: nn.Sequential, final_act: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.stem, self.stages, self.final_act = stem, stages, final_act
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.final_act(self.stages(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


def _unit(
    model: ModelConfig,
    place: Placement,
    shortcut: ShortcutConfig,
    layers: Layers,
    channels: int,
    width: int,
    stride: int,
    first: bool,
    drop: float,
) -> tuple[ResidualUnit, int]:
    """One residual unit (Eq. 1–2, or 3 with the placement's ops after the addition): its branch, its shortcut
    (identity; option A's zero padding or a projection where the shape changes), and, in the first unit of a
    pre-activation stage, the activation before the split; and its output channels."""
    block = Block(model.block)
    convs = _unit_convs(block, width, stride, model.stride_on)
    out = convs[-1].out_channels
    ops = place.branch_ops(len(convs))
    split = first and place.preact  # first unit of a stage: pre-activation before the split
    split_act = build_ops(place.pre, channels, layers=layers) if split else nn.Identity()
    if split:
        ops = ops[len(place.pre) :]
    proj_bn = (not place.preact) if model.projection_bn is None else model.projection_bn
    if stride == 1 and channels == out:
        path = nn.Identity()
    elif block is Block.bottleneck or ShortcutOption(model.shortcut_option) is ShortcutOption.B:
        path = projection(channels, out, stride, layers.norm if proj_bn else None)
    else:
        path = PadA(out - channels, stride)
    branch = build_ops(ops, channels, convs, layers)
    shortcut_ = make_shortcut(shortcut, channels, out, stride, path, layers.norm)
    return ResidualUnit(split_act, branch, shortcut_, build_ops(place.after_add, out, layers=layers), drop), out


def build_resnet(
    model: ModelConfig,
    unit: UnitConfig,
    shortcut: ShortcutConfig,
    num_classes: int,
    layers: Layers = Layers(),
    init: Init = Init.he,
) -> ResNet:
    """The net; ``layers``: what the placement's ``bn`` and ``relu`` build (every place the paper puts a BN or a
    ReLU: stem, branch, after the addition, before pooling, after a projection); ``init``: how its weights start."""
    place = Placement.from_spec(unit.branch, unit.after_add)
    counts = units_per_stage(model)
    if len(counts) != len(model.widths):
        raise ValueError(f"model.stages has {len(counts)} entries but model.widths has {len(model.widths)}")
    total, index = sum(counts), 0  # unit l of L drops its branch with p_l = l / L · p_L (Huang et al.'s linear rule)

    stem_ops = [] if place.preact else ["bn", "relu"]
    if Stem(model.stem) is Stem.imagenet:
        stem = build_ops(["conv", *stem_ops], 3, [ConvSpec(model.widths[0], 7, 2)], layers)
        stem.append(nn.MaxPool2d(3, 2, 1))
    else:
        stem = build_ops(["conv", *stem_ops], 3, [ConvSpec(model.widths[0], 3)], layers)

    channels, stages = model.widths[0], []
    for s, (n, width) in enumerate(zip(counts, model.widths)):
        units = []
        for i in range(n):
            stride = 2 if (i == 0 and s > 0) else 1
            index += 1
            drop = index / total * model.drop_path
            unit_, channels = _unit(model, place, shortcut, layers, channels, width, stride, i == 0, drop)
            units.append(unit_)
        stages.append(nn.Sequential(*units))

    net = ResNet(stem, nn.Sequential(*stages), build_ops(place.pre, channels, layers=layers), channels, num_classes)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if Init(init) is Init.zero_last:
        _zero_last(net)
    if Init(init) is Init.fixup:
        _fixup(net)
    return net


NORM_LAYERS = (nn.BatchNorm2d, nn.GroupNorm)


def zeroed(unit: UnitConfig, norm: str, init: Init) -> str | None:
    """What ``init`` sets to 0 at the start (``describe`` and the run's record say it)."""
    if Init(init) is Init.zero_last:
        return "each branch's last norm γ" if zeroes_a_norm(unit.branch, norm) else "each branch's last conv"
    if Init(init) is Init.fixup:
        return "each branch's last conv and the classifier"
    return None


def _zero_last(net: ResNet) -> None:
    """Every branch starts at F(x) = 0 and stays trainable: the last of its convs and norms is zeroed, a norm's γ
    (β is 0: Goyal et al. 2017's zero-γ, where a norm ends the branch) or a conv's weights (timm's zero_init_last,
    where an activation and a conv follow the last norm). What follows maps 0 to 0; whether a gradient still
    reaches the branch is ``liveness.py``'s to measure (a ReLU after the zeroed layer blocks it)."""
    for unit in (m for m in net.modules() if isinstance(m, ResidualUnit)):
        last = [m for m in unit.branch.modules() if isinstance(m, (nn.Conv2d, *NORM_LAYERS))][-1]
        nn.init.zeros_(last.weight)


class Bias(nn.Module):
    """A learnt scalar added to its input, from 0 (Fixup's biases)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.bias


class Multiplier(nn.Module):
    """A learnt scalar multiplying its input, from 1 (Fixup's branch multiplier)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def _fixup(net: ResNet) -> None:
    """Fixup (Zhang, Dauphin & Ma 2019, Sec. 3) as the authors' code builds it (hongyi-zhang/Fixup, CIFAR): (1) the
    classifier and the last conv of each branch start at 0; (2) the branch's other convs keep He et al.'s init
    scaled by L^(−1/(2m−2)), for L units of m convs; (3) a scalar multiplier (from 1) and a scalar bias (from 0)
    before every conv, activation and the classifier. Where the authors' code places them: no bias before the stem
    conv (its input is the image) and the stem conv keeps PyTorch's default init; a multiplier then a bias end each
    branch where an activation follows the addition (the bias of that activation, kept off the identity path);
    in a unit whose shortcut is not the identity the branch's first bias comes before the split, so the
    down-sampling shortcut sees x + b too. No normalisation."""
    if any(isinstance(m, NORM_LAYERS) for m in net.modules()):
        raise ValueError("init=fixup trains without normalisation: add norm=none, or use init=he or init=zero_last")
    units = [m for m in net.modules() if isinstance(m, ResidualUnit)]
    with torch.no_grad():
        for unit in units:
            convs = [m for m in unit.branch.modules() if isinstance(m, nn.Conv2d)]
            for conv in convs[:-1]:
                conv.weight.mul_(len(units) ** (-1 / (2 * len(convs) - 2)))
            convs[-1].weight.zero_()
        net.fc.weight.zero_()
        net.fc.bias.zero_()
    net.stem[0].reset_parameters()
    net.fc = nn.Sequential(Bias(), net.fc)
    biased = (nn.Conv2d, *ACTS.values())
    splits = [u.split_act for u in units if isinstance(u.split_act, nn.Sequential)]
    for seq in [net.stem, *splits, *(u.branch for u in units), net.final_act]:
        for i in reversed(range(1 if seq is net.stem else 0, len(seq))):
            if isinstance(seq[i], biased):
                seq.insert(i, Bias())
    for unit in units:
        unit.branch.append(Multiplier())
        if any(isinstance(m, biased) for m in unit.after_add):
            unit.branch.append(Bias())
        if not isinstance(unit.shortcut.path, nn.Identity) and isinstance(unit.branch[0], Bias):
            unit.split_act = nn.Sequential(*(unit.split_act if isinstance(unit.split_act, nn.Sequential) else []))
            unit.split_act.append(unit.branch[0])
            del unit.branch[0]
