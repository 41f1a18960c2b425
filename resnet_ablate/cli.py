"""The command line: thin wrappers that parse, then call one function of the package per command."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproduce and extend the ablations of 'Identity Mappings in Deep Residual Networks'.",
)
out = Console() if sys.stdout.isatty() else Console(width=200)  # tables unwrapped in files and pipes
OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. model=resnet110 unit=full_preact seed=1")


def one_line(e: BaseException) -> str:
    """A composition or validation error as one line that names the problem and the valid choices."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        valid = [o for o in e.options or [] if o != "schema"]
        return f"unknown {group or 'config'} {name!r}; valid: {', '.join(valid)}"
    text = str(e).splitlines()[0].rstrip(".") if str(e) else type(e).__name__
    if e.__cause__ is not None and str(e.__cause__).strip():
        text += f": {str(e.__cause__).splitlines()[0]}"
    return text


def fail(message: str, code: int = 2):
    err = Console(stderr=True, soft_wrap=True)
    err.print("error:", style="bold red", end=" ")
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code)


def compose_or_fail(overrides: list[str]):
    from .config import compose

    try:
        return compose(overrides)
    except Exception as e:
        fail(one_line(e))


@app.command()
def describe(
    overrides: Optional[list[str]] = OVERRIDES, as_json: bool = typer.Option(False, "--json", help="One JSON object.")
):
    """Architecture summary: parameters, multiply-adds, weight layers, units per stage, the unit's op order."""
    from .models import describe as summary
    from .report.render import architecture
    from .validate import check_architecture, check_values

    cfg = compose_or_fail(overrides or [])
    try:
        check_values(cfg)
        check_architecture(cfg)  # a composition that cannot learn is refused here too
        info = summary(cfg)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(info))
        return
    out.print(architecture(info))


@app.command()
def train(overrides: Optional[list[str]] = OVERRIDES, quiet: bool = typer.Option(False, help="No progress display.")):
    """Train one cell in the foreground (resumes it if partial; skips it if ended, unless store.rerun says so);
    with launcher.seeds=[…] that cell's seeds, stacked into one network."""
    from . import store
    from .progress import RunProgress, run_label
    from .sweep import run_cells, seed_cells, watch_parent
    from .train import TrainingError
    from .validate import check_cells

    cfg = compose_or_fail(overrides or [])
    try:
        cells = seed_cells(cfg)
        check_cells(cells)  # bad values, device, data or architecture: before the store is touched
        store.check_writable(cfg.store.root)
    except (ValueError, PermissionError) as e:
        fail(str(e))
    watch_parent()
    try:
        if quiet:
            results = run_cells(cfg)
        else:
            with RunProgress(cfg.train.iterations, run_label(cells)) as progress:
                results = run_cells(cfg, progress)
    except TrainingError as e:
        where = ", ".join(str(store.run_dir(c) / "result.json") for c in cells)
        fail(f"training failed ({e}); recorded in {where}; the next run retries it", 1)
    except (OSError, ValueError, RuntimeError) as e:  # set-up (data, device) or the store (a full disk)
        fail(one_line(e), 1)
    held = []
    for c, result in zip(cells, results):
        err = result.get("test_error")
        if result["status"] == "running":
            held.append(f"{store.run_dir(c)} is held by {store.lock_holder(store.run_dir(c)) or 'another process'}")
            continue
        out.print(
            f"{result['status']}: {store.run_dir(c)}" + (f"  test error {100 * err:.2f}%" if err is not None else ""),
            highlight=False,
        )
    if held:
        fail(f"not trained here: {'; '.join(held)}", 1)


