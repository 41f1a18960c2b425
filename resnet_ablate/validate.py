"""Everything a cell's config must satisfy before the store is touched: value ranges the schema cannot express,
each shortcut kind's own parameters, the device, the data, and an architecture that builds. Each failure is a
``ValueError`` whose message is one line naming the setting and what is valid."""

from __future__ import annotations

import math
import re
import typing
from dataclasses import fields, is_dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from . import schema
from .axes import AXES, lookup
from .data import data_root
from .models import architecture
from .models.liveness import refusal
from .schema import Config, Dataset, ShortcutConfig
from .trackers import check_installed

NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")  # names shown in tables, plots and file names: no markup, no math


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _bounds(cls: type = Config, prefix: str = ""):
    """(path, type, what ``schema.axis`` says) of every setting of the schema, sections included."""
    hints = typing.get_type_hints(cls, vars(schema))
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            yield from _bounds(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, f.metadata.get("axis", {})


RANGE = ("low", "high", "above", "below")
BOUNDS = [(path, tp, about) for path, tp, about in _bounds() if tp in (int, float) or set(about) & set(RANGE)]


def _range(about: dict) -> str:
    """``>= 1``, ``> 0`` or ``in [0, 1)``: what a field's declared bounds allow."""
    low = ("[", about["low"]) if "low" in about else ("(", about["above"]) if "above" in about else None
    high = (about["high"], "]") if "high" in about else (about["below"], ")") if "below" in about else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"{'<=' if high[1] == ']' else '<'} {high[0]}"


FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: the parameters and buffers a float setting becomes


def check_values(cfg: DictConfig) -> None:
    """Every setting within the bounds its schema field declares; every float finite in float32 (a value that is
    not would train to nothing, overflow a tensor, or make a record no reader accepts)."""
    for path, _, about in BOUNDS:
        values = OmegaConf.select(cfg, path)
        many = OmegaConf.is_list(values)  # a list (model.widths): each element within the bounds
        for value in values if many else [] if values is None else [values]:
            shown = f"{path}={list(values)}" if many else f"{path}={value}"
            if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise ValueError(f"{shown} is not a finite float32 (a tensor holds it): |value| ≤ {FLOAT32_MAX:.3g}")
            inside = about.get("low", value) <= value <= about.get("high", value)
            inside &= "above" not in about or value > about["above"]
            inside &= "below" not in about or value < about["below"]
            if not inside:
                raise ValueError(f"{shown} is out of range; {'each ' if many else 'it '}must be {_range(about)}")
    for key in ("model.name", "unit.name"):
        if not NAME.fullmatch(str(_get(cfg, key))):
            raise ValueError(f"{key}={_get(cfg, key)!r} is not a name: use letters, digits and _ . + - (at most 64)")
    milestones = list(cfg.train.milestones)
    if milestones != sorted(milestones) or any(m < 0 for m in milestones):
        raise ValueError(f"train.milestones={milestones} must be non-negative iterations in increasing order")
    check_schedule(cfg.train)
    if Dataset(cfg.data.name) is Dataset.synthetic and cfg.data.synthetic_train < cfg.train.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} exceeds the {cfg.data.synthetic_train} training images "
            "(data.synthetic_train)"
        )
    seed = next(about for path, _, about in BOUNDS if path == "seed")
    for s in cfg.launcher.seeds or []:
        if not seed["low"] <= s < seed["below"]:
            raise ValueError(f"launcher.seeds holds {s}; seeds must be {_range(seed)}")
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for a in AXES:
        if a.when is not None and not a.applies(plain) and lookup(plain, a.path) != a.initial:
            raise ValueError(f"{a.path} applies only with {a.when[0]}={a.when[1]}; leave it at {a.initial}")


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


