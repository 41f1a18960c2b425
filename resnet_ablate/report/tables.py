"""The paper's Tables 1–5 from our runs: tidy per-run records, aggregated over seeds, beside the paper's numbers
(each table's cells and numbers are its preset's, ``conf/sweep/tableN.yaml``).

``records(root)`` gives one row per ended run; ``build(name, records, filters)`` gives one row per table cell
(ours: median, mean, std, n; the paper's number; Δ); ``render.layout`` pivots that into the paper's shape.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from .. import axes, presets
from ..config import compose, key_fields
from ..record import ROW_COLUMNS, column, scan
from ..status import Status, counted_error, is_fail

# The follow-up axes (ReZero's ``init``, GroupNorm's ``norm`` …): a paper table's cells hold them at their defaults
# unless its preset or a filter says otherwise, so that a follow-up's runs never join (or block) a table of the paper's
FOLLOW_UPS = {a.column: a.initial for a in axes.AXES if a.added and a.kinds is None and a.when is None}

# What keys a run, less its seed: runs of one table cell or one compare group agree in all of it (and in the
# images they trained and tested on), else they are not pooled.
MUST_AGREE = tuple(c for c in axes.BY_COLUMN if c != "seed") + ("images",)


def records(root: str | Path) -> pd.DataFrame:
    """One row per ended run (``Record.row``: key, status, one column per axis, the budget its schedule matches,
    its data's fingerprint and whether it is the official data, errors in %). What the store holds that is not a
    run of ours is left out, and said in ``df.attrs["skipped"]`` (reason: entries)."""
    return frame(*scan(root))


def frame(found: list, skipped: dict[str, list[str]]) -> pd.DataFrame:
    """``records`` from a scan already made (``record.scan``'s runs and skipped entries)."""
    df = pd.DataFrame([r.row() for r in found], columns=list(ROW_COLUMNS))
    df.attrs["skipped"] = skipped
    return df


@dataclass
class TableCell:
    row: str
    column: str
    match: dict[str, Any]
    paper: float | str | None
    metric: str = "error"
    overrides: str = ""  # the overrides that make the paper's cell (its row's and its column's)


def cells(name: str) -> tuple[list[TableCell], dict[str, Any]]:
    """The cells of a paper table (its preset's rows × columns) and the filter common to them (which the user may
    override). A cell holds its preset's value of each key the table lays out and its own overrides do not set
    (after2016's original row is ``init=he``, though only its Fixup row says ``init``)."""
    if name not in presets.names("table"):
        raise ValueError(f"unknown table {name!r}; valid: {', '.join(presets.names('table'))}")
    spec = presets.load(name)
    base = spec.base()
    pairs = [(r, c, value) for r in spec.rows for c, value in zip(spec.columns, r.paper)]
    matches = [{**presets.record_filter(r.overrides), **presets.record_filter(c.overrides)} for r, c, _ in pairs]
    defaults = {k: v for k, v in base.items() if any(k in m for m in matches)}
    return [
        TableCell(r.label, c.label, {**defaults, **m}, value, c.metric, f"{r.overrides} {c.overrides}".strip())
        for (r, c, value), m in zip(pairs, matches)
    ], base


def named(df: pd.DataFrame, key: str) -> str:
    """The column of ``df`` a filter names: as it is, or an axis by config path or group (``model.depth``)."""
    return key if key in df.columns else column(key)


def select(df: pd.DataFrame, match: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``df`` whose columns hold the given values (a list: any of them)."""
    for key, value in match.items():
        column_, values = df[named(df, key)], _as_list(value)
        df = df[column_.astype(str).isin([str(v) for v in values]) | column_.isin(values)]
    return df


def show(value: Any) -> str:
    """An axis value as text; a parameter its run's kind does not read (None, NaN in a numeric column) is "None"."""
    if isinstance(value, float) and value != value:
        return "None"
    if isinstance(value, (tuple, list)):
        return f"[{', '.join(map(show, value))}]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def differing(runs: pd.DataFrame, columns) -> dict[str, list[str]]:
    """The columns (of those ``runs`` has) in which ``runs`` do not all agree, with their values."""
    out = {}
    for c in (c for c in columns if c in runs.columns):
        values = sorted({show(v) for v in runs[c]})
        if len(values) > 1:
            out[c] = values
    return out


def spread_in_words(spread: dict[str, list[str]]) -> str:
    """Differing values in words, and the filter that picks one: "iterations (24, 32); pick one, e.g.
    iterations=32"."""
    text = "; ".join(f"{c} ({', '.join(v)})" for c, v in spread.items())
    c, values = next(iter(spread.items()))
    return f"{text}; they are not pooled: pick one with a filter, e.g. {c}={values[-1]}"


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def pick_cells(specs: list[TableCell], filters: dict[str, Any]) -> list[TableCell]:
    """The cells that the filters keep. A filter on a key the cells are laid out by (``model=resnet20`` in Table 2)
    picks those cells; a value the paper's table does not have gets cells of its own, copied from the first value's,
    their paper numbers kept for reference (``not_the_paper`` says how the runs differ from the paper's cell)."""
    for key in {k for c in specs for k in c.match} & filters.keys():
        wanted = [str(v) for v in _as_list(filters[key])]
        values = list(dict.fromkeys(str(c.match[key]) for c in specs if key in c.match))
        kept = [c for c in specs if str(c.match.get(key)) in wanted]
        for value in (v for v in wanted if v not in values):
            for c in (c for c in specs if str(c.match.get(key)) == values[0]):
                row, column = (label.replace(values[0], value) for label in (c.row, c.column))
                kept.append(TableCell(row, column, {**c.match, key: value}, c.paper, c.metric, c.overrides))
        specs = kept
    return specs


@cache
def paper_recipe(params: tuple[str, ...], overrides: str) -> dict[str, Any]:
    """The record columns of the paper's own run of a table cell: its preset's parameters and the cell's
    overrides, composed (the preset names the paper's budget, net, data)."""
    return axes.columns(key_fields(compose([*params, *shlex.split(overrides)])))


Difference = tuple[str, tuple[str, ...], str | None]  # (what: an axis or "images", ours, the paper's)


def not_the_paper(name: str, c: TableCell, runs: pd.DataFrame) -> list[Difference]:
    """How these runs differ from the paper's run of cell ``c`` (each recipe axis: net, depth, data, schedule; the
    official images); empty when the paper's number measures what they measure."""
    params = tuple(presets.load(name).overrides(seed=False))
    paper = paper_recipe(params, c.overrides)
    out: list[Difference] = []
    for a in (a for a in axes.AXES if a.recipe):
        ours = sorted({show(v) for v in runs[a.column]}) if a.column in runs.columns else ["unknown"]
        if ours != [show(paper[a.column])]:
            out.append((a.column, tuple(ours), show(paper[a.column])))
    if "official_data" not in runs.columns or set(runs["official_data"]) != {paper["data"]}:
        out.append(("images", (f"other than the official {paper['data']} ones (data fingerprints)",), None))
    return out


def in_words(differences: list[Difference]) -> list[str]:
    """Differences in words, one per kind (an axis; the images) with every value that differs, shortest first:
    "depth 20 (the paper's: 110, 164)"."""
    grouped: dict[str, tuple[dict, dict]] = {}
    for what, ours, paper in differences:
        values, papers = grouped.setdefault(what, ({}, {}))
        values.update(dict.fromkeys(ours))
        papers.update(dict.fromkeys([paper] if paper is not None else []))
    texts = [
        f"{what} {', '.join(values)}" + (f" (the paper's: {', '.join(papers)})" if papers else "")
        for what, (values, papers) in grouped.items()
    ]
    return sorted(texts, key=len)


def table_runs(name: str, df: pd.DataFrame, filters: dict[str, Any]) -> tuple[list[TableCell], pd.DataFrame]:
    """The cells of table ``name`` that ``filters`` keep, and the runs that may fill them: those holding the table's
    settings (its preset's, the filters', the follow-up axes at their defaults) but for what its cells lay out."""
    specs, base = cells(name)
    filters = {named(df, k): v for k, v in filters.items()}
    specs = pick_cells(specs, filters)
    laid_out = {k for c in specs for k in c.match}
    return specs, select(df, {k: v for k, v in {**FOLLOW_UPS, **base, **filters}.items() if k not in laid_out})


def build(name: str, df: pd.DataFrame, filters: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per table cell: ours (median, mean, std, n, seeds), the paper's number, and Δ where our runs are the
    paper's net and recipe on the official data (else ``why`` says how they differ); plus the table's header. Runs
    of one cell that differ in anything but the seed are refused, never pooled."""
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    filters = {named(df, k): v for k, v in (filters or {}).items()}
    base = cells(name)[1]
    df_all, (specs, df) = df, table_runs(name, df, filters)
    chosen, laid_out = {**base, **filters}, {k for c in specs for k in c.match}
    shown = pd.concat([select(df, c.match) for c in specs]).drop_duplicates("key")
    settings = [a.column for a in axes.AXES if a.path.startswith(("train.", "data.")) and a.column not in laid_out]
    spread = differing(shown, settings)
    if spread:
        raise LookupError(f"the runs of {name} differ in {spread_in_words(spread)}")
    at_depth = _at_depth(name, shown, chosen)
    result = pd.DataFrame(
        {
            "table": name,
            "row": c.row,
            "column": c.column,
            "shown_row": at_depth(c.row, c),  # the labels laid out: the paper's, naming a depth not the paper's
            "shown_column": at_depth(c.column, c),
            **_ours(name, c, select(df, c.match)),
        }
        for c in specs
    )
    if not result["n"].any():
        raise LookupError(
            f"no finished runs match {name} ({', '.join(f'{k}={v}' for k, v in chosen.items())}); "
            + (
                _filter_to_add(df_all, {**base, **_laid_out_values(specs)}, filters)
                or "see `resnet-ablate status` for what the store holds"
            )
        )
    header = {
        "table": name,
        **{
            k: at_depth(str(v), specs[0]) if k == "model" else v
            for k, v in chosen.items()
            if k in filters or k not in laid_out  # a preset's value that rows change is no setting of the table
        },
        "budget": chosen.get("budget", ",".join(sorted(set(shown["budget"])))),
        "complete": bool(result["n"].all()),
    }
    return result, header


def _at_depth(name: str, shown: pd.DataFrame, chosen: dict[str, Any]):
    """A labeller: a cell's label as the paper's, with "resnet110 at depth 20" where its net's runs are not at the
    depth of the paper's cell."""
    params = tuple(presets.load(name).overrides(seed=False))
    ran = {str(m): ",".join(map(str, sorted(set(g["depth"].dropna().astype(int))))) for m, g in shown.groupby("model")}

    def at_depth(label: str, c: TableCell) -> str:
        m = str(c.match.get("model", chosen.get("model")))
        if m not in ran or m not in label:  # no run of it: the paper's label (no config composed)
            return label
        return (
            label.replace(m, f"{m} at depth {ran[m]}")
            if ran[m] != str(paper_recipe(params, c.overrides)["depth"])
            else label
        )

    return at_depth


def _ours(name: str, c: TableCell, sel: pd.DataFrame) -> dict[str, Any]:
    """A cell's numbers from its runs ``sel``: median (a diverged run counted as it ended), mean and std where every
    run has a finite error, n, the paper's fail rule, the paper's number and Δ where the runs are its net and recipe
    (else ``why`` says how they differ), and the runs behind it. Runs that differ in more than the seed are refused."""
    spread = differing(sel, MUST_AGREE)
    if spread:
        raise LookupError(f"{name} cell {c.row!r} / {c.column!r} holds runs that differ in {spread_in_words(spread)}")
    counted = (counted_error({"status": s, "test_error": _fraction(e)}) for s, e in zip(sel["status"], sel[c.metric]))
    values = pd.Series([v for v in counted if v is not None], dtype=float)
    median = values.median() if len(values) else None
    finite = values[values < math.inf]
    paper_schedule = len(sel) > 0 and set(sel["budget"]) == {"paper"}  # "fail" is the paper's word for its recipe
    differences = not_the_paper(name, c, sel) if len(sel) else []
    return {
        "ours_median": None if median is None or median == math.inf else median,
        "ours_mean": finite.mean() if len(finite) == len(values) and len(values) else None,
        "ours_std": finite.std() if len(finite) == len(values) and len(values) > 1 else None,
        "n": len(values),
        "diverged": int((sel["status"] == Status.diverged.value).sum()),
        "fail": None if median is None else paper_schedule and is_fail(median),
        "paper": c.paper,
        # the paper's number stands beside ours (plain, with Δ) only where our runs are its net and recipe
        "comparable": len(sel) > 0 and not differences,
        "why": "; ".join(in_words(differences)) if len(sel) else "no finished run",
        "differences": differences,
        "delta": median - c.paper if median is not None and not differences and isinstance(c.paper, float) else None,
        "depth": ",".join(map(str, sorted(set(sel["depth"].dropna().astype(int))))),
        "seeds": ",".join(map(str, sorted(sel["seed"]))),
        "keys": ",".join(sel["key"]),
    }


def _laid_out_values(specs: list[TableCell]) -> dict[str, list]:
    """Each setting a table's cells lay out, with the values they hold (Table 3's rows: data=cifar10,cifar100)."""
    out: dict[str, list] = {}
    for c in specs:
        for k, v in c.match.items():
            out.setdefault(k, []).append(v)
    return out


def _filter_to_add(df: pd.DataFrame, settings: dict[str, Any], filters: dict[str, Any]) -> str | None:
    """When a table's own setting (``data=cifar10``; a row's) leaves out every run the store holds: the filter to
    add."""
    for k, v in settings.items():
        held = sorted({show(x) for x in df[k].dropna()}) if k in df.columns and k not in filters else []
        if held and not {show(x) for x in _as_list(v)} & set(held):
            return f"the store's runs have {k}={','.join(held)}: add {k}={held[0]}"
    return None


def _fraction(percent):
    return None if percent is None or pd.isna(percent) else percent / 100
