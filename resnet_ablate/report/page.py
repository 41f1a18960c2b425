"""A reproduction report to share: one self-contained HTML page with every paper table the store can fill, the
figures (embedded PNGs), the ``compare`` verdicts for Table 2's placements and Table 1's shortcuts, and where
every number comes from (commits, versions, devices, GPU-hours, budgets, missing cells)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from .. import presets, store
from ..axes import AXES
from .compare import compare
from .figures import FIGURES, plot
from .tables import build, cells, layout, not_comparable_note, records, select

PAGE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnet-ablate reproduction report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: .6em 0 1.2em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #555; } code { background: #f6f6f6; }
</style></head><body>
<h1>Identity Mappings in Deep Residual Networks: reproduction report</h1>
<p class="note">He, Zhang, Ren, Sun, ECCV 2016. Ours: the median over seeds (mean±std, n); "fail": above 20% test
error; the paper's numbers in parentheses are not comparable with ours (another net, depth, dataset or budget).
Store: <code>{{ root }}</code>{% if filters %}; filters: <code>{{ filters }}</code>{% endif %}.</p>
<h2>Tables</h2>
{% for t in tables %}<h3>{{ t.name }}</h3>{{ t.html }}<p class="note">{{ t.note }}</p>{% endfor %}
{% if not tables %}<p>No paper table has a finished run in this store.</p>{% endif %}
<h2>Verdicts</h2>
{% for v in verdicts %}<p>{{ v }}</p>{% endfor %}
{% if not verdicts %}<p>No setting has runs to compare.</p>{% endif %}
<h2>Figures</h2>
{% for f in figures %}<h3>{{ f.name }}</h3><img alt="{{ f.name }}" src="data:image/png;base64,{{ f.png }}">{% endfor %}
<h2>Provenance</h2>
<table>{% for k, v in provenance.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
</body></html>
""",
    autoescape=True,
)


def _tables(df: pd.DataFrame, filters: dict[str, Any]) -> tuple[list[dict], int]:
    """Each paper table the store can fill, as HTML; and how many of their cells have no finished run."""
    shown, missing = [], 0
    for name in presets.names("table"):
        try:
            result, header = build(name, df, filters)
        except LookupError:
            continue
        missing += int((result["n"] == 0).sum())
        wide = layout(result)
        wide.columns = [f"{c} {k}" for c, k in wide.columns]
        wide.index.name = None
        notes = [] if header["complete"] else ["Partial: some cells have no finished run."]
        notes += [] if result["comparable"].all() else [not_comparable_note(result)]
        shown.append({"name": name, "html": Markup(wide.to_html(border=0)), "note": " ".join(notes)})
    return shown, missing


def _verdicts(df: pd.DataFrame, filters: dict[str, Any]) -> list[str]:
    """Table 2: each placement against the original unit, per net; Table 1: each shortcut row against identity."""
    comparisons = []
    units = list(dict.fromkeys(c.match["unit"] for c in cells("table2")[0]))
    for model in sorted(select(df, filters)["model"].dropna().unique()):
        runs = select(df, {**filters, "model": model, "shortcut": "identity"})
        present = [u for u in units if (runs["unit"] == u).any()]
        if units[0] in present and len(present) > 1:
            comparisons.append((f"Table 2, {model}", runs, "unit", present))
    t1, base = cells("table1")
    rows = [select(select(df, {**base, **filters}), c.match).assign(table1_row=c.row) for c in t1]
    runs = pd.concat(rows)
    present = [c.row for c in t1 if (runs["table1_row"] == c.row).any()]
    if t1[0].row in present and len(present) > 1:
        comparisons.append(("Table 1", runs, "table1_row", present))
    out = []
    shortcut = [a.column for a in AXES if a.path.startswith("shortcut.")]
    for label, runs, axis, settings in comparisons:
        try:
            out += [f"{label}: {v}" for v in compare(runs, axis, settings, {}, laid_out=shortcut)[1]]
        except LookupError as e:  # runs that differ in more than the setting: say so rather than pool them
            out.append(f"{label}: {e}")
    return out


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


def _provenance(root: Path, keys: set[str], missing: int) -> dict[str, str]:
    found = [r for r in store.scan(root)[0] if r.key in keys]

    def distinct(values) -> str:
        return ", ".join(sorted({str(v) for v in values if v})) or "unknown"

    gpu_seconds = sum(r.get("wall_time") or 0 for r in found if r.get("device") and "cpu" not in r.get("device"))
    return {
        "runs": str(len(found)),
        "git commits": distinct(r.get("git_commit") for r in found),
        "versions": distinct(
            " ".join(f"{k} {v}" for k, v in sorted(r.get("versions").items())) for r in found if r.get("versions")
        ),
        "devices": distinct(r.get("device") for r in found),
        "GPU-hours spent": f"{gpu_seconds / 3600:.2f}",
        "budgets": distinct(r.budget for r in found),
        "table cells without a finished run": str(missing),
    }


def report(root: str | Path, filters: dict[str, Any]) -> str:
    """The report's HTML for the store at ``root``, restricted by ``filters``."""
    df = records(root)
    if df.empty:
        raise LookupError("no finished runs in the store; run a sweep first (resnet-ablate sweep PRESET)")
    tables, missing = _tables(df, filters)
    chosen = set(select(df, filters)["key"])
    return PAGE.render(
        root=str(root),
        filters=" ".join(f"{k}={v}" for k, v in filters.items()),
        tables=tables,
        verdicts=_verdicts(df, filters),
        figures=_figures(Path(root), filters, df),
        provenance=_provenance(Path(root), chosen, missing),
    )
