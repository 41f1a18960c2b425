"""What the commands print: paper tables, comparisons with their verdicts, sweep cells, the store's runs and
throughput, as rich tables or as text (Markdown, LaTeX that compiles as it is in an ``article`` with ``booktabs``,
CSV)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .tables import in_words

FORMATS = ("rich", "md", "latex", "csv")

# LaTeX's special characters, and the symbols our text holds that pdflatex refuses as raw Unicode
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",  # text-mode < and > print ¡ and ¿ under LaTeX's default OT1 encoding
    ">": r"$>$",
    "|": r"$|$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "→": r"$\rightarrow$",
    "−": "-",
    "–": "--",
    "—": "---",
    "…": r"\ldots{}",
    "ⁿ": r"$^n$",
}
_GREEK = "αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΥΦΨΩ"  # the Greek letters LaTeX's math mode names
_NAMES = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau upsilon phi chi psi"
_NAMES += " omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega"
_LATEX.update({ch: f"$\\{name}$" for ch, name in zip(_GREEK, _NAMES.split(), strict=True)})


def latex_text(text: Any) -> str:
    """Any text as LaTeX that typesets it as written: specials escaped, Greek and symbols as math."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _cell(text: Any, width: int) -> str:
    """A table cell as LaTeX, broken into stacked lines of at most ``width`` characters (at spaces) so that the
    table fits an article's text width."""
    lines = textwrap.wrap(str(text), width) or [""]
    if len(lines) == 1:
        return latex_text(lines[0])
    return r"\begin{tabular}[t]{@{}l@{}}" + r" \\ ".join(map(latex_text, lines)) + r"\end{tabular}"


def latex(frame: pd.DataFrame, caption: str, label: str, index: bool = True) -> str:
    """A booktabs table (pandas' layout) whose every cell, header and caption is escaped by ``latex_text``, in
    ``\\footnotesize`` with long cells stacked on lines, so that it fits an ``article``'s text width."""
    columns = frame.columns
    if isinstance(columns, pd.MultiIndex):  # a paper table: a net spanning its ours / paper / Δ
        columns = pd.MultiIndex.from_tuples([tuple(map(latex_text, c)) for c in columns])
    else:
        columns = [_cell(c, 8) for c in columns]
    escaped = frame.map(lambda v: _cell(v, 16)).set_axis(columns, axis=1)
    escaped.index = [_cell(i, 16) for i in frame.index]
    body = escaped.to_latex(index=index, escape=False, caption=latex_text(caption), label=label)
    return body.replace("\\begin{table}\n", "\\begin{table}\n\\footnotesize\\setlength{\\tabcolsep}{4pt}\n", 1)


def number(v) -> str:
    """A cell's value as shown: empty for none or NaN, four significant digits for a float."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def text(table: Table) -> str:
    """A rich table as plain text (for a file)."""
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def architecture_table(info: dict[str, Any]) -> Table:
    """``describe``'s summary: a row per figure."""
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        table.add_row(key.replace("_", " "), escape(shown))
    return table


def paper_table(name: str, result: pd.DataFrame, header: dict[str, Any], fmt: str) -> Table | str:
    """A paper table (``tables.build``'s rows) laid out as the paper's, with its title and note."""

    title = f"{name}: test error (%), ours = median (mean±std) n=seeds, " + " ".join(
        f"{k}={v}" for k, v in header.items() if k not in ("table", "complete")
    )
    depths = sorted({d for d in result["depth"] if d})
    note = " ".join(
        [
            *([] if header["complete"] else ["PARTIAL: some cells have no finished run."]),
            *([not_comparable_note(result)] if not result["comparable"].all() else []),
            *([f"Depths of our runs: {', '.join(depths)}."] if depths else []),
        ]
    )
    wide = layout(result)
    flat = wide.set_axis([f"{c} {k}" for c, k in wide.columns], axis=1)
    if fmt == "csv":
        return result.drop(columns="differences").to_csv(index=False)
    if fmt == "md":
        return f"**{title}**\n\n" + flat.to_markdown(disable_numparse=True) + (f"\n\n{note}" if note else "") + "\n"
    if fmt == "latex":
        return latex(wide, title + (f". {note}" if note else ""), f"tab:{name}")
    heads = [f"{c if k == 'ours' else ''}\n{k}" for c, k in wide.columns]  # the net once, over its ours
    t = Table("", *map(escape, heads), title=escape(title), caption=escape(note) or None)
    for row, values in wide.iterrows():
        t.add_row(escape(row), *map(escape, values))
    return t


