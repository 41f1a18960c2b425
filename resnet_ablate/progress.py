"""Live displays: one training run (a progress bar) and a sweep (a table of running cells, with overall ETA).
Both degrade to plain lines when the output is not a terminal."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import store
from .record import read_jsonl

console = Console(stderr=True, soft_wrap=True)
HEARTBEAT = 30.0  # seconds: outside a terminal, a line at least this often while a run trains
PATIENCE = 5.0  # seconds a step runs before it says what it is doing (outside a terminal)


@contextlib.contextmanager
def doing(what: str):
    """Say what a step that may take a while is doing: a spinner on a terminal; otherwise a line on stderr once it
    has run ``PATIENCE`` seconds (a quick step, or a quick one-line error, prints nothing more)."""
    if console.is_terminal:
        with console.status(what):
            yield
        return
    timer = threading.Timer(PATIENCE, lambda: console.print(f"{what} …", highlight=False))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _fmt(row: dict | None) -> str:
    if not row:
        return ""
    return (
        f"lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  test err {100 * row['test_error']:.2f}%  "
        f"{row['images_per_s']:.0f} img/s"
    )


def print_evaluation(label: str, total: int, iteration: int, row: dict | None) -> None:
    """A plain line per evaluation, as a run's bar prints outside a terminal (rank 0 of a multi-process run, where
    a live bar cannot reach: ``functools.partial(print_evaluation, label, total)``)."""
    if row is not None:
        console.print(f"{label} it {iteration}/{total}  {_fmt(row)}", highlight=False)


def run_label(cells: list) -> str:
    """What a run's progress lines name: its key, and the seeds stacked with it."""
    return store.run_key(cells[0]) + (f" (+{len(cells) - 1} seeds stacked)" if len(cells) > 1 else "")


class RunProgress:
    """``progress(iteration, row)`` callback for one run: a rich bar; outside a terminal, a line when it starts, per
    evaluation, and at least every ``HEARTBEAT`` seconds between them (with the rate and the time to go)."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
        self.said = self.since = time.monotonic()
        self.first: int | None = None  # the iteration it started (or resumed) from
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.bar.add_task(label, total=total, info="")

    def __enter__(self):
        self.bar.__enter__()
        self._line(f"starting: {self.total} iterations")
        return self

    def _line(self, text: str) -> None:
        if not console.is_terminal:
            console.print(f"{self.label} {text}", highlight=False)
            self.said = time.monotonic()

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def __call__(self, iteration: int, row: dict | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first, self.since = iteration, now
        if row is not None:
            self.bar.update(self.task, completed=iteration, info=_fmt(row))
            if not console.is_terminal:
                print_evaluation(self.label, self.total, iteration, row)
                self.said = now
            return
        self.bar.update(self.task, completed=iteration)
        if now - self.said >= HEARTBEAT and iteration > self.first:
            rate = (iteration - self.first) / (now - self.since)
            left = (self.total - iteration) / rate / 60
            self._line(f"it {iteration}/{self.total}  {rate:.2f} it/s, about {left:.1f} min to go")


class SweepDisplay:
    """The local launcher's view: every running cell's last evaluation, and the sweep's progress and ETA."""

    def __init__(self, jobs: list[tuple[str, Path, int, int]]):
        """jobs: (label, run directory, iterations, batch size) per cell."""
        self.jobs = jobs
        self.labels = [j[0] for j in jobs]
        self.state: dict[int, str] = {}
        self.slot: dict[int, str | None] = {}
        self.started = time.time()
        self.lock = threading.Lock()
        self.live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.refresh()
            self.live.__exit__(*exc)

    def _label(self, i: int) -> str:
        return self.labels[i]

    def start(self, i: int, slot: str | None) -> None:
        with self.lock:
            self.state[i], self.slot[i] = "running", slot
        if not self.live:
            console.print(
                f"[{self._done()}/{len(self.jobs)}] start  {self._label(i)}  on {'GPU ' + slot if slot else 'CPU'}",
                highlight=False,
            )

    def finish(self, i: int, status: str) -> None:
        with self.lock:
            self.state[i] = status
        if not self.live:
            row = (read_jsonl(self.jobs[i][1] / "metrics.jsonl") or [None])[-1]
            console.print(
                f"[{self._done()}/{len(self.jobs)}] {status:8s} {self._label(i)}  {_fmt(row)}  ·  {self.view()[0]}",
                highlight=False,
            )

    def _done(self) -> int:
        return sum(s != "running" for s in self.state.values())

    def refresh(self) -> None:
        if self.live:
            self.live.update(Group(*self.view()))

    def view(self) -> tuple[str, Table]:
        """The headline (cells ended, elapsed, ETA) and a row per running cell."""
        table = Table("cell", "device", "progress", "loss", "test err", "img/s", box=None)
        remaining = rate = ended = 0.0
        for i, (_, directory, total, batch) in enumerate(self.jobs):
            state = self.state.get(i, "pending")
            if state not in ("running", "pending"):
                ended += total
                continue
            rows = read_jsonl(directory / "metrics.jsonl") if state == "running" else []
            row = rows[-1] if rows else None
            done = row["iteration"] if row else 0
            remaining += total - done
            if state == "running":
                rate += row["images_per_s"] / batch if row else 0.0
                table.add_row(
                    self._label(i),
                    f"GPU {self.slot[i]}" if self.slot.get(i) else "CPU",
                    f"{done}/{total}",
                    f"{row['train_loss']:.4f}" if row else "",
                    f"{100 * row['test_error']:.2f}%" if row else "",
                    f"{row['images_per_s']:.0f}" if row else "",
                )
        elapsed = (time.time() - self.started) / 60
        rate = rate or ended / (60 * elapsed)  # no evaluation yet in the running cells: the sweep's rate so far
        eta = f"{remaining / rate / 60:.1f} min" if rate else "?"
        head = f"cells {self._done()}/{len(self.jobs)} ended  ·  elapsed {elapsed:.1f} min  ·  ETA {eta}"
        return head, table
