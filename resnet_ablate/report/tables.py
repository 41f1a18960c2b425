"""The paper's Tables 1–5 from our runs: tidy per-run records, aggregated over seeds, beside the paper's numbers
(each table's cells and numbers are its preset's, ``conf/sweep/tableN.yaml``).

``records(root)`` gives one row per ended run; ``build(name, records, filters)`` gives one row per table cell
(ours: median, mean, std, n; the paper's number; Δ); ``layout`` pivots that into the paper's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from .. import presets, store
from ..config import conf_dir
from ..presets import COLUMNS, lookup, match
from ..status import is_fail, outcome

PAPER_BUDGETS = ("paper", "imagenet")  # the paper's own lengths of training


def records(root: str | Path) -> pd.DataFrame:
    """One row per ended run: the axes of the paper's tables, status and errors (in %). What the store holds that
    is not a run of ours is left out and counted in ``df.attrs["skipped"]``."""
    found, skipped = store.scan(root)
    rows = []
    for r in found:
        c = r["config"]
        errors = {k: r.get(f"test_{k}") for k in ("error", "error_top5")}
        rows.append(
            {
                "key": r["key"],
                "status": r["status"],
                **{column: lookup(c, where) for column, where in COLUMNS.items()},
                **{k: 100 * v if isinstance(v, (int, float)) else None for k, v in errors.items()},
            }
        )
    df = pd.DataFrame(rows, columns=["key", "status", *COLUMNS, "error", "error_top5"])
    df.attrs["skipped"] = skipped
    return df


@dataclass
class TableCell:
    row: str
    column: str
    match: dict[str, Any]
    paper: float | str | None
    metric: str = "error"
    comparable: bool = True  # False for a net the paper's table does not hold (its number shown for reference)


def cells(name: str) -> tuple[list[TableCell], dict[str, Any]]:
    """The cells of a paper table (its preset's rows × columns) and the filter common to them (which the user may
    override)."""
    if name not in presets.names("table"):
        raise ValueError(f"unknown table {name!r}; valid: {', '.join(presets.names('table'))}")
    spec = presets.load(name)
    return [
        TableCell(r.label, c.label, {**match(r.overrides), **match(c.overrides)}, value, c.metric)
        for r in spec.rows
        for c, value in zip(spec.columns, r.paper)
    ], spec.base()


def select(df: pd.DataFrame, match: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``df`` whose columns hold the given values (a list: any of them)."""
    for key, value in match.items():
        if key not in df.columns:
            valid = ", ".join(c for c in df.columns if c not in ("key", "error", "error_top5"))
            raise ValueError(f"unknown filter {key!r}; valid: {valid}")
        column, values = df[key], value if isinstance(value, list) else [value]
        df = df[column.astype(str).isin([str(v) for v in values]) | column.isin(values)]
    return df


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def pick_cells(specs: list[TableCell], filters: dict[str, Any]) -> list[TableCell]:
    """The cells that the filters keep. A filter on a key the cells are laid out by (``model=resnet20`` in Table 2)
    picks those cells; a value the paper's table does not have gets cells of its own, copied from the first value's,
    their paper numbers kept for reference but not comparable."""
    for key in {k for c in specs for k in c.match} & filters.keys():
        wanted = [str(v) for v in _as_list(filters[key])]
        values = list(dict.fromkeys(str(c.match[key]) for c in specs if key in c.match))
        kept = [c for c in specs if str(c.match.get(key)) in wanted]
        for value in (v for v in wanted if v not in values):
            for c in (c for c in specs if str(c.match.get(key)) == values[0]):
                row, column = (label.replace(values[0], value) for label in (c.row, c.column))
                kept.append(TableCell(row, column, {**c.match, key: value}, c.paper, c.metric, comparable=False))
        specs = kept
    return specs


def nominal_depth(model: str) -> int | None:
    """The depth a model preset names (conf/model/NAME.yaml)."""
    path = conf_dir() / "model" / f"{model}.yaml"
    return int(OmegaConf.load(path).depth) if path.exists() else None


