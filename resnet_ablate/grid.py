"""A preset's grid: the union of its lines' Cartesian products, the cells composed, and seeds sent to workers.

A preset (conf/sweep/*.yaml) holds ``hydra.sweeper.params`` (common to every cell) and ``hydra.sweeper.grid``,
a list of lines in Hydra's override grammar; the grid is the union of each line's Cartesian product.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from . import presets, store
from .config import compose, key_fields, with_seed
from .record import key_of
from .status import Status


def expand_grid(lines: list[str], params: list[str], arguments: list[str]) -> list[list[str]]:
    """Cells (lists of overrides) of the union of ``lines``. An argument whose value a line holds selects: the
    cells whose value of that key (their line's, else the params') is one it names, and no others
    (``shortcut=identity`` narrows Table 1 to its identity row, ``shortcut=layerscale`` after2016 to its LayerScale
    row); where no line holds its value, or on other keys, it replaces the value (``model.depth=20``)."""
    parser = OverridesParser.create()
    given = parser.parse_overrides(arguments)
    parsed = [parser.parse_overrides(shlex.split(line)) for line in lines or [""]]
    choices = [{o.get_key_element(): set(_choices(o)) for o in line} for line in parsed]
    wanted = {a.get_key_element(): set(_choices(a)) for a in given}
    selecting = {k: v for k, v in wanted.items() if any(v & line.get(k, set()) for line in choices)}
    cells = _cells(parser.parse_overrides(params), parsed, given, selecting)
    if not cells:
        chosen = " ".join(a.input_line for a in given if a.get_key_element() in selecting)
        raise ValueError(f"no cell of the grid holds {chosen} (each picks the rows that hold it); drop one")
    return cells


MAX_CELLS = 20_000  # a grid larger is refused at once (a 100,000-cell dry run composed silently for 10 minutes)


def _cells(params: list[Override], lines: list[list[Override]], given: list[Override], selecting: dict) -> list:
    """The union of each line's Cartesian product: params, then the line, then the arguments that do not select;
    a cell is kept when it holds a selected value of each selecting key."""
    cells: list[list[str]] = []
    held: set[tuple[str, ...]] = set()
    for line in lines:
        merged: dict[str, Override] = {}
        for override in [*params, *line, *(a for a in given if a.get_key_element() not in selecting)]:
            merged.pop(override.get_key_element(), None)
            merged[override.get_key_element()] = override
        for cell in itertools.product(*(_choices(o) for o in merged.values())):
            kept = all(not wanted.isdisjoint(cell) for wanted in selecting.values())
            if kept and cell not in held:
                held.add(cell)
                cells.append(list(cell))
            if len(cells) > MAX_CELLS:
                raise ValueError(
                    f"the grid has more than {MAX_CELLS:,} cells; split it into sweeps of fewer "
                    "(e.g. seed=range(0,5000), then seed=range(5000,10000))"
                )
    return cells


def quote(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar: any path survives (commas, parentheses, ``=``,
    quotes, non-ASCII), where an unquoted one would re-parse as a sweep or not at all."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def _choices(override: Override) -> list[str]:
    """``key=value`` for each value an override sweeps over (one when it does not sweep)."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if not override.is_discrete_sweep():
        raise ValueError(f"{key}: a grid takes lists, ranges and choices, not intervals")
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def preset_grid(preset: str, arguments: list[str]) -> list[list[str]]:
    spec = presets.load(preset)
    return expand_grid(spec.lines(), spec.overrides(), arguments)


def varying(cells: list[list[str]]) -> tuple[list[dict[str, str]], list[str]]:
    """Each cell's overrides as {key: value} (store/launcher keys left out), and the keys whose values vary."""
    values = [dict(o.split("=", 1) for o in c if not o.startswith(("store.", "launcher."))) for c in cells]
    keys = list(dict.fromkeys(k for v in values for k in v))
    return values, [k for k in keys if len({v.get(k) for v in values}) > 1]


@dataclass
class Cell:
    overrides: list[str]
    cfg: DictConfig
    directory: Path

    @property
    def status(self) -> Status:
        return store.cell_status(self.directory)


def plan(preset: str, arguments: list[str]) -> list[Cell]:
    """The cells of a preset's grid, composed: once per cell less its seed (seeds are copies, ``with_seed``); a
    cell whose run another cell of the grid already is (``seed=0,0``; a value its kind does not read) is listed once."""
    cells, composed, seen = [], {}, set()
    for overrides in preset_grid(preset, arguments):
        rest = tuple(o for o in overrides if not o.startswith("seed="))
        if rest not in composed:
            composed[rest] = (compose(list(rest)), key_fields(compose(list(rest))))
        seeds = [o.split("=", 1)[1] for o in overrides if o.startswith("seed=")]
        if seeds and seeds[0].isdigit():  # a seed's copy, keyed by its cell's fields with its seed (cheap at 1,000s)
            cfg = with_seed(composed[rest][0], int(seeds[0]))
            directory = Path(cfg.store.root) / "runs" / key_of({**composed[rest][1], "seed": cfg.seed})
        else:
            cfg = compose(overrides)
            directory = store.run_dir(cfg)
        if directory not in seen:
            seen.add(directory)
            cells.append(Cell(overrides, cfg, directory))
    return cells


def stack_seeds(cells: list[list[str]], k: int) -> list[list[str]]:
    """Workers for ``cells`` (override lists): cells that differ only in ``seed=`` go k at a time to one worker
    (``launcher.seeds=[…]``), the others alone."""
    if k <= 1:
        return cells
    seeds: dict[tuple[str, ...], list[str]] = {}
    for cell in cells:
        rest = tuple(o for o in cell if not o.startswith("seed="))
        seeds.setdefault(rest, []).extend(o.split("=", 1)[1] for o in cell if o.startswith("seed="))
    jobs = []
    for rest, values in seeds.items():
        if not values:  # a cell without a seed override
            jobs.append(list(rest))
        for i in range(0, len(values), k):
            chunk = values[i : i + k]
            jobs.append(
                [*rest, f"seed={chunk[0]}", *([f"launcher.seeds=[{','.join(chunk)}]"] if len(chunk) > 1 else [])]
            )
    return jobs
