"""Live displays: one training run (a progress bar) and a sweep (a table of running cells, with overall ETA).
Both degrade to plain lines when the output is not a terminal."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import store

console = Console(stderr=True, soft_wrap=True)


def _fmt(row: dict | None) -> str:
    if not row:
        return ""
    return (
        f"lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  test err {100 * row['test_error']:.2f}%  "
        f"{row['images_per_s']:.0f} img/s"
    )


def print_evaluation(iteration: int, row: dict | None) -> None:
    """A plain line per evaluation (rank 0 of a multi-process run, where a live bar cannot reach)."""
    if row is not None:
        console.print(f"it {iteration}  {_fmt(row)}", highlight=False)


class RunProgress:
    """``progress(iteration, row)`` callback for one run: a rich bar, or a line per evaluation."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
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
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def __call__(self, iteration: int, row: dict | None) -> None:
        if row is None:
            self.bar.update(self.task, completed=iteration)
            return
        self.bar.update(self.task, completed=iteration, info=_fmt(row))
        if not console.is_terminal:
            console.print(f"{self.label} it {iteration}/{self.total}  {_fmt(row)}", highlight=False)


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
            row = (store.read_jsonl(self.jobs[i][1] / "metrics.jsonl") or [None])[-1]
            console.print(
                f"[{self._done()}/{len(self.jobs)}] {status:8s} {self._label(i)}  {_fmt(row)}", highlight=False
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
            rows = store.read_jsonl(directory / "metrics.jsonl") if state == "running" else []
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