@app.command()
def sweep(
    preset: str = typer.Argument(..., help="table1 … table5, figure1, figure3, figure6 (conf/sweep/)"),
    overrides: Optional[list[str]] = OVERRIDES,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and an estimate of GPU-hours; run nothing."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun diverged cells (failed ones always rerun)."),
    force: bool = typer.Option(False, "--force", help="Recompute every cell."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop the sweep at the first failing cell."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma list of GPU ids for the local launcher."),
    tflops: float = typer.Option(20.0, help="Effective training TFLOP/s per GPU for the estimate (see BENCHMARKS.md)."),
):
    """Run every cell of a preset grid (skip ended cells, resume partial ones)."""
    from . import store
    from .config import home_expanded
    from .progress import doing
    from .step import check_together
    from .sweep import absolute_paths, check_launcher, flags, plan, task, unended
    from .validate import check_cells

    args = home_expanded(overrides or [])
    try:
        check_launcher(args)
    except ValueError as e:
        fail(str(e))
    args += flags(force, retry_failed, fail_fast, gpus)
    try:
        with doing(f"{preset}: composing the cells and checking that each can learn (liveness)"):
            cells = plan(preset, args)
            check_cells([c.cfg for c in cells], data=not dry_run)  # a dry run runs nothing: it needs no data
            check_together(cells[0].cfg, cells[0].cfg.launcher.seeds_together)
    except Exception as e:
        fail(one_line(e))
    if dry_run:
        _print_cells(cells, tflops)
        return
    try:
        store.check_writable(cells[0].cfg.store.root)
    except PermissionError as e:
        fail(str(e))
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # planning composed in this process; the sweep is Hydra's own run
    sys.argv = ["resnet-ablate", "-m", f"sweep={preset}", *args, *absolute_paths(cells[0].cfg)]
    with _interrupted_by_sigterm() as received:
        try:
            task()
        except SystemExit as e:
            if e.code:
                fail(f"the sweep's launcher failed (exit {e.code}); see the messages above")
        except KeyboardInterrupt:
            fail(
                "interrupted: ended cells and the latest checkpoints are kept; rerun the same command to resume",
                128 + (received[0] if received else signal.SIGINT),
            )
    _print_cells(cells, None)
    problem = unended([c.status for c in cells])
    if problem:
        fail(problem, 1)


@contextlib.contextmanager
def _interrupted_by_sigterm():
    """SIGTERM (``kill``, a SLURM job step ending) and SIGHUP (a closed terminal) stop a sweep as Ctrl-C does: the
    launcher stops its workers, which checkpoint and exit. Yields the signals received."""
    received: list[int] = []

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _print_cells(cells, tflops: Optional[float]) -> None:
    from .progress import doing
    from .report.render import cells as render

    with doing("counting each architecture's multiply-adds for the estimate"):
        table, summary = render(cells, tflops)
    out.print(table)
    out.print(summary, highlight=False, markup=False)


@app.command()
def status(
    preset: Optional[str] = typer.Argument(None, help="A sweep preset; omit for every run in the store."),
    overrides: Optional[list[str]] = OVERRIDES,
    every: bool = typer.Option(False, "--all", help="List every run (a store of over 100 lists all but done ones)."),
):
    """What is done, running, failed or pending, read from the store."""
    from .config import home_expanded
    from .sweep import plan

    args = home_expanded(overrides or [])
    if preset and "=" in preset:  # no preset: the first argument is an override (status store.root=DIR)
        preset, args = None, home_expanded([preset, *args])
    if preset:
        try:
            cells = plan(preset, args)
        except Exception as e:
            fail(one_line(e))
        _print_cells(cells, None)
        return
    cfg = compose_or_fail(args)
    root = Path(cfg.store.root)
    if not (root / "runs").is_dir():
        fail(f"store.root {str(root)!r} holds no runs/ folder: no store there (set store.root=DIR)")
    from .report.render import runs

    table, lines, skipped = runs(root, every)
    if table.row_count or not lines:  # a large store whose runs are all done: its count alone
        out.print(table)
    for line in lines:
        out.print(line, highlight=False, markup=False)
    _note_skipped(skipped)


def _note_skipped(skipped) -> None:
    from .store import describe_skipped

    err = Console(stderr=True, soft_wrap=True)
    for line in describe_skipped(skipped):
        err.print(f"note: {line}", highlight=False, markup=False)


