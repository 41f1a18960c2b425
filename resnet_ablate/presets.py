"""The presets of ``conf/sweep/``: a grid of cells and, for the paper's tables and figures, what the report shows.

A preset's ``hydra.sweeper`` holds ``params`` (common to every cell) and any of: ``grid`` (lines in Hydra's
override grammar; the grid is the union of their Cartesian products), ``table`` (columns and rows, each with the
overrides that make it; a row carries the paper's number for each column) and ``figure`` (panels, each a list of
cells). The sweep runs the union of all three; the report reads the table's cells and the figure's panels back.
A new table or figure is one YAML file (docs/architecture.md).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from .config import conf_dir
from .record import column


@dataclass(frozen=True)
class Column:
    label: str
    overrides: str
    metric: str = "error"  # the record column it reports: error (top-1) or error_top5


@dataclass(frozen=True)
class Row:
    label: str
    overrides: str
    paper: tuple  # the paper's number (%) for each column, or "fail"


@dataclass
class Preset:
    name: str
    params: dict[str, str]
    grid: list[str] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    panels: list[list[str]] = field(default_factory=list)
    verdicts: str | None = None  # what the report tests against the first: "rows" (per column) or "columns" (per row)

    @classmethod
    def from_sweeper(cls, name: str, sweeper) -> Preset:
        """From a preset's ``hydra.sweeper`` node (as YAML or as Hydra composed it)."""
        node = OmegaConf.to_container(sweeper) if OmegaConf.is_config(sweeper) else dict(sweeper)
        table = node.get("table") or {}
        return cls(
            name,
            {k: str(v) for k, v in (node.get("params") or {}).items()},
            list(node.get("grid") or []),
            [Column(*c) for c in table.get("columns", [])],
            [Row(r[0], r[1], tuple(r[2:])) for r in table.get("rows", [])],
            [list(p) for p in node.get("figure") or []],
            table.get("verdicts"),
        )

    def lines(self) -> list[str]:
        """The grid lines of every cell: the explicit grid, each table cell (row and column), each figure cell."""
        cells = [f"{r.overrides} {c.overrides}".strip() for r in self.rows for c in self.columns]
        return [*self.grid, *cells, *(cell for panel in self.panels for cell in panel)]

    def label(self, cell: dict[str, str], with_column: bool) -> str | None:
        """The table's name for a cell (its overrides as {key: value}): the row whose overrides the cell holds and
        that changes most of ``params`` (after2016's Fixup row, not its original row), and its column's."""

        def held(overrides: str) -> bool:
            return all(cell.get(k) == v for k, _, v in (o.partition("=") for o in shlex.split(overrides)))

        def changes(r: Row) -> int:
            return sum(self.params.get(o.partition("=")[0]) != o.partition("=")[2] for o in shlex.split(r.overrides))

        rows = sorted((r for r in self.rows if held(r.overrides)), key=changes, reverse=True)
        columns = [c for c in self.columns if held(c.overrides)]
        if not rows:
            return None
        return f"{rows[0].label}, {columns[0].label}" if with_column and columns else rows[0].label

    def overrides(self, seed: bool = True) -> list[str]:
        """``params`` as overrides (``key=value``); without ``seed=`` when ``seed`` is false."""
        return [f"{k}={v}" for k, v in self.params.items() if seed or k != "seed"]

    def base(self) -> dict[str, Any]:
        """The record filter common to every cell: ``params`` less the seeds."""
        return record_filter(" ".join(self.overrides(seed=False)))


def names(kind: str | None = None) -> list[str]:
    """Every preset, or those with a ``table`` or a ``figure``: the paper's (``tableN``, ``figureN``) first."""
    stems = (p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))
    found = sorted(stems, key=lambda n: (not n.startswith(("table", "figure")), n))
    return found if kind is None else [n for n in found if kind in OmegaConf.load(_path(n)).hydra.sweeper]


def load(name: str) -> Preset:
    if name not in names():
        raise ValueError(f"unknown sweep preset {name!r}; valid: {', '.join(names())}")
    return Preset.from_sweeper(name, OmegaConf.load(_path(name)).hydra.sweeper)


def _path(name: str):
    return conf_dir() / "sweep" / f"{name}.yaml"


def record_filter(overrides: str) -> dict[str, Any]:
    """Overrides (``model=resnet110 shortcut.gate_bias=-6``) as a record filter (``{"model": "resnet110",
    "gate_bias": -6}``): each key named by its record column (``record.column``)."""
    out = {}
    for override in shlex.split(overrides):
        key, _, value = override.partition("=")
        out[column(key)] = typed_value(value)
    return out


def typed_value(value: str):
    """A command-line value as the number it spells, else as text."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
