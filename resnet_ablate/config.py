"""Hydra's side of the config: the schema (``schema.py``) registered behind the YAML of conf/, composition, and
the fields that key a run in the store."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .axes import AXES, UNKEYED, lookup
from .models.units import zeroes_a_norm
from .schema import Config, DataConfig, ModelConfig, ShortcutConfig, TrainConfig, UnitConfig

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


def _register_plugins() -> None:
    """Our Hydra plugins (the grid sweeper, the local launcher), registered by hand as well: Hydra finds plugins by
    walking the ``hydra_plugins`` namespace package, which a strict editable install (``pip install -e .``) hides
    from it; an import by name finds them in every install mode."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.resnet_ablate_launcher.grid_sweeper import GridSweeper
    from hydra_plugins.resnet_ablate_launcher.local_launcher import LocalLauncher

    for plugin in (GridSweeper, LocalLauncher):
        Plugins.instance().register(plugin)


_register_plugins()


def conf_dir() -> Path:
    """conf/ beside the package in a checkout, or inside it in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise FileNotFoundError(f"cannot find resnet-ablate's conf/ near {here}")


_initialised = None  # the Hydra instance this module initialised (composition reuses it and its caches)


def compose(overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose the config as Hydra would for a run with these overrides; one that removes a setting of the schema
    is a ValueError."""
    global _initialised
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized() or hydra.hydra is not _initialised:
        hydra.clear()
        initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3")
        _initialised = hydra.hydra
    overrides = home_expanded(overrides)
    try:
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)
    except Exception as e:
        hint = did_you_mean(overrides)
        if hint:
            raise ValueError(hint) from None
        raise e
    removed = [p for p in [*(a.path for a in AXES), *UNKEYED] if OmegaConf.select(cfg, p, default=KeyError) is KeyError]
    if removed:  # a deletion override (``~store``): every later reader would fail on it
        raise ValueError(f"the overrides remove {removed[0]}, a setting every run needs; set a value instead")
    return cfg


PATHS = ("store.root", "data.root")  # the settings that name a folder


def home_expanded(overrides) -> list[str]:
    """The overrides with ``~`` meaning home in a folder setting, as a shell would expand it (``store.root=~/x``,
    quoted or not: Hydra's grammar reads an unquoted ``~`` as an error)."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        quote = value[:1] if value[:1] in ("'", '"') and value[-1:] == value[:1] else ""
        path = value[len(quote) : len(value) - len(quote)]
        if sep and key in PATHS and path.startswith("~"):
            o = f"{key}={quote}{os.path.expanduser(path)}{quote}"
        out.append(o)
    return out


def did_you_mean(overrides) -> str | None:
    """For the first override whose key the schema does not have (``modle=resnet20``, ``model.dpeth=20``): one line
    naming it, the closest valid key, and the valid keys at that level."""
    import dataclasses
    import difflib
    import typing

    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides([str(x) for x in overrides]):
        node, done = Config, []
        key = o.key_or_group.lstrip("+~")
        groups = sorted(p.name for p in conf_dir().iterdir() if p.is_dir())  # budget=, sweep=: choices of conf/
        for part in [] if key.split(".")[0] == "hydra" or key in groups else key.split("."):
            if not dataclasses.is_dataclass(node):
                break
            valid = [f.name for f in dataclasses.fields(node)] + (
                [g for g in groups if g != "sweep"] if not done else []
            )
            valid = list(dict.fromkeys(valid))
            if part not in valid:
                close = difflib.get_close_matches(part, valid, n=1)
                guess = f"; did you mean {'.'.join([*done, close[0]])}?" if close else ""
                where = ".".join(done) or "the top level"
                return f"unknown setting {o.key_or_group!r}{guess} (valid at {where}: {', '.join(valid)})"
            node = typing.get_type_hints(node)[part]
            done.append(part)
    return None


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    """A copy of ``cfg`` for another seed."""
    other = copy.deepcopy(cfg)
    other.seed = seed
    return other


def key_fields(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that decides a run's result, as plain data: what keys a run in the store (every axis
    of ``axes.AXES``; the settings of ``axes.UNKEYED`` are left out, and so is an axis added later that is at its
    default)."""
    d = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True, enum_to_str=True
    )
    # an axis added later, at the value runs had before it, or one this config does not read: older keys stand
    omitted = [a.path for a in AXES if a.added and (lookup(d, a.path) == a.default or not a.applies(d))]
    if d.get("init") == "zero_last" and zeroes_a_norm(d["unit"]["branch"], d.get("norm", "batch")):
        d["init"] = "zero_last_bn"  # the net the old name built: its runs keep their keys (axes.RENAMED)
    for key in [*UNKEYED, *omitted]:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return d
