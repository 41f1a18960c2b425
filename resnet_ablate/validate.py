"""Everything a cell's config must satisfy before the store is touched: value ranges the schema cannot express,
each shortcut kind's own parameters, the device, the data, and an architecture that builds. Each failure is a
``ValueError`` whose message is one line naming the setting and what is valid."""

from __future__ import annotations

import re
from dataclasses import fields

import torch
from omegaconf import DictConfig

from .data import data_root
from .models import architecture
from .schema import Dataset, ShortcutConfig
from .trackers import check_installed

# (setting, lowest valid value): integers and floats the schema types but does not bound.
AT_LEAST = {
    "seed": 0,
    "train.iterations": 1,
    "train.batch_size": 1,
    "train.eval_every": 1,
    "train.checkpoint_every": 1,
    "train.warmup_iterations": 0,
    "train.gpus": 1,
    "train.lr": 0.0,
    "train.warmup_lr": 0.0,
    "train.lr_decay": 0.0,
    "train.momentum": 0.0,
    "train.weight_decay": 0.0,
    "data.num_classes": 1,
    "data.synthetic_train": 1,
    "data.synthetic_test": 1,
    "launcher.jobs_per_gpu": 1,
    "launcher.seeds_together": 1,
}
AT_MOST = {"launcher.jobs_per_gpu": 64, "launcher.seeds_together": 64, "train.gpus": 1024}
NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")  # names shown in tables, plots and file names: no markup, no math
SEED_LIMIT = 2**31  # seeds feed torch generators, times a constant for the data order


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_values(cfg: DictConfig) -> None:
    for key, low in AT_LEAST.items():
        value = _get(cfg, key)
        if value < low:
            raise ValueError(f"{key}={value} is out of range; it must be >= {low}")
    for key, high in AT_MOST.items():
        if _get(cfg, key) > high:
            raise ValueError(f"{key}={_get(cfg, key)} is out of range; it must be <= {high}")
    for key in ("model.name", "unit.name"):
        if not NAME.fullmatch(str(_get(cfg, key))):
            raise ValueError(f"{key}={_get(cfg, key)!r} is not a name: use letters, digits and _ . + - (at most 64)")
    if cfg.seed >= SEED_LIMIT:
        raise ValueError(f"seed={cfg.seed} is out of range; it must be below {SEED_LIMIT}")
    if cfg.train.momentum >= 1:
        raise ValueError(f"train.momentum={cfg.train.momentum} is out of range; it must be in [0, 1)")
    milestones = list(cfg.train.milestones)
    if milestones != sorted(milestones) or any(m < 0 for m in milestones):
        raise ValueError(f"train.milestones={milestones} must be non-negative iterations in increasing order")
    check_schedule(cfg.train)
    if Dataset(cfg.data.name) is Dataset.synthetic and cfg.data.synthetic_train < cfg.train.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} exceeds the {cfg.data.synthetic_train} training images "
            "(data.synthetic_train)"
        )
    for s in cfg.launcher.seeds or []:
        if not 0 <= s < SEED_LIMIT:
            raise ValueError(f"launcher.seeds holds {s}; seeds must be in [0, {SEED_LIMIT})")


def check_schedule(t: DictConfig) -> None:
    """A warm-up ends before the first milestone (and before the end): one that outlasts it would silently replace
    the schedule by ``warmup_lr`` throughout (Sec. 4.1 warms up only until training starts to go down)."""
    end = min([*t.milestones, t.iterations])
    if 0 < end <= t.warmup_iterations and t.warmup_lr != t.lr:
        where = f"the first milestone ({end})" if end in t.milestones else f"the end (train.iterations={end})"
        raise ValueError(
            f"train.warmup_iterations={t.warmup_iterations} reaches {where}: lr would stay at train.warmup_lr="
            f"{t.warmup_lr} and the milestones would do nothing; set train.warmup_iterations below {end} (0: none)"
        )


def check_shortcut(shortcut: DictConfig) -> None:
    """A kind reads only its own parameters: another one set away from its default would split one network over
    two run keys, so it is refused."""
    from .models.shortcuts import PARAMETERS

    kind = str(shortcut.kind)
    if kind not in PARAMETERS:
        raise ValueError(f"unknown shortcut {kind!r}; valid: {', '.join(PARAMETERS)}")
    own = PARAMETERS[kind]
    defaults = ShortcutConfig()
    for name in (f.name for f in fields(ShortcutConfig) if f.name != "kind"):
        if name not in own and shortcut[name] != getattr(defaults, name):
            mine = ", ".join(f"shortcut.{p}" for p in own) or "none"
            raise ValueError(f"shortcut.{name} does not apply to shortcut={kind} (its parameters: {mine})")


def check_device(cfg: DictConfig) -> None:
    from .step import resolve_device

    resolve_device(cfg.train.device)


_TRAINING_IMAGES: dict[str, int] = {}  # per dataset checked in this process (``train`` checks, then its run does)


def check_data(cfg: DictConfig) -> None:
    """The dataset is on disk and readable (CIFAR: every batch file is read, through the restricted unpickler, once
    per process), or can be fetched (data.download=true); synthetic data is written when first used."""
    from .data import LAYOUT, load_cifar

    name = Dataset(cfg.data.name)
    if name is Dataset.synthetic:
        return
    root = data_root(cfg)
    if name is Dataset.imagenet:
        if not (root / "imagenet" / "train").is_dir():
            raise ValueError(f"ImageNet not found: expected {root}/imagenet/train/<class>/* (set data.root=DIR)")
        return
    folder, _, test_file, _ = LAYOUT[name]
    if (root / folder / test_file).exists():
        key = str([cfg.data, root])
        if key not in _TRAINING_IMAGES:
            _TRAINING_IMAGES[key] = len(load_cifar(cfg)[0][1])
        images = _TRAINING_IMAGES[key]
        if images < cfg.train.batch_size:
            raise ValueError(f"train.batch_size={cfg.train.batch_size} exceeds the {images} training images")
    elif not cfg.data.download:
        raise ValueError(
            f"{name.value} not found at {root / folder} and data.download=false; "
            f"point data.root (or RESNET_ABLATE_DATA) at the folder that holds '{folder}'"
        )


def check_architecture(cfg: DictConfig) -> None:
    """Build the network on the meta device (no memory, no time)."""
    from .models import build_model

    with torch.device("meta"):
        build_model(cfg)


def check_cells(cfgs, data: bool = True) -> None:
    """Every check, for each config (each distinct architecture built once); the data's only when ``data``."""
    built = set()
    for cfg in cfgs:
        check_values(cfg)
        check_installed(cfg)
        check_device(cfg)
        if data:
            check_data(cfg)
        check_shortcut(cfg.shortcut)
        arch = architecture(cfg)
        if arch not in built:
            built.add(arch)
            check_architecture(cfg)