def comparison(result: pd.DataFrame, verdicts: list[str], axis: str, fmt: str) -> Table | str:
    """``compare``'s rows and verdicts (as text; a rich table leaves the verdicts to be printed under it): errors
    and Δ in points to 2 decimals, as the verdicts print them, p to 4."""
    if fmt == "csv":
        return result.to_csv(index=False)
    quiet = [c for c in ("diverged", "left_out") if c in result.columns and not result[c].any()]
    shown = result.drop(columns=quiet)  # counts of unusual runs, shown where there are any
    for c in shown.columns:
        digits = 4 if c == "p" else 2 if c in ("median", "mean", "std", "delta", "ci_low", "ci_high") else None
        shown[c] = [("" if v is None or v != v else f"{v:.{digits}f}") if digits else number(v) for v in result[c]]
    if fmt == "md":
        return shown.to_markdown(index=False) + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"
    if fmt == "latex":
        return latex(shown.drop(columns="test"), " ".join(verdicts), f"tab:compare-{axis}", index=False)  # named there
    t = Table(*shown.columns, title=f"test error (%) by {escape(axis)}")  # the verdicts are printed under it
    for _, r in shown.iterrows():
        t.add_row(*map(escape, r))
    return t


def sweep_cells(cells: list, tflops: float | None) -> tuple[Table, str]:
    """A sweep's cells: the axes that vary (as columns), status, SLURM job, run directory, GPU-hour estimate; and a
    summary line."""
    from ..cost import forward_macs, gpu_hours
    from ..grid import varying
    from ..models import architecture
    from ..slurm import jobs as slurm_jobs

    values, varied = varying([c.overrides for c in cells])
    cpu = tflops and _on_this_cpu(cells[0].cfg)
    hours_label = f"hours at {tflops or 0:g} TFLOP/s"  # what it is: on a CPU, still a GPU's rate unless --tflops
    fixed = " ".join(f"{k}={v}" for k, v in values[0].items() if k not in varied)
    jobs = slurm_jobs([c.directory for c in cells])
    table = Table(
        *varied,
        "status",
        *(["SLURM job"] if jobs else []),
        "run directory",
        *([hours_label] if tflops else []),
        title=escape(fixed) or None,  # list overrides ([12,18]) are not rich markup
    )
    macs: dict[str, int] = {}
    hours, counts = 0.0, {}
    for c, v in zip(cells, values):
        status = c.status
        counts[status] = counts.get(status, 0) + 1
        row = [v.get(k, "") for k in varied] + [status, *([jobs.get(c.directory, "")] if jobs else [])]
        row.append(str(c.directory))
        if tflops:
            arch = architecture(c.cfg)
            if arch not in macs:
                macs[arch] = forward_macs(c.cfg)
            h = gpu_hours(c.cfg, macs[arch], tflops)
            hours += 0 if status.ended else h
            row.append(f"{h:.3g}")
        table.add_row(*map(escape, row))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    estimate = (
        f"; about {hours:.3g} {'hours' if cpu else 'GPU-hours'} to go at {tflops:g} effective TFLOP/s" if tflops else ""
    )
    if cpu:
        estimate += " (a GPU's rate: no GPU here, so this CPU trains them, far slower; --tflops sets its rate)"
    return table, f"{len(cells)} cells: {summary}{estimate}"


def _on_this_cpu(cfg) -> bool:
    """Whether the local launcher would train the cells on this machine's CPU."""
    from ..distributed import resolve_device

    try:
        return cfg.launcher.name == "local" and resolve_device(cfg.train.device).type == "cpu"
    except ValueError:
        return False


LISTED = 100  # a store of more runs lists those not done (``--all``: every run) and counts the done ones


def runs(root: Path, every: bool = False) -> tuple[Table, list[str], dict[str, list[str]]]:
    """The store's run directories (every one, or all but the done ones in a large store): status, the shown axes,
    test error, SLURM job; the lines to print under it (each held cell's holder, the done runs not listed); and
    the entries that are not runs of ours, by reason. Each run's record is read once."""
    from .. import store
    from ..axes import AXES, lookup
    from ..record import NotARun, read
    from ..slurm import jobs as slurm_jobs
    from ..status import Status

    shown = [a for a in AXES if a.shown]
    entries = sorted((root / "runs").iterdir())
    dirs = {d for d in entries if d.is_dir() and not d.is_symlink()}  # a set: asked of each of 5,000 entries
    jobs = slurm_jobs(sorted(dirs))
    table = Table("run", "status", *(a.column for a in shown), "test err", *(["SLURM job"] if jobs else []))
    lines, skipped, unlisted = [], {}, 0
    for d in entries:
        try:
            result = read(d).result
        except (FileNotFoundError, NotARun) as e:
            result = {}
            if isinstance(e, NotARun):
                skipped.setdefault(str(e), []).append(d.name)
        if d not in dirs:  # a stray file or a link: said in the notes, not a row
            continue
        c = result.get("config") or store.saved_config(d)
        err = result.get("test_error")
        state = Status(result["status"]) if result else store.cell_status(d)
        if state == "running":
            lines.append(f"{d.name}: held by {store.lock_holder(d)}")
        if state == "done" and not every and len(dirs) > LISTED:
            unlisted += 1
            continue
        row = [d.name, str(state), *(number(lookup(c, a.path)) for a in shown)]
        row += [f"{100 * err:.2f}%" if err is not None else "", *([jobs.get(d, "")] if jobs else [])]
        table.add_row(*map(escape, row))
    if unlisted:
        lines.append(f"{unlisted:,} done runs not listed (--all lists every run; table and compare read them)")
    return table, lines, skipped


