"""The commands that build and train: describe, train, sweep, status, bench. Each parses, calls the package and
prints what ``report/render.py`` gives."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import OVERRIDES, app, compose_or_fail, fail, note_skipped, one_line, out


@app.command()
def describe(
    overrides: Optional[list[str]] = OVERRIDES, as_json: bool = typer.Option(False, "--json", help="One JSON object.")
):
    """Architecture summary: parameters, multiply-adds, weight layers, units per stage, the unit's op order."""
    from ..models import describe as summary
    from ..report.render import architecture_table
    from ..validate import check_architecture, check_values

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
    out.print(architecture_table(info))


@app.command()
def train(overrides: Optional[list[str]] = OVERRIDES, quiet: bool = typer.Option(False, help="No progress display.")):
    """Train one cell in the foreground (resumes it if partial; skips it if ended, unless store.rerun says so);
    with launcher.seeds=[…] that cell's seeds, stacked into one network."""
    from .. import store
    from ..progress import RunProgress, run_label
    from ..sweep import run_cells, seed_cells
    from ..train import TrainingError
    from ..validate import check_cells
    from ..workers import watch_parent

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
    from .. import store
    from ..config import home_expanded
    from ..grid import plan
    from ..preflight import check_launcher
    from ..progress import doing
    from ..step import check_together
    from ..validate import check_cells

    args = home_expanded(overrides or [])
    try:
        check_launcher(args)
    except ValueError as e:
        fail(str(e))
    args += flag_overrides(force, retry_failed, fail_fast, gpus)
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
    _multirun([f"sweep={preset}", *args, *absolute_paths(cells[0].cfg)])
    _print_cells(cells, None)
    problem = unended([c.status for c in cells])
    if problem:
        fail(problem, 1)


def _multirun(args: list[str]) -> None:
    """Hydra's multirun of ``sweep.task`` over ``args``, as ``python -m resnet_ablate.sweep -m ARGS`` runs it:
    ``hydra.main`` is Hydra's one public entry point that runs a sweeper and a launcher, so it is called with these
    arguments. An interrupt (Ctrl-C, SIGTERM, SIGHUP) or a launcher's failure is one line and an exit code."""
    from hydra.core.global_hydra import GlobalHydra

    from ..sweep import task

    GlobalHydra.instance().clear()  # planning composed in this process; the sweep is Hydra's own run
    sys.argv = ["resnet-ablate", "-m", *args]
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
    from ..progress import doing
    from ..report.render import sweep_cells

    with doing("counting each architecture's multiply-adds for the estimate"):
        table, summary = sweep_cells(cells, tflops)
    out.print(table)
    out.print(summary, highlight=False, markup=False)


@app.command()
def status(
    preset: Optional[str] = typer.Argument(None, help="A sweep preset; omit for every run in the store."),
    overrides: Optional[list[str]] = OVERRIDES,
    every: bool = typer.Option(False, "--all", help="List every run (a store of over 100 lists all but done ones)."),
):
    """What is done, running, failed or pending, read from the store."""
    from ..config import home_expanded
    from ..grid import plan

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
    from ..report.render import runs

    table, lines, skipped = runs(root, every)
    if table.row_count or not lines:  # a large store whose runs are all done: its count alone
        out.print(table)
    for line in lines:
        out.print(line, highlight=False, markup=False)
    note_skipped(skipped)


def flag_overrides(force: bool, retry_failed: bool, fail_fast: bool, gpus: str | None) -> list[str]:
    """The sweep command's flags as overrides."""
    from ..grid import quote

    rerun = ["store.rerun=all"] if force else ["store.rerun=failed"] if retry_failed else []
    fast = ["launcher.fail_fast=true"] if fail_fast else []
    return [*rerun, *fast, *([f"launcher.gpus={quote(gpus)}"] if gpus else [])]


def absolute_paths(cfg) -> list[str]:
    """The store and the data as absolute paths, quoted: cells may run in other working directories (SLURM, Ray)."""
    from ..grid import quote

    paths = [("store.root", cfg.store.root), *([("data.root", cfg.data.root)] if cfg.data.root else [])]
    return [f"{key}={quote(str(Path(value).resolve()))}" for key, value in paths]


def unended(statuses: list) -> str | None:
    """Why a sweep exits 1: cells that failed or did not end (a killed worker leaves no result); None when every
    cell ended. Cells another process is training are not this sweep's to judge."""
    from ..status import Status

    failed = statuses.count(Status.failed)
    left = statuses.count(Status.pending) + statuses.count(Status.partial)
    if not (failed or left):
        return None
    return (
        f"{failed} cell(s) failed and {left} did not end (a worker was killed, or never started); "
        "see their train.log; the same command retries and resumes them"
    )


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
):
    """Training throughput: images/s, ms/step, MFU, peak memory and compile time; ratio to a plain baseline loop."""
    from ..bench import BASE, measure, measure_peak_tflops
    from ..report.render import bench as render

    grid = {"models": models.split(","), "compile": compile_modes.split(","), "precision": precisions.split(",")}
    grid |= {name: _counts(name, text) for name, text in (("jobs", jobs), ("streams", streams), ("seeds", seeds))}
    cfg, device = _bench_checks([*BASE, *(overrides or [])], grid, warmup)
    peak = peak or measure_peak_tflops(device)
    rows = measure(list(overrides or []), grid, steps, warmup, loader_workers if baseline else None, peak)
    device_name = torch_device_name(device)
    if as_json:
        print(json.dumps({"device": device_name, "peak_tflops": peak, "rows": rows}))
        return
    title = f"training throughput on {device_name} (batch {cfg.train.batch_size}; peak {peak:.3g} TFLOP/s)"
    out.print(render(rows, title))


def _counts(name: str, text: str) -> list[int]:
    if not all(v.isdigit() and int(v) > 0 for v in text.split(",")):
        fail(f"--{name} {text!r} must be a comma list of positive integers, e.g. 1,2,4")
    return [int(v) for v in text.split(",")]


def _bench_checks(base: list[str], grid: dict[str, list], warmup: int):
    """Every setting the benchmark times composes and can run here, before any timing (else one line); the base
    config and the device."""
    from ..distributed import resolve_device
    from ..step import TrainStep, check_together

    for mode in grid["compile"]:
        try:
            check_together(compose_or_fail([*base, f"train.compile={mode}"]), max(grid["seeds"]))
        except ValueError as e:
            fail(str(e))
    cfg = compose_or_fail(base)
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as e:
        fail(str(e))
    captured = device.type == "cuda" and any(m != "none" for m in grid["compile"])  # CUDA graphs only
    if warmup < 0:
        fail(f"--warmup {warmup} must be 0 or more")
    if captured and warmup <= TrainStep.WARMUP:
        fail(f"--warmup {warmup} must exceed the {TrainStep.WARMUP} eager steps before the graph capture (CUDA)")
    for model, mode, precision in itertools.product(grid["models"], grid["compile"], grid["precision"]):
        compose_or_fail([*base, f"model={model}", f"train.compile={mode}", f"train.precision={precision}"])
    return cfg, device


def torch_device_name(device) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
