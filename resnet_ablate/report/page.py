"""A reproduction report to share: one self-contained HTML page, a section per dataset and budget the store holds
runs of, each with every paper table the store can fill, the ``compare`` verdicts for Table 2's placements and
Table 1's shortcuts, the figures (embedded PNGs) and the run directories behind each table cell; then where every
number comes from (commits, versions, devices, GPU- and CPU-hours, budgets, missing cells)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from .. import presets
from ..record import scan
from .compare import compare
from .figures import FIGURES, plot
from .render import layout, not_comparable_note
from .tables import FOLLOW_UPS, build, frame, named, select, show, table_runs

PAGE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnet-ablate reproduction report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: .6em 0 1.2em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #555; } code { background: #f6f6f6; }
td.keys { text-align: left; font: 12px ui-monospace, monospace; }
</style></head><body>
<h1>Identity Mappings in Deep Residual Networks: reproduction report</h1>
<p class="note">He, Zhang, Ren, Sun, ECCV 2016. Ours: the median over seeds (mean±std, n); "fail": above 20% test
error after the paper's schedule; "diverged": the loss became NaN or infinite (the error it ended with beside
it); the paper's numbers in parentheses are not comparable with ours (another net, depth, dataset or recipe).
Store: <code>{{ root }}</code>{% if filters %}; filters: <code>{{ filters }}</code>{% endif %}. A section per
dataset and training budget the store holds runs of.</p>
{% for s in sections %}<h2>{{ s.title }}</h2>
<h3>Tables</h3>
{% for t in s.tables %}<h4>{{ t.name }}</h4>{{ t.html }}<p class="note">{{ t.note }}</p>{% endfor %}
{% if not s.tables %}<p>No paper table has a finished run with these settings.</p>{% endif %}
{% if s.left_out %}<p class="note">{{ s.left_out }}</p>{% endif %}
<h3>Verdicts</h3>
{% for v in s.verdicts %}<p>{{ v }}</p>{% endfor %}
{% if not s.verdicts %}<p>No setting has runs to compare.</p>{% endif %}
<h3>Figures</h3>
{% for f in s.figures %}<h4>{{ f.name }}</h4>
<img alt="{{ f.name }}" src="data:image/png;base64,{{ f.png }}">{% endfor %}
{% if s.cells %}<h3>Where each number comes from</h3>
<table><tr><th>table</th><th>row</th><th>column</th><th>run directories (runs/…)</th><th>git commits</th>
<th>devices</th><th>hours</th></tr>
{% for c in s.cells %}<tr><td>{{ c.table }}</td><td>{{ c.row }}</td><td>{{ c.column }}</td>
<td class="keys">{{ c.runs }}</td><td>{{ c.commits }}</td><td>{{ c.devices }}</td><td>{{ c.hours }}</td></tr>
{% endfor %}</table>{% endif %}
{% endfor %}
<h2>Provenance</h2>
<table>{% for k, v in provenance.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
</body></html>
""",
    autoescape=True,
)


def sections(df: pd.DataFrame, filters: dict[str, Any]) -> list[dict[str, Any]]:
    """The filters of each section of the page: one per dataset and training budget that the store's runs hold,
    less what ``filters`` fix already (a table of CIFAR-10 runs is never filled with synthetic ones)."""
    runs = select(df, filters)
    free = [k for k in ("data", "budget") if k not in filters]
    if runs.empty or not free:
        return [filters]
    held = runs[free].drop_duplicates().sort_values(free).itertuples(index=False)
    return [{**filters, **dict(zip(free, values))} for values in held]


def _tables(df: pd.DataFrame, filters: dict[str, Any], found: dict) -> tuple[list[dict], list[dict], int]:
    """Each paper table the store can fill, as HTML; where each of its numbers comes from (``found``: records by
    run key); and how many of their cells have no finished run."""
    shown, where, missing = [], [], 0
    for name in presets.names("table"):
        try:
            result, header = build(name, df, filters)
        except LookupError:
            continue
        missing += int((result["n"] == 0).sum())
        where += [_origin(r, [found[k] for k in r["keys"].split(",") if k in found]) for _, r in result.iterrows()]
        wide = layout(result)
        notes = [] if header["complete"] else ["Partial: some cells have no finished run."]
        notes += [] if result["comparable"].all() else [not_comparable_note(result)]
        shown.append({"name": name, "html": Markup(wide.to_html(border=0)), "note": " ".join(notes)})
    return shown, [w for w in where if w["runs"]], missing


def _distinct(values) -> str:
    return ", ".join(sorted({str(v) for v in values if v})) or "unknown"


def _hours(found: list) -> dict[str, float]:
    """Wall-clock hours spent, by kind of device (GPU, CPU)."""
    spent: dict[str, float] = {}
    for r in found:
        kind = "CPU" if "cpu" in str(r.get("device") or "cpu").lower() else "GPU"
        spent[kind] = spent.get(kind, 0.0) + (r.get("wall_time") or 0) / 3600
    return spent


