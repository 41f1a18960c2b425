"""The config's schema: every setting of a cell, typed, with its default. Plain dataclasses and enums (no Hydra):
``config.py`` registers them with Hydra, and models and data read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

MISSING = "???"  # omegaconf's marker for a value the YAML must give


def axis(default: Any = None, *, factory: Any = None, **about: Any) -> Any:
    """A setting with what ``axes.py`` says of it: ``column`` (its record column and filter name, else the
    field's name), ``keyed=False`` (does not change a result: not in the run key), ``recipe=False`` (not part of
    what makes a run the paper's: the seed, the precision, …), ``shown=True`` (a column of ``status``),
    ``added=True`` (an axis added after stores existed: at its default it is left out of the run key, and a record
    without it holds the default, so the runs already in a store keep their keys), ``was=`` (for an added axis whose
    default is not what runs had before it: the value a record without it holds, out of the key only at that
    value), ``when=(path, value)`` (read only where another setting has that value: elsewhere out of the key, and
    refused away from its default). Bounds, checked for every cell before anything runs (``validate.py``): ``low``
    / ``high`` (inclusive), ``above`` / ``below`` (exclusive); every float must also be finite."""
    if factory is not None:
        return field(default_factory=factory, metadata={"axis": about})
    return field(default=default, metadata={"axis": about})


class Block(str, Enum):
    basic = "basic"  # two 3x3 convs, depth 6n+2
    bottleneck = "bottleneck"  # 1x1-3x3-1x1 (x4), depth 9n+2
    single = "single"  # one 3x3 conv: the one-layer-skip ResNet of Table 3, depth 3n+2


class Stem(str, Enum):
    cifar = "cifar"
    imagenet = "imagenet"


class ShortcutOption(str, Enum):
    A = "A"  # zero-pad (paper, basic nets)
    B = "B"  # 1x1 projection + BN


class Dataset(str, Enum):
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    synthetic = "synthetic"
    imagenet = "imagenet"


class Normalize(str, Enum):
    channel = "channel"  # per-channel mean/std (default)
    pixel = "pixel"  # per-pixel mean image, per-channel std


class Init(str, Enum):
    he = "he"  # the paper's: He et al. 2015's normal init of every conv, BN's γ = 1
    # F(x) = 0 at the start, the branch still trainable: its last norm's γ = 0 where a norm ends it (Goyal et al.
    # 2017's zero-γ), else its last conv = 0 (timm's zero_init_last); ``zero_last_bn``, its old name, still reads
    zero_last = "zero_last"
    zero_last_bn = "zero_last"
    fixup = "fixup"  # no normalisation: branches start at 0, scaled by depth, scalar biases (Zhang et al. 2019)


class Precision(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class Compile(str, Enum):
    none = "none"  # eager: every kernel launched from Python
    graph = "graph"  # on CUDA the whole step (forward, backward, SGD) replays as one CUDA graph; eager on the CPU
    inductor = "inductor"  # graph, with each residual unit compiled by torch.compile (once per distinct shape)


@dataclass
class ModelConfig:
    name: str = axis("resnet110", column="model", shown=True)
    block: Block = Block.basic
    depth: int = axis(110, shown=True)
    stages: Optional[list[int]] = None  # units per stage; None: derived from depth (CIFAR)
    widths: list[int] = axis(factory=lambda: [16, 32, 64], low=1)  # channels per stage, each checked
    stem: Stem = Stem.cifar
    shortcut_option: ShortcutOption = ShortcutOption.A
    projection_bn: Optional[bool] = None  # None: BN after projections in post-activation nets only [inference]
    stride_on: str = "first_1x1"  # bottleneck stride: first_1x1 (authors' code) | 3x3
    # stochastic depth: the last unit's *drop* rate (Huang et al.'s p_L is its survival probability: ours is 1 − theirs)
    drop_path: float = axis(0.0, added=True, low=0, below=1)


@dataclass
class UnitConfig:
    name: str = axis("original", column="unit", shown=True)
    branch: list[str] = field(default_factory=lambda: ["conv", "bn", "relu", "conv", "bn"])
    after_add: list[str] = field(default_factory=lambda: ["relu"])


@dataclass
class ShortcutConfig:
    kind: str = axis("identity", column="shortcut", shown=True)  # a name in models/shortcuts.py's registry
    scale: float = axis(1.0, low=0)  # λ on the shortcut (scaling)
    scale_residual: float = axis(1.0, low=0)  # scale on F (scaling)
    gate_bias: float = 0.0  # b_g (gating)
    p: float = axis(0.5, low=0, below=1)  # drop ratio (dropout)
    inverted: bool = False  # dropout: PyTorch's inverted scaling instead of the paper's expectation
    eps: float = axis(1e-6, added=True, above=0)  # layerscale: α's start (Touvron et al. 2021: 1e-6 past depth 24)


@dataclass
class DataConfig:
    name: Dataset = axis(Dataset.cifar10, column="data", shown=True)
    num_classes: int = axis(10, low=1)
    root: Optional[str] = axis(None, keyed=False)  # None: $RESNET_ABLATE_DATA, else ~/.local/share/resnet-ablate
    normalize: Normalize = Normalize.channel
    download: bool = axis(True, keyed=False)
    synthetic_train: int = axis(1024, recipe=False, low=1)  # image counts of the synthetic dataset
    synthetic_test: int = axis(512, recipe=False, low=1)
    image_size: int = 224  # ImageNet: train crop
    scale: list[int] = axis(factory=lambda: [256, 480], column="scale_range")  # ImageNet: shorter side range
    test_size: int = 224  # ImageNet: single centre crop at test (paper: 320 too)
    workers: int = axis(8, keyed=False)  # ImageNet DataLoader workers


@dataclass
class TrainConfig:
    budget: str = axis("paper", keyed=False)  # a label: a record's budget is derived from what ran
    iterations: int = axis(64000, shown=True, low=1)
    milestones: list[int] = field(default_factory=lambda: [32000, 48000])
    warmup_iterations: int = axis(400, low=0)
    warmup_lr: float = axis(0.01, low=0)
    lr: float = axis(0.1, low=0)
    lr_decay: float = axis(0.1, low=0)
    momentum: float = axis(0.9, low=0, below=1)
    nesterov: bool = False
    weight_decay: float = axis(1e-4, low=0)
    batch_size: int = axis(128, column="batch", low=1)
    eval_every: int = axis(1000, recipe=False, low=1)
    checkpoint_every: int = axis(4000, keyed=False, low=1)
    precision: Precision = axis(Precision.auto, recipe=False)  # auto: bf16 autocast on CUDA, fp32 on the CPU
    channels_last: bool = axis(True, recipe=False)
    compile: Compile = axis(Compile.graph, keyed=False)
    device: str = axis("auto", keyed=False)  # auto | cuda | cpu
    deterministic: bool = axis(False, recipe=False)
    gpus: int = axis(
        1, recipe=False, low=1, high=1024
    )  # processes (GPUs) for one run: DDP, the batch split between them
    sync_bn: bool = axis(False, recipe=False)  # synchronise BatchNorm across them (the paper did not)
    grad_flow: bool = axis(True, keyed=False)  # per-unit gradient norms at each evaluation (gradient-flow figure)


class Rerun(str, Enum):
    none = "none"  # skip ended cells, resume partial ones
    failed = "failed"  # also rerun diverged cells (--retry-failed); failed cells always rerun
    all = "all"  # recompute every cell (--force)


@dataclass
class StoreConfig:
    root: str = "results"
    rerun: Rerun = Rerun.none


@dataclass
class LauncherConfig:
    name: str = "local"
    jobs_per_gpu: int = axis(1, low=1, high=64)
    gpus: Optional[str] = None  # comma list; None: CUDA_VISIBLE_DEVICES or all visible GPUs
    fail_fast: bool = False
    mps: bool = True  # local launcher, jobs_per_gpu > 1: a private NVIDIA MPS daemon so a GPU's workers overlap
    seeds_together: int = axis(
        1, low=1, high=64
    )  # up to this many seeds of a cell per worker, stacked into one network (torch.func)
    seeds: Optional[list[int]] = None  # set by the grid sweeper: the seeds one worker trains together
    pack: Optional[list[str]] = None  # set by the grid sweeper: the workers one cluster job runs together


@dataclass
class TensorBoardConfig:
    pass  # event files in <run directory>/tensorboard: `tensorboard --logdir <store.root>/runs`


@dataclass
class WandbConfig:
    project: str = "resnet-ablate"
    entity: Optional[str] = None
    mode: str = "offline"  # offline (files in <run directory>/wandb, `wandb sync` them) | online


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else MLflow's local default
    experiment: Optional[str] = None  # None: the sweep's preset, else "resnet-ablate"
    timeout: int = axis(10, low=1)  # seconds an MLflow request may take before the tracker is dropped


@dataclass
class LoggerConfig:
    """The experiment trackers a run also logs to (``logger=tensorboard``, ``logger=[wandb,mlflow]``); metrics.jsonl
    and result.json are always written and stay the record."""

    tensorboard: Optional[TensorBoardConfig] = None
    wandb: Optional[WandbConfig] = None
    mlflow: Optional[MlflowConfig] = None
    sweep: Optional[str] = None  # set by the grid sweeper: its preset
    group: Optional[str] = None  # set by the grid sweeper: its preset and overrides (a W&B group, an MLflow parent)
    parent: Optional[str] = None  # set by the grid sweeper: the MLflow parent run of the sweep


@dataclass
class Config:
    model: ModelConfig = MISSING  # filled by the YAML of conf/<group>/
    unit: UnitConfig = MISSING
    shortcut: ShortcutConfig = MISSING
    data: DataConfig = MISSING
    train: TrainConfig = MISSING
    store: StoreConfig = axis(factory=StoreConfig, keyed=False)
    launcher: LauncherConfig = axis(factory=LauncherConfig, keyed=False)
    logger: LoggerConfig = axis(factory=LoggerConfig, keyed=False)
    seed: int = axis(0, recipe=False, shown=True, low=0, below=2**31)  # seeds feed torch generators
    norm: str = axis("batch", added=True)  # what a placement's "bn" is: a name in models/units.py's NORMS
    # norm=group: groups per layer; must divide every width it normalises. 8 on CIFAR (docs/paper.md); runs from
    # before this setting used gcd(32, C) groups and read as 0
    groups: int = axis(8, added=True, was=0, when=("norm", "group"), low=1)
    act: str = axis("relu", added=True)  # what a placement's "relu" is: a name in models/units.py's ACTS
    init: Init = axis(Init.he, added=True)  # how the weights start (models/resnet.py)
