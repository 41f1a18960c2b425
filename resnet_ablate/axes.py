"""The axes of a cell, declared once. Every setting of the schema (``schema.py``, where ``axis(...)`` says what
is special about a field) becomes an ``Axis``: its config path, type, record column, whether it keys a run,
whether it is part of the paper's recipe and, for a shortcut parameter, the kinds that read it (the registry of
``models/shortcuts.py``). The run key, record columns, filters, status columns and tracker hyper-parameters all
derive from ``AXES``: a new axis is its schema field and its model code (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

from . import schema
from .models.shortcuts import PARAMETERS


@dataclass(frozen=True)
class Axis:
    path: str  # where a config holds it: "model.depth"
    column: str  # its record column and filter name: "depth"
    type: Any  # the schema's annotation
    recipe: bool = True  # part of what makes a run the paper's (the seed, the precision … are not)
    shown: bool = False  # a column of `resnet-ablate status`
    kinds: tuple[str, ...] | None = None  # a shortcut parameter: the kinds that read it
    added: bool = False  # added after stores existed: at its default, out of the run key (``schema.axis``)
    default: Any = None  # what a record without it holds (``was=``, else the schema's default), as plain data
    when: tuple[str, str] | None = None  # (path, value): read only where that setting has that value
    initial: Any = None  # the schema's default, as plain data

    def applies(self, config: dict) -> bool:
        """Whether a run's plain config reads this axis (a shortcut parameter of its kind; a ``when`` that holds)."""
        if self.kinds is not None and lookup(config, "shortcut.kind") not in self.kinds:
            return False
        return self.when is None or lookup(config, self.when[0]) == self.when[1]

    def fits(self, value: Any) -> bool:
        """Whether ``value`` (from a record's JSON) is of this axis's type: finite, the right kind of number."""
        return _fits(self.type, value)

    def value(self, config: dict) -> Any:
        """This axis's value in a run's plain config (lists as tuples); None for a shortcut parameter that the
        run's kind does not read."""
        if not self.applies(config):
            return None
        v = renamed(self.path, lookup(config, self.path))
        if v is None and self.added:  # a record from before the axis, or keyed at its default: the default
            v = self.default
        return tuple(v) if isinstance(v, list) else v


def _fits(tp: Any, value: Any) -> bool:
    return _checker(tp)(value)


@functools.cache
def _checker(tp: Any) -> typing.Callable[[Any], bool]:
    """Whether a value is of type ``tp``, as a function built once per type (a store of 5,000 records checks
    every axis of each)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        options = [_checker(t) for t in typing.get_args(tp)]
        return lambda v: any(ok(v) for ok in options)
    if tp is type(None):
        return lambda v: v is None
    if origin is list:
        item = _checker(typing.get_args(tp)[0])
        return lambda v: isinstance(v, list) and all(map(item, v))
    if isinstance(tp, type) and issubclass(tp, Enum):
        values = frozenset(e.value for e in tp)
        return lambda v: isinstance(v, str) and v in values
    if tp is bool:
        return lambda v: isinstance(v, bool)
    if tp is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return lambda v: isinstance(v, tp)


def lookup(config: dict, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"`` in a plain config; None where it has no such key."""
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def _walk(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, Any, dict, Any]]:
    """(path, type, what ``schema.axis`` says, default) of each setting under ``cls``; a section that is not keyed
    is one entry."""
    hints = typing.get_type_hints(cls, vars(schema))
    for f in dataclasses.fields(cls):
        about, tp = f.metadata.get("axis", {}), hints[f.name]
        if dataclasses.is_dataclass(tp) and about.get("keyed", True):
            yield from _walk(tp, f"{prefix}{f.name}.")
        else:
            default = f.default.value if isinstance(f.default, Enum) else f.default
            yield f"{prefix}{f.name}", tp, about, default


def _axes() -> tuple[tuple[Axis, ...], tuple[str, ...]]:
    axes, unkeyed = [], []
    for path, tp, about, default in _walk(schema.Config):
        if not about.get("keyed", True):
            unkeyed.append(path)
            continue
        leaf = path.rsplit(".", 1)[-1]
        kinds = None
        if path.startswith("shortcut.") and leaf != "kind":
            kinds = tuple(k for k, params in PARAMETERS.items() if leaf in params)
        column, recipe, shown = about.get("column", leaf), about.get("recipe", True), about.get("shown", False)
        added = about.get("added", False)
        was = about.get("was", default) if added else None
        axes.append(Axis(path, column, tp, recipe, shown, kinds, added, was, about.get("when"), default))
    columns = [a.column for a in axes]
    clash = {c for c in columns if columns.count(c) > 1}
    if clash:
        raise TypeError(f"schema fields share the record columns {sorted(clash)}: give one a column=… in axis()")
    return tuple(axes), tuple(unkeyed)


# Values renamed after stores existed: a record's old spelling, read as the new one (``config.key_fields`` keys a
# net the old value built alike under the old spelling; ``record.read`` refuses one it built otherwise).
RENAMED = {"init": {"zero_last_bn": "zero_last"}}


def renamed(path: str, value: Any) -> Any:
    """``value`` of the setting at ``path`` under its current name (``RENAMED``)."""
    return RENAMED[path].get(value, value) if path in RENAMED else value


AXES, UNKEYED = _axes()  # the settings that key a run; those that do not (paths, devices, trackers)
BY_COLUMN = {a.column: a for a in AXES}


def find(name: str) -> Axis | None:
    """The axis a user names: by its column (``depth``, ``model``), its config path (``model.depth``) or the config
    group whose choice it is (``model=resnet110`` sets ``model.name``)."""
    return BY_COLUMN.get(name) or next((a for a in AXES if a.path in (name, f"{name}.name")), None)


def columns(config: dict) -> dict[str, Any]:
    """A run's plain config as its record columns, one per axis."""
    return {a.column: a.value(config) for a in AXES}


def problems(config: Any) -> list[str]:
    """What makes ``config`` not a keyed config of this schema: each axis whose value is missing or mistyped."""
    if not isinstance(config, dict):
        return [f"config is a {type(config).__name__}, not a mapping"]
    out = []
    for a in AXES:
        v = renamed(a.path, lookup(config, a.path))
        if (v is None and a.added) or (a.when is not None and not a.applies(config)):
            continue  # keyed at its default, recorded before the axis existed, or not read by this config
        if not a.fits(v):
            out.append(f"{a.path} is {v!r:.40}, not {_name(a.type)}")
    return out


def _name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " | ".join(e.value for e in tp)
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