def check_plugins(cfg: DictConfig) -> None:
    """Each plug-in setting names an entry of its registry (``shortcut.kind``, ``norm``, ``act``); a shortcut kind
    reads only its own parameters: another one set away from its default would split one network over two run
    keys, so it is refused."""
    from .models.shortcuts import PARAMETERS, SHORTCUTS
    from .models.units import ACTS, NORMS

    for registry, name in ((SHORTCUTS, cfg.shortcut.kind), (NORMS, cfg.norm), (ACTS, cfg.act)):
        registry.get_valid(str(name))
    shortcut, kind = cfg.shortcut, str(cfg.shortcut.kind)
    own = PARAMETERS[kind]
    defaults = ShortcutConfig()
    for name in (f.name for f in fields(ShortcutConfig) if f.name != "kind"):
        if name not in own and shortcut[name] != getattr(defaults, name):
            mine = ", ".join(f"shortcut.{p}" for p in own) or "none"
            raise ValueError(f"shortcut.{name} does not apply to shortcut={kind} (its parameters: {mine})")


def check_device(cfg: DictConfig) -> None:
    from .distributed import resolve_device

    resolve_device(cfg.train.device)


_TRAINING_IMAGES: dict[str, int] = {}  # per dataset checked in this process (``train`` checks, then its run does)


def check_data(cfg: DictConfig) -> None:
    """The dataset is on disk and readable (CIFAR: every batch file is read, through the restricted unpickler, once
    per process), or can be fetched (data.download=true); synthetic data is written when first used."""
    from .data import LAYOUT, load_cifar

    name, root = Dataset(cfg.data.name), data_root(cfg)
    if root.exists() and not root.is_dir():
        raise ValueError(f"data.root {root} is not a folder; point it at the folder that holds the datasets")
    if name is Dataset.synthetic:
        return
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


_IDENTITY: dict[str, dict] = {}  # the fingerprints of the images a data setting reads now, per process


def check_record_data(cfg: DictConfig) -> None:
    """A cell that has ended, and that this run would skip, ended on the images its data settings read now: a
    record made on other images (``data.root`` pointed elsewhere, the files replaced) is refused, never passed off
    as this data's result."""
    from . import store
    from .data import LAYOUT, data_identity, load_cifar
    from .record import read_result

    if store.needs_run(cfg):
        return  # nothing ended, or it trains again
    result = read_result(store.run_dir(cfg))
    if Dataset(cfg.data.name) not in (*LAYOUT, Dataset.synthetic) or not isinstance(result.get("data"), dict):
        return
    key = str([cfg.data, data_root(cfg)])
    if key not in _IDENTITY:
        arrays, folder = load_cifar(cfg)
        _IDENTITY[key] = data_identity(cfg, arrays, folder)
    now, then = _IDENTITY[key], result["data"]
    changed = [s for s in ("train", "test") if then.get(s) != now[s]]
    if changed:
        was = ", ".join(f"{s} {then.get(s)} now {now[s]}" for s in changed)
        raise ValueError(
            f"{store.run_dir(cfg)} ended on other images than data.root holds now ({was}); a finished cell is "
            "skipped only on its own images: retrain it (--force, store.rerun=all) or use another store.root"
        )


def check_architecture(cfg: DictConfig) -> None:
    """Build the network on the meta device (no memory, no time), then its smallest version on the CPU for a few
    SGD steps: a composition that cannot learn is refused (``models/liveness.py``)."""
    from .models import build_model

    with torch.device("meta"):
        build_model(cfg)
    why = refusal(cfg)
    if why:
        raise ValueError(why)


def check_cells(cfgs, data: bool = True) -> None:
    """Every check, for each config (each distinct architecture built once); the data's only when ``data``."""
    built = set()
    for cfg in cfgs:
        check_plugins(cfg)  # first: a parameter its kind does not read is that, whatever its value
        check_values(cfg)
        check_installed(cfg)
        check_device(cfg)
        if data:
            check_data(cfg)
            check_record_data(cfg)
        arch = architecture(cfg)
        if arch not in built:
            built.add(arch)
            check_architecture(cfg)