def bench(rows: list[dict], title: str) -> Table:
    """``bench``'s figures: a row per model × setup × packing."""
    columns = ["model", "setup", "jobs × streams × seeds", "images/s", "ms/step", "MFU", "peak mem GB"]
    t = Table(*columns, "warm-up+compile s", "× baseline", title=title)
    for r in rows:
        t.add_row(
            r["model"],
            r["setup"],
            f"{r['jobs']} × {r.get('streams', 1)} × {r.get('seeds', 1)}",
            f"{r['images_per_s']:,.0f}",
            f"{r['ms_per_step']:.1f}",
            f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "",
            f"{r['peak_mem_gb']:.2f}" if r.get("peak_mem_gb") else "",
            f"{r['warmup_compile_s']:.1f}" if "warmup_compile_s" in r else "",
            f"{r['x_baseline']:.2f}" if r.get("x_baseline") else "",
        )
    return t


def fmt_ours(r: pd.Series) -> str:
    """The median (mean±std) n=seeds; "fail" only after the paper's schedule; diverged runs named and counted, the
    error they ended with where they have one."""
    if not r["n"]:
        return "missing (0 done)"
    median = r["ours_median"]
    diverged = r["diverged"]
    if median is None or pd.isna(median):  # the middle run diverged with no error to show
        return f"diverged n={r['n']}" + (f", {diverged} diverged" if diverged < r["n"] else "")
    number = f"{median:.2f}"
    if r["n"] > 1 and r["ours_std"] is not None and not pd.isna(r["ours_std"]):
        number += f" ({r['ours_mean']:.2f}±{r['ours_std']:.2f})"
    word = "diverged" if diverged == r["n"] else "fail" if r["fail"] else ""
    text = f"{word} ({number})" if word else number
    return f"{text} n={r['n']}" + (f", {diverged} diverged" if 0 < diverged < r["n"] else "")


def fmt_paper(r: pd.Series) -> str:
    """The paper's number: plain where our runs are its net and recipe (Δ beside it), else in parentheses (no run,
    or runs that differ: the note under the table says how)."""
    v = r["paper"]
    text = v if isinstance(v, str) else "" if v is None or pd.isna(v) else f"{v:.2f}"  # None: the source has none
    return text if r["comparable"] or not text else f"({text})"


NOT_COMPARABLE = "Paper numbers in parentheses have no Δ: their cell has no run, or our runs differ from the paper's:"


def not_comparable_note(result: pd.DataFrame) -> str:
    """The note under a table: how our runs differ from the paper's, every difference once per kind, shortest first
    (each cell's own: ``--format csv``, column ``why``)."""
    if result["comparable"].all():
        return ""
    reasons = in_words([d for differences in result["differences"] for d in differences])
    if not reasons:
        return f"{NOT_COMPARABLE.partition(', or')[0]}."
    return f"{NOT_COMPARABLE} {'; '.join(reasons)}. Each cell's: --format csv, column why."


def layout(result: pd.DataFrame) -> pd.DataFrame:
    """The paper's shape: a row per paper row; per paper column (the net, named with its depth where that is not the
    paper's), ours / paper / Δ."""
    shown = result.assign(
        ours=result.apply(fmt_ours, axis=1),
        paper=result.apply(fmt_paper, axis=1),
        delta=result["delta"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:+.2f}"),
    )
    wide = shown.pivot(index="shown_row", columns="shown_column", values=["ours", "paper", "delta"])
    wide = wide.swaplevel(0, 1, axis=1)
    columns = list(dict.fromkeys(result["shown_column"]))
    wide = wide[[(c, k) for c in columns for k in ("ours", "paper", "delta")]].rename(columns={"delta": "Δ"}, level=1)
    wide.columns.names = [None, None]
    return wide.loc[list(dict.fromkeys(result["shown_row"]))].rename_axis(None)