def _origin(cell: pd.Series, found: list) -> dict[str, str]:
    """One table cell's runs: their directories, commits, devices and hours."""
    return {
        "table": cell["table"],
        "row": cell["row"],
        "column": cell["column"],
        "runs": " ".join(r.key for r in found),
        "commits": _distinct((r.get("git_commit") or "")[:10] for r in found),
        "devices": _distinct(r.get("device") for r in found),
        "hours": ", ".join(f"{h:.3g} {kind}" for kind, h in sorted(_hours(found).items())),
    }


def _verdicts(df: pd.DataFrame, filters: dict[str, Any]) -> list[str]:
    """Each table's comparisons, as its preset lays them out (``verdicts: rows``: each row against the first, per
    column; ``columns``: each column against the first, per row), over the runs the table itself shows."""
    out = []
    for name in presets.names("table"):
        along = presets.load(name).verdicts
        if along is None:
            continue
        specs, runs = table_runs(name, df, filters)
        groups: dict[str, list[tuple[str, Any]]] = {}
        for c in specs:
            fixed, setting = (c.column, c.row) if along == "rows" else (c.row, c.column)
            groups.setdefault(fixed, []).append((setting, c))
        laid_out = list(dict.fromkeys(k for c in specs for k in c.match))  # compare frees their sections too
        for fixed, members in groups.items():
            held = pd.concat([select(runs, c.match).assign(setting=label) for label, c in members])
            present = [label for label, _ in members if (held["setting"] == label).any()]
            if len(present) < 2 or present[0] != members[0][0]:
                continue
            label = f"{name}, {fixed}" if len(groups) > 1 else name
            try:
                out += [f"{label}: {v}" for v in compare(held, "setting", present, {}, laid_out=laid_out)[1]]
            except LookupError as e:  # runs that differ in more than the setting: say so rather than pool them
                out.append(f"{label}: {e}")
    return out


def _left_out(runs: pd.DataFrame, in_tables: set[str]) -> str:
    """What the tables leave out of a section's runs (a follow-up's runs beside Tables 1–3), in one line."""
    rest = runs[~runs["key"].isin(in_tables)]
    if rest.empty:
        return ""
    unusual = {f"{c}={show(v)}" for c, d in FOLLOW_UPS.items() for v in rest[c] if show(v) != show(d)}
    what = ", ".join(sorted(unusual)) or "settings no table lays out"
    return f"{len(rest)} of these runs are in no table ({what}); compare and plot show them."


def _figures(root: Path, filters: dict[str, Any], runs: pd.DataFrame) -> list[dict]:
    drawn = []
    with tempfile.TemporaryDirectory() as folder:
        for name in FIGURES:
            try:
                png = plot(name, root, filters, Path(folder), runs)[0]
            except LookupError:
                continue
            drawn.append({"name": name, "png": base64.b64encode(png.read_bytes()).decode()})
    return drawn


def _provenance(found: list, missing: int) -> dict[str, str]:
    spent = _hours(found)
    return {
        "runs": str(len(found)),
        "git commits": _distinct(r.get("git_commit") for r in found),
        "versions": _distinct(
            " ".join(f"{k} {v}" for k, v in sorted(r.get("versions").items())) for r in found if r.get("versions")
        ),
        "devices": _distinct(r.get("device") for r in found),
        **{f"{kind}-hours spent": f"{h:.3g}" for kind, h in sorted(spent.items())},
        "budgets": _distinct(r.budget for r in found),
        "table cells without a finished run": str(missing),
    }


def report(root: str | Path, filters: dict[str, Any], scanned: tuple | None = None) -> str:
    """The report's HTML for the store at ``root`` (``record.scan``'s, unless already made: ``scanned``),
    restricted by ``filters``: a section per dataset and budget."""
    scanned = scanned or scan(root)  # once: a store may hold thousands of runs
    df, found = frame(*scanned), {r.key: r for r in scanned[0]}
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    filters = {named(df, k): v for k, v in filters.items()}
    shown, missing = [], 0
    for where in sections(df, filters):
        tables, cells_, n = _tables(df, where, found)
        in_tables = {k for c in cells_ for k in c["runs"].split()}
        missing += n
        title = " ".join(f"{k}={v}" for k, v in where.items() if k not in filters) or "runs"
        shown.append(
            {
                "title": title,
                "tables": tables,
                "cells": cells_,
                "verdicts": _verdicts(df, where),
                "left_out": _left_out(select(df, where), in_tables),
                "figures": _figures(Path(root), where, df),
            }
        )
    chosen = [found[k] for k in select(df, filters)["key"] if k in found]
    return PAGE.render(
        root=str(root),
        filters=" ".join(f"{k}={v}" for k, v in filters.items()),
        sections=shown,
        provenance=_provenance(chosen, missing),
    )
