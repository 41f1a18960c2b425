"""The command line: thin wrappers that parse, then call one function of the package per command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproduce and extend the ablations of 'Identity Mappings in Deep Residual Networks'.")
out = Console()
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
def describe(overrides: Optional[list[str]] = OVERRIDES, as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Architecture summary: parameters, multiply-adds, weight layers, units per stage, the unit's op order."""
    from .models import describe as summary

    cfg = compose_or_fail(overrides or [])
    try:
        info = summary(cfg)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    out.print(table)


@app.command()
def train(overrides: Optional[list[str]] = OVERRIDES, quiet: bool = typer.Option(False, help="No progress display.")):
    """Train one cell in the foreground (resumes it if partial; skips it if ended, unless store.rerun says so)."""
    from . import store
    from .progress import RunProgress
    from .sweep import run_cell

    cfg = compose_or_fail(overrides or [])
    try:
        store.check_writable(cfg.store.root)
        from .models import build_model

        build_model(cfg)  # fail on a bad architecture before touching the store
    except (ValueError, PermissionError) as e:
        fail(str(e))
    label = " ".join(overrides or []) or "defaults"
    try:
        if quiet:
            result = run_cell(cfg)
        else:
            with RunProgress(cfg.train.iterations, label) as progress:
                result = run_cell(cfg, progress)
    except (FileNotFoundError, RuntimeError) as e:
        fail(str(e).splitlines()[0], 1)
    err = result.get("test_error")
    out.print(f"{result['status']}: {store.run_dir(cfg)}" + (f"  test error {100 * err:.2f}%" if err is not None else ""),
              highlight=False)


@app.command()
def sweep(
    preset: str = typer.Argument(..., help="table1 … table5, figure1, figure3, figure6 (conf/sweep/)"),
    overrides: Optional[list[str]] = OVERRIDES,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and an estimate of GPU-hours; run nothing."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun failed and diverged cells."),
    force: bool = typer.Option(False, "--force", help="Recompute every cell."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop the sweep at the first failing cell."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma list of GPU ids for the local launcher."),
    tflops: float = typer.Option(20.0, help="Effective training TFLOP/s per GPU for the estimate (see BENCHMARKS.md)."),
):
    """Run every cell of a preset grid (skip ended cells, resume partial ones)."""
    from . import store
    from .sweep import plan

    args = list(overrides or [])
    args += ["store.rerun=all"] if force else ["store.rerun=failed"] if retry_failed else []
    args += ["launcher.fail_fast=true"] if fail_fast else []
    args += [f"launcher.gpus='{gpus}'"] if gpus else []
    try:
        cells = plan(preset, args)
    except Exception as e:
        fail(one_line(e))
    if dry_run:
        _print_cells(cells, tflops)
        return
    try:
        store.check_writable(cells[0].cfg.store.root)
    except PermissionError as e:
        fail(str(e))
    from .sweep import task

    sys.argv = ["resnet-ablate", "-m", f"sweep={preset}", *args]
    try:
        task()
    except SystemExit as e:
        if e.code:
            fail(f"the sweep's launcher failed (exit {e.code}); see the messages above")
    except KeyboardInterrupt:
        fail("interrupted: ended cells and the latest checkpoints are kept; rerun the same command to resume", 130)
    _print_cells(cells, None)


def _print_cells(cells, tflops: Optional[float]) -> None:
    from omegaconf import OmegaConf

    from .models import build_model, count_macs

    macs: dict[str, int] = {}
    table = Table("cell", "status", "run directory", *(["GPU-h"] if tflops else []), title=f"{len(cells)} cells")
    hours = 0.0
    counts: dict[str, int] = {}
    for c in cells:
        status = c.status
        counts[status] = counts.get(status, 0) + 1
        row = [" ".join(o for o in c.overrides if not o.startswith(("store.", "launcher."))), status, str(c.directory)]
        if tflops:
            arch = OmegaConf.to_yaml(c.cfg.model) + OmegaConf.to_yaml(c.cfg.unit) + OmegaConf.to_yaml(c.cfg.shortcut)
            if arch not in macs:
                macs[arch] = count_macs(build_model(c.cfg), 32 if c.cfg.data.name != "imagenet" else c.cfg.data.image_size)
            h = 6 * macs[arch] * c.cfg.train.batch_size * c.cfg.train.iterations / (tflops * 1e12) / 3600
            hours += h if status not in ("done", "diverged") else 0
            row.append(f"{h:.2f}")
        table.add_row(*row)
    out.print(table)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out.print(f"{len(cells)} cells: {summary}" + (f"; about {hours:.1f} GPU-hours left at {tflops:g} TFLOP/s" if tflops else ""),
              highlight=False)


@app.command()
def status(preset: Optional[str] = typer.Argument(None, help="A sweep preset; omit for every run in the store."),
           overrides: Optional[list[str]] = OVERRIDES):
    """What is done, running, failed or pending, read from the store."""
    from omegaconf import OmegaConf

    from . import store
    from .sweep import plan

    if preset:
        try:
            cells = plan(preset, list(overrides or []))
        except Exception as e:
            fail(one_line(e))
        _print_cells(cells, None)
        return
    cfg = compose_or_fail(list(overrides or []))
    dirs = sorted(Path(cfg.store.root).glob("runs/*"))
    table = Table("run", "status", "model", "unit", "shortcut", "data", "seed", "test err")
    for d in dirs:
        result = store.read_json(d / "result.json") or {}
        c = result.get("config") or (OmegaConf.to_container(OmegaConf.load(d / "config.yaml"))
                                     if (d / "config.yaml").exists() else {})
        err = result.get("test_error")
        table.add_row(d.name, store.cell_status(d), c.get("model", {}).get("name", ""), c.get("unit", {}).get("name", ""),
                      str(c.get("shortcut", {}).get("kind", "")), str(c.get("data", {}).get("name", "")),
                      str(c.get("seed", "")), f"{100 * err:.2f}%" if err is not None else "")
    out.print(table)
