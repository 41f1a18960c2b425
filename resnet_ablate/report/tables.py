"""The paper's Tables 1–5 from our runs: tidy per-run records, aggregated over seeds, beside the paper.

``records(root)`` gives one row per ended run; ``build(name, records, filters)`` gives one row per table cell
(ours: median, mean, std, n; the paper's number; Δ); ``layout`` pivots that into the paper's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import store
from . import paper

TABLES = ("table1", "table2", "table3", "table4", "table5")


def records(root: str | Path) -> pd.DataFrame:
    """One row per ended run: the axes of the paper's tables, status and errors (in %)."""
    rows = []
    for r in store.results(root):
        c = r.get("config", {})
        m, s, d, t = c.get("model", {}), c.get("shortcut", {}), c.get("data", {}), c.get("train", {})
        rows.append(
            {
                "key": r["key"],
                "status": r["status"],
                "model": m.get("name"),
                "depth": m.get("depth"),
                "unit": c.get("unit", {}).get("name"),
                "shortcut": s.get("kind"),
                "scale": s.get("scale"),
                "scale_residual": s.get("scale_residual"),
                "gate_bias": s.get("gate_bias"),
                "p": s.get("p"),
                "data": d.get("name"),
                "test_size": d.get("test_size"),
                "batch": t.get("batch_size"),
                "budget": t.get("budget"),
                "iterations": t.get("iterations"),
                "precision": t.get("precision"),
                "seed": c.get("seed"),
                "error": None if r.get("test_error") is None else 100 * r["test_error"],
                "error_top5": None if r.get("test_error_top5") is None else 100 * r["test_error_top5"],
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Cell:
    row: str
    column: str
    match: dict[str, Any]
    paper: float | str | None
    metric: str = "error"


def cells(name: str) -> tuple[list[Cell], dict[str, Any]]:
    """The cells of a paper table and the filter common to them (which the user may override)."""
    if name == "table1":
        return [Cell(label, m, p, "error") for label, m, p in paper.TABLE1], {
            "model": "resnet110",
            "unit": "original",
            "data": "cifar10",
        }
    if name == "table2":
        return [
            Cell(u, net, {"unit": u, "model": net}, v) for u, cols in paper.TABLE2.items() for net, v in cols.items()
        ], {"shortcut": "identity", "data": "cifar10"}
    if name == "table3":
        return [
            Cell(f"{data} {net}", u, {"data": data, "model": net, "unit": u}, v)
            for (data, net), cols in paper.TABLE3.items()
            for u, v in cols.items()
        ], {"shortcut": "identity"}
    if name == "table4":
        return [
            Cell(f"{data} {net} batch {b}", "full_preact", {"data": data, "model": net, "batch": b}, v[0])
            for (data, net, b), v in paper.TABLE4.items()
        ], {"shortcut": "identity", "unit": "full_preact"}
    if name == "table5":
        return [
            Cell(f"{net} {u}", col, {"model": net, "unit": u}, v[i], metric)
            for (net, u), v in paper.TABLE5.items()
            for i, (col, metric) in enumerate((("top-1", "error"), ("top-5", "error_top5")))
        ], {"data": "imagenet", "test_size": 320}
    raise ValueError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")


def _select(df: pd.DataFrame, match: dict[str, Any]) -> pd.DataFrame:
    for key, value in match.items():
        if key not in df.columns:
            valid = ", ".join(c for c in df.columns if c not in ("key", "error", "error_top5"))
            raise ValueError(f"unknown filter {key!r}; valid: {valid}")
        column, values = df[key], value if isinstance(value, list) else [value]
        df = df[column.astype(str).isin([str(v) for v in values]) | column.isin(values)]
    return df


def build(name: str, df: pd.DataFrame, filters: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per table cell: ours (median, mean, std, n, seeds), the paper's number and Δ; plus the table's header."""
    specs, base = cells(name)
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    chosen = {**base, **(filters or {})}
    df = _select(df, {k: v for k, v in chosen.items() if k not in {k2 for c in specs for k2 in c.match}})
    budgets = sorted(df["budget"].dropna().unique())
    if len(budgets) > 1 and "budget" not in chosen:
        raise LookupError(f"the matching runs mix budgets {', '.join(budgets)}; pick one with budget=NAME")
    out = []
    for c in specs:
        sel = _select(df, c.match)
        values = sel[c.metric].where(sel["status"] != "diverged", 100.0).dropna()  # a diverged run counts as fail
        median = values.median() if len(values) else None
        depths = sorted(set(sel["depth"].dropna().astype(int)))
        out.append(
            {
                "table": name,
                "row": c.row,
                "column": c.column,
                "ours_median": median,
                "ours_mean": values.mean() if len(values) else None,
                "ours_std": values.std() if len(values) > 1 else None,
                "n": len(values),
                "fail": None if median is None else median > 100 * paper.FAIL_THRESHOLD,
                "paper": c.paper,
                "delta": median - c.paper if median is not None and isinstance(c.paper, float) else None,
                "depth": ",".join(map(str, depths)),
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


def fmt_ours(r: pd.Series) -> str:
    if not r["n"]:
        return "missing (0 done)"
    if r["fail"]:
        return f"fail ({r['ours_median']:.2f}) n={r['n']}"
    spread = f" ({r['ours_mean']:.2f}±{r['ours_std']:.2f})" if r["n"] > 1 else ""
    return f"{r['ours_median']:.2f}{spread} n={r['n']}"


def layout(result: pd.DataFrame) -> pd.DataFrame:
    """The paper's shape: a row per paper row; per paper column, ours / paper / Δ."""
    shown = result.assign(
        ours=result.apply(fmt_ours, axis=1),
        paper=result["paper"].map(lambda v: "" if v is None else v if isinstance(v, str) else f"{v:.2f}"),
        delta=result["delta"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:+.2f}"),
    )
    wide = shown.pivot(index="row", columns="column", values=["ours", "paper", "delta"])
    wide = wide.swaplevel(0, 1, axis=1)
    columns = list(dict.fromkeys(result["column"]))
    wide = wide[[(c, k) for c in columns for k in ("ours", "paper", "delta")]]
    return wide.loc[list(dict.fromkeys(result["row"]))]