def _check_out(path: Optional[Path], folder: bool) -> None:
    """``--out``, before any work: a folder for figures; for a page or a table a new file or a regular one to
    replace (never a device, a FIFO, a socket), in a folder this user can write. Else one line."""
    if path is None:
        return
    if folder and path.exists() and not path.is_dir():
        fail(f"--out {path} is a file; plot writes a PNG and a PDF into a folder: give a folder")
    if not folder and path.is_dir():
        fail(f"--out {path} is a folder; give a file name, e.g. --out {path / 'out.txt'}")
    if not folder and path.exists() and not path.is_file():
        kind = next((k for k, test in _KINDS if test(path)), "not a regular file")
        fail(f"--out {path} is {kind}; --out writes a new file or replaces a regular one")
    target = (path if folder else path.parent).absolute()
    existing = next(p for p in [target, *target.parents] if p.exists())  # the folder the write creates things in
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"--out {path}: {existing} is not writable (read-only or not this user's); give another path")


_KINDS = (
    ("a character device", Path.is_char_device),
    ("a block device", Path.is_block_device),
    ("a FIFO", Path.is_fifo),
    ("a socket", Path.is_socket),
)


def _write_out(path: Path, text: str) -> None:
    """``--out``'s file, whole or not at all (a full disk: one line; a file there before is kept)."""
    from .files import atomic_write

    try:
        atomic_write(path, text.encode())
    except OSError as e:
        fail(f"--out: {one_line(e)}", 1)  # the error names the file
    out.print(f"wrote {path}")


def _filters(args: Optional[list[str]]) -> tuple[str, dict]:
    """``key=value`` or ``key=a,b`` filters over run records (numbers typed as such); ``store.root=DIR`` apart."""
    from .presets import typed

    root, filters = "results", {}
    for arg in args or []:
        key, sep, value = arg.partition("=")
        if not sep:
            fail(f"filter {arg!r} is not key=value (e.g. data=synthetic budget=smoke seed=0)")
        if key == "store.root":
            root = os.path.expanduser(value)
            continue
        values = [typed(v) for v in value.split(",")]
        filters[key] = values if len(values) > 1 else values[0]
    return root, filters


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
    from .report.render import FORMATS, paper_table
    from .report.render import text as as_text
    from .report.tables import build, records

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    _check_out(out_file, folder=False)
    root, where = _filters(filters)
    runs = records(root)
    _note_skipped(runs.attrs["skipped"])
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
        _write_out(out_file, text)


@app.command()
def compare(
    axis: str = typer.Argument(..., help="axis=setting1,setting2[,…], e.g. unit=original,full_preact"),
    filters: Optional[list[str]] = typer.Argument(None, help="key=value filters for the other axes; store.root=DIR"),
    fmt: str = typer.Option("rich", "--format", help="rich | md | latex | csv"),
    as_json: bool = typer.Option(False, "--json", help="The rows and verdicts as one JSON object."),
):
    """Settings along one axis over seeds: n, medians, mean ± std, Δ with a BCa bootstrap CI, an exact permutation
    test's p (paired over seeds when they match), and a verdict that says what the number of seeds allows."""
    from .report.compare import compare as run_compare
    from .report.render import FORMATS, comparison
    from .report.tables import records

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    key, sep, values = axis.partition("=")
    if not sep or "," not in values:
        fail(f"the axis {axis!r} must be key=a,b[,…] (e.g. unit=original,full_preact)")
    from .presets import typed

    root, where = _filters(filters)
    settings = [typed(v) for v in values.split(",")]
    runs = records(root)
    _note_skipped(runs.attrs["skipped"])
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
    from .report.figures import plot as draw
    from .report.figures import signal
    from .store import scan

    _check_out(out_dir, folder=True)
    if name == "signal":
        try:
            files = signal(filters or [], out_dir)
        except (ValueError, LookupError) as e:
            fail(one_line(e))
        out.print("wrote " + ", ".join(map(str, files)))
        return
    root, where = _filters(filters)
    _note_skipped(scan(root)[1])
    try:
        files = draw(name, root, where, out_dir)
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
    from .progress import doing
    from .report.page import report as render
    from .store import scan

    _check_out(out_file, folder=False)
    root, where = _filters(filters)
    _note_skipped(scan(root)[1])
    try:
        with doing(f"report: reading {root}, laying out the tables, testing the verdicts, drawing the figures"):
            html = render(root, where)
    except (ValueError, LookupError) as e:
        fail(str(e))
    _write_out(out_file, html)