def comparable(c: TableCell, base: dict[str, Any], runs: pd.DataFrame) -> bool:
    """Whether the paper's number measures what these runs measure: the paper's net at its depth, its dataset, its
    length of training. Anything else (a scaled-down net, synthetic data, a short budget) is shown without Δ."""
    if not c.comparable or runs.empty:
        return c.comparable
    model, data = c.match.get("model", base.get("model")), c.match.get("data", base.get("data"))
    return bool(
        (runs["model"] == model).all()
        and (runs["depth"] == nominal_depth(model)).all()
        and (runs["data"] == data).all()
        and runs["budget"].isin(PAPER_BUDGETS).all()
    )


def build(name: str, df: pd.DataFrame, filters: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per table cell: ours (median, mean, std, n, seeds), the paper's number and Δ; plus the table's header."""
    specs, base = cells(name)
    filters = filters or {}
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    specs = pick_cells(specs, filters)
    chosen = {**base, **filters}
    df = select(df, {k: v for k, v in chosen.items() if k not in {k2 for c in specs for k2 in c.match}})
    budgets = sorted(df["budget"].dropna().unique())
    if len(budgets) > 1 and "budget" not in chosen:
        raise LookupError(f"the matching runs mix budgets {', '.join(budgets)}; pick one with budget=NAME")
    out = []
    for c in specs:
        sel = select(df, c.match)
        counted = (outcome({"status": s, "test_error": _fraction(e)}) for s, e in zip(sel["status"], sel[c.metric]))
        values = pd.Series([v for v in counted if v is not None], dtype=float)
        median = values.median() if len(values) else None
        same = comparable(c, base, sel)
        out.append(
            {
                "table": name,
                "row": c.row,
                "column": c.column,
                "ours_median": median,
                "ours_mean": values.mean() if len(values) else None,
                "ours_std": values.std() if len(values) > 1 else None,
                "n": len(values),
                "fail": None if median is None else is_fail(median),
                "paper": c.paper,
                "comparable": same,
                "delta": median - c.paper if median is not None and same and isinstance(c.paper, float) else None,
                "depth": ",".join(map(str, sorted(set(sel["depth"].dropna().astype(int))))),
                "seeds": ",".join(map(str, sorted(sel["seed"]))),
            }
        )
    result = pd.DataFrame(out)
    if not result["n"].any():
        raise LookupError(
            f"no finished runs match {name} ({', '.join(f'{k}={v}' for k, v in chosen.items())}); "
            "see `resnet-ablate status` for what the store holds"
        )
    header = {
        "table": name,
        **chosen,
        "budget": chosen.get("budget", budgets[0] if budgets else None),
        "complete": bool(result["n"].all()),
    }
    return result, header


def _fraction(percent):
    return None if percent is None or pd.isna(percent) else percent / 100


def fmt_ours(r: pd.Series) -> str:
    if not r["n"]:
        return "missing (0 done)"
    if r["fail"]:
        return f"fail ({r['ours_median']:.2f}) n={r['n']}"
    spread = f" ({r['ours_mean']:.2f}±{r['ours_std']:.2f})" if r["n"] > 1 else ""
    return f"{r['ours_median']:.2f}{spread} n={r['n']}"


def fmt_paper(r: pd.Series) -> str:
    """The paper's number; in parentheses when it is not comparable with ours."""
    v = r["paper"]
    text = "" if v is None else v if isinstance(v, str) else f"{v:.2f}"
    return text if r["comparable"] or not text else f"({text})"


NOT_COMPARABLE = "Paper numbers in parentheses are for another net, depth, dataset or budget: no Δ."


def layout(result: pd.DataFrame) -> pd.DataFrame:
    """The paper's shape: a row per paper row; per paper column, ours / paper / Δ."""
    shown = result.assign(
        ours=result.apply(fmt_ours, axis=1),
        paper=result.apply(fmt_paper, axis=1),
        delta=result["delta"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:+.2f}"),
    )
    wide = shown.pivot(index="row", columns="column", values=["ours", "paper", "delta"])
    wide = wide.swaplevel(0, 1, axis=1)
    columns = list(dict.fromkeys(result["column"]))
    wide = wide[[(c, k) for c in columns for k in ("ours", "paper", "delta")]]
    return wide.loc[list(dict.fromkeys(result["row"]))]
