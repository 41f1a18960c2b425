"""Structured configs (Hydra ConfigStore schemas behind the YAML in conf/) and config composition."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


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


class ShortcutKind(str, Enum):
    identity = "identity"
    scaling = "scaling"
    exclusive_gating = "exclusive_gating"
    shortcut_gating = "shortcut_gating"
    conv1x1 = "conv1x1"
    dropout = "dropout"


class Dataset(str, Enum):
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    synthetic = "synthetic"
    imagenet = "imagenet"


class Normalize(str, Enum):
    channel = "channel"  # per-channel mean/std (default)
    pixel = "pixel"  # per-pixel mean image, per-channel std


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
    name: str = "resnet110"
    block: Block = Block.basic
    depth: int = 110
    stages: Optional[list[int]] = None  # units per stage; None: derived from depth (CIFAR)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    stem: Stem = Stem.cifar
    shortcut_option: ShortcutOption = ShortcutOption.A
    projection_bn: Optional[bool] = None  # None: BN after projections in post-activation nets only [inference]
    stride_on: str = "first_1x1"  # bottleneck stride: first_1x1 (authors' code) | 3x3


@dataclass
class UnitConfig:
    name: str = "original"
    branch: list[str] = field(default_factory=lambda: ["conv", "bn", "relu", "conv", "bn"])
    after_add: list[str] = field(default_factory=lambda: ["relu"])


@dataclass
class ShortcutConfig:
    kind: ShortcutKind = ShortcutKind.identity
    scale: float = 1.0  # λ on the shortcut (scaling)
    scale_residual: float = 1.0  # scale on F (scaling)
    gate_bias: float = 0.0  # b_g (gating)
    p: float = 0.5  # drop ratio (dropout)
    inverted: bool = False  # dropout: PyTorch's inverted scaling instead of the paper's expectation


@dataclass
class DataConfig:
    name: Dataset = Dataset.cifar10
    num_classes: int = 10
    root: Optional[str] = None  # None: $RESNET_ABLATE_DATA, else ~/.local/share/resnet-ablate
    normalize: Normalize = Normalize.channel
    download: bool = True
    synthetic_train: int = 1024  # image counts of the synthetic dataset
    synthetic_test: int = 512
    image_size: int = 224  # ImageNet: train crop
    scale: list[int] = field(default_factory=lambda: [256, 480])  # ImageNet: shorter side drawn from this range
    test_size: int = 224  # ImageNet: single centre crop at test (paper: 320 too)
    workers: int = 8  # ImageNet DataLoader workers


@dataclass
class TrainConfig:
    budget: str = "paper"
    iterations: int = 64000
    milestones: list[int] = field(default_factory=lambda: [32000, 48000])
    warmup_iterations: int = 400
    warmup_lr: float = 0.01
    lr: float = 0.1
    lr_decay: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    batch_size: int = 128
    eval_every: int = 1000
    checkpoint_every: int = 4000
    precision: Precision = Precision.auto  # auto: bf16 autocast on CUDA, fp32 on the CPU
    channels_last: bool = True
    compile: Compile = Compile.graph
    device: str = "auto"  # auto | cuda | cpu
    deterministic: bool = False
    gpus: int = 1  # processes (GPUs) for one run: DistributedDataParallel, the batch split between them
    sync_bn: bool = False  # synchronise BatchNorm across them (the paper did not)
    grad_flow: bool = True  # record per-unit gradient norms at each evaluation (gradient-flow figure)


class Rerun(str, Enum):
    none = "none"  # skip ended cells, resume partial ones
    failed = "failed"  # also rerun failed and diverged cells (--retry-failed)
    all = "all"  # recompute every cell (--force)


@dataclass
class StoreConfig:
    root: str = "results"
    rerun: Rerun = Rerun.none


@dataclass
class LauncherConfig:
    name: str = "local"
    jobs_per_gpu: int = 1
    gpus: Optional[str] = None  # comma list; None: CUDA_VISIBLE_DEVICES or all visible GPUs
    fail_fast: bool = False
    mps: bool = True  # local launcher, jobs_per_gpu > 1: a private NVIDIA MPS daemon so a GPU's workers overlap
    seeds_together: int = 1  # up to this many seeds of a cell per worker, stacked into one network (torch.func)
    seeds: Optional[list[int]] = None  # set by the grid sweeper: the seeds one worker trains together
    pack: Optional[list[str]] = None  # set by the grid sweeper: the workers one cluster job runs together


@dataclass
class Config:
    model: ModelConfig = MISSING
    unit: UnitConfig = MISSING
    shortcut: ShortcutConfig = MISSING
    data: DataConfig = MISSING
    train: TrainConfig = MISSING
    store: StoreConfig = field(default_factory=StoreConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    seed: int = 0


cs = ConfigStore.instance()
cs.store(name="schema", node=Config)
for _group, _node in [
    ("model", ModelConfig),
    ("unit", UnitConfig),
    ("shortcut", ShortcutConfig),
    ("data", DataConfig),
    ("budget", TrainConfig),
]:
    cs.store(group=_group, name="schema", node=_node, package=_group if _group != "budget" else "train")

# Keys that do not change what a run computes: left out of the run's identity (its hash).
NOT_IDENTITY = (
    "store",
    "launcher",
    "data.root",
    "data.download",
    "data.workers",
    "train.device",
    "train.compile",
    "train.checkpoint_every",
    "train.grad_flow",
)


def conf_dir() -> Path:
    """conf/ beside the package in a checkout, or inside it in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise FileNotFoundError(f"cannot find resnet-ablate's conf/ near {here}")


def compose(overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose the config as Hydra would for a run with these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    """A copy of ``cfg`` for another seed."""
    other = copy.deepcopy(cfg)
    other.seed = seed
    return other


def data_root(cfg: DictConfig) -> Path:
    root = cfg.data.root or os.environ.get("RESNET_ABLATE_DATA")
    return Path(root or Path.home() / ".local" / "share" / "resnet-ablate").expanduser()


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that decides a run's result, as plain data."""
    d = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True, enum_to_str=True
    )
    for key in NOT_IDENTITY:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return d