@app.command()
def bench(
    overrides: Optional[list[str]] = OVERRIDES,
    models: str = typer.Option("resnet20", help="Comma list of model presets."),
    compile_modes: str = typer.Option("graph", "--compile", help="Comma list: none, graph, inductor."),
    precisions: str = typer.Option("auto", "--precision", help="Comma list: auto (bf16 on CUDA), bf16, fp32."),
    jobs: str = typer.Option("1", help="Comma list of concurrent job (process) counts, e.g. 1,2,4,8."),
    streams: str = typer.Option("1", help="Comma list: steps run at once in each job, a CUDA stream each."),
    seeds: str = typer.Option("1", help="Comma list: seeds stacked into one network in each step (torch.func)."),
    steps: int = typer.Option(30, help="Timed steps per job."),
    warmup: int = typer.Option(10, help="Untimed steps first (compilation and graph capture happen here)."),
    baseline: bool = typer.Option(True, help="Also time the plain DataLoader + eager fp32 loop."),
    loader_workers: int = typer.Option(4, help="DataLoader workers of the baseline."),
    peak: Optional[float] = typer.Option(None, help="Peak TFLOP/s for MFU; default: measured with a dense matmul."),
    as_json: bool = typer.Option(False, "--json", help="The figures as JSON."),
    worker: bool = typer.Option(False, hidden=True),
    barrier: Optional[str] = typer.Option(None, hidden=True),
):
    """Training throughput: images/s, ms/step, MFU, peak memory and compile time; ratio to a plain baseline loop."""
    from .bench import measure, measure_peak_tflops, time_ours
    from .report.render import bench as render
    from .step import TrainStep, check_together, resolve_device

    counts = {}
    for name, text in (("jobs", jobs), ("streams", streams), ("seeds", seeds)):
        if not all(v.isdigit() and int(v) > 0 for v in text.split(",")):
            fail(f"--{name} {text!r} must be a comma list of positive integers, e.g. 1,2,4")
        counts[name] = [int(v) for v in text.split(",")]

    base = ["data=synthetic", "data.synthetic_train=5120", "data.synthetic_test=128", *(overrides or [])]
    if worker:
        folder, k = barrier.rsplit(":", 1) if barrier else ("", "0")
        cfg = compose_or_fail(base)
        timed = time_ours(cfg, steps, warmup, (Path(folder), int(k)) if barrier else None, int(streams), int(seeds))
        print(json.dumps(timed))
        return
    for mode in compile_modes.split(","):
        try:
            check_together(compose_or_fail([*base, f"train.compile={mode}"]), max(counts["seeds"]))
        except ValueError as e:
            fail(str(e))
    cfg = compose_or_fail(base)
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as e:
        fail(str(e))
    captured = device.type == "cuda" and any(m != "none" for m in compile_modes.split(","))  # CUDA graphs only
    if warmup < 0:
        fail(f"--warmup {warmup} must be 0 or more")
    if captured and warmup <= TrainStep.WARMUP:
        fail(f"--warmup {warmup} must exceed the {TrainStep.WARMUP} eager steps before the graph capture (CUDA)")
    peak = peak or measure_peak_tflops(device)
    for model, mode, precision in itertools.product(models.split(","), compile_modes.split(","), precisions.split(",")):
        compose_or_fail([*base, f"model={model}", f"train.compile={mode}", f"train.precision={precision}"])
    grid = {"models": models.split(","), "compile": compile_modes.split(","), "precision": precisions.split(",")}
    workers = loader_workers if baseline else None
    rows = measure(base, list(overrides or []), grid | counts, steps, warmup, workers, peak)
    device_name = torch_device_name(device)
    if as_json:
        print(json.dumps({"device": device_name, "peak_tflops": peak, "rows": rows}))
        return
    title = f"training throughput on {device_name} (batch {cfg.train.batch_size}; peak {peak:.3g} TFLOP/s)"
    out.print(render(rows, title))


def torch_device_name(device) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
