"""The commands that read the store: table, compare, plot, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import app, check_out, fail, note_skipped, one_line, out, parse_filters, write_out


@app.command()
def table(
    name: str = typer.Argument(..., help="table1 … table5"),
    filters: Optional[list[str]] = typer.Argument(
        None, help="key=value filters, e.g. data=synthetic budget=smoke; store.root=DIR"
    ),
    fmt: str = typer.Option("rich", "--format", help="rich | md | latex | csv"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of the terminal."),
):
    """A paper table from our runs: median over seeds (mean±std, n), the paper's number and Δ."""
    from ..report.render import FORMATS, paper_table
    from ..report.render import text as as_text
    from ..report.tables import build, records

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    check_out(out_file, folder=False)
    root, where = parse_filters(filters)
    runs = records(root)
    note_skipped(runs.attrs["skipped"])
    try:
        result, header = build(name, runs, where)
    except (ValueError, LookupError) as e:
        fail(str(e))
    shown = paper_table(name, result, header, fmt)
    if isinstance(shown, str):
        text = shown
    elif out_file is None:
        out.print(shown)
        return
    else:
        text = as_text(shown)
    if out_file is None:
        print(text, end="")
    else:
        write_out(out_file, text)


@app.command()
def compare(
    axis: str = typer.Argument(..., help="axis=setting1,setting2[,…], e.g. unit=original,full_preact"),
    filters: Optional[list[str]] = typer.Argument(None, help="key=value filters for the other axes; store.root=DIR"),
    fmt: str = typer.Option("rich", "--format", help="rich | md | latex | csv"),
    as_json: bool = typer.Option(False, "--json", help="The rows and verdicts as one JSON object."),
):
    """Settings along one axis over seeds: n, medians, mean ± std, Δ with a BCa bootstrap CI, an exact permutation
    test's p (paired over seeds when they match), and a verdict that says what the number of seeds allows."""
    from ..report.compare import compare as run_compare
    from ..report.render import FORMATS, comparison
    from ..report.tables import records

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    key, sep, values = axis.partition("=")
    if not sep or "," not in values:
        fail(f"the axis {axis!r} must be key=a,b[,…] (e.g. unit=original,full_preact)")
    from ..presets import typed_value

    root, where = parse_filters(filters)
    settings = [typed_value(v) for v in values.split(",")]
    runs = records(root)
    note_skipped(runs.attrs["skipped"])
    try:
        result, verdicts = run_compare(runs, key, settings, where)
    except (ValueError, LookupError) as e:
        fail(str(e))
    if as_json:
        rows = json.loads(result.to_json(orient="records"))
        print(json.dumps({"axis": key, "rows": rows, "verdicts": verdicts}))
        return
    shown = comparison(result, verdicts, key, fmt)
    if isinstance(shown, str):
        print(shown, end="")
        return
    out.print(shown)
    for v in verdicts:
        out.print(v, highlight=False, markup=False, soft_wrap=True)


@app.command()
def plot(
    name: str = typer.Argument(..., help="figure1 | figure3 | figure6 | gradient-flow | runs | signal"),
    filters: Optional[list[str]] = typer.Argument(
        None, help="key=value filters, e.g. data=synthetic; store.root=DIR. signal: a preset and/or overrides"
    ),
    out_dir: Path = typer.Option(Path("figures"), "--out", help="Folder for the PNG and PDF."),
):
    """Redraw the paper's curves (figure1/3/6: test error solid, training loss dashed, a colour per cell). runs:
    every run's test error and training loss in two panels (a colour per setting, a line style per seed).
    gradient-flow: the gradient reaching each unit. signal: each variant's activations and gradients at
    initialisation, no store needed."""
    from ..report.figures import plot as draw
    from ..report.figures import signal
    from ..report.tables import records

    check_out(out_dir, folder=True)
    if name == "signal":
        try:
            files = signal(filters or [], out_dir)
        except (ValueError, LookupError) as e:
            fail(one_line(e))
        out.print("wrote " + ", ".join(map(str, files)))
        return
    root, where = parse_filters(filters)
    runs = records(root)  # the store read once
    note_skipped(runs.attrs["skipped"])
    try:
        files = draw(name, root, where, out_dir, runs)
    except (ValueError, LookupError) as e:
        fail(str(e))
    out.print("wrote " + ", ".join(map(str, files)))


@app.command()
def report(
    filters: Optional[list[str]] = typer.Argument(None, help="key=value filters, e.g. data=cifar10; store.root=DIR"),
    out_file: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
):
    """One self-contained HTML page: every paper table the store can fill, each table's verdicts (as its preset lays
    them out), the figures, the runs no table holds, and the provenance of every number."""
    from ..progress import doing
    from ..record import scan
    from ..report.page import report as render

    check_out(out_file, folder=False)
    root, where = parse_filters(filters)
    scanned = scan(root)  # the store read once
    note_skipped(scanned[1])
    try:
        with doing(f"report: reading {root}, laying out the tables, testing the verdicts, drawing the figures"):
            html = render(root, where, scanned)
    except (ValueError, LookupError) as e:
        fail(str(e))
    write_out(out_file, html)
