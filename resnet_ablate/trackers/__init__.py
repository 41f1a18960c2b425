"""Experiment trackers (``logger=tensorboard|wandb|mlflow``, or a list): each run also sends its metrics.jsonl rows
(and its gradient-flow norms) to them, with its config axes as hyper-parameters and its final test error.

The store stays the record: a tracker is a copy. A tracker that fails (a server down, a full disk) is dropped with
one warning and the run goes on. A resumed run continues its own tracker runs (the ids are kept in the run
directory's ``trackers.json``) and sends only the rows the tracker does not hold: those up to its checkpoint
that it lost come from the store, those after it are not sent twice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..config import key_fields
from ..files import read_json, write_json
from ..record import read_jsonl
from ..registry import Registry

# logger name -> tracker class: ``Tracker(cfg, directory, start, state)`` with ``kind``, ``state`` (kept in
# trackers.json to continue its run), ``logged`` (the last step it holds), ``log``, ``finish`` and ``close``; a class
# may also have ``check(cfg)`` (its settings), ``open_sweep(cfg, preset, group) -> parent | None`` and
# ``close_sweep(cfg, parent, ok)``. Each name is the ``logger`` section its YAML (conf/logger/) fills, the package
# it needs and the extra that installs it.
TRACKERS = Registry("logger")


def chosen(cfg: DictConfig) -> list[str]:
    return [k for k in TRACKERS if cfg.logger.get(k) is not None]


def check_installed(cfg: DictConfig) -> None:
    """Each chosen tracker's package is installed and its settings are ones it takes (its ``check``), else a
    one-line ValueError."""
    for kind in chosen(cfg):
        if importlib.util.find_spec(kind) is None:
            raise ValueError(f"logger={kind} needs the {kind} package: pip install 'resnet-ablate[{kind}]'")
        getattr(TRACKERS[kind], "check", lambda cfg: None)(cfg)


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """Every axis of the cell (``axes.AXES``; a shortcut parameter only where its kind reads it, lists as text), the
    budget its schedule follows and its sweep: what a tracker's hyper-parameter view compares runs by."""
    from ..axes import columns
    from ..record import budget_of

    d = key_fields(cfg)
    values = {k: str(list(v)) if isinstance(v, tuple) else v for k, v in columns(d).items() if v is not None}
    return {**values, "budget": budget_of(d), "sweep": cfg.logger.group or ""}


def scalars(row: dict, norms: list[float] | None) -> dict[str, float]:
    """A metrics.jsonl row (and gradient-flow norms) as tracker scalars, keyed by name; the step is the iteration."""
    out = {k: float(v) for k, v in row.items() if k != "iteration" and isinstance(v, (int, float))}
    out.update({f"grad_flow/unit_{i:03d}": float(n) for i, n in enumerate(norms or [])})
    return out


class Trackers:
    """The trackers of one run. Every call is guarded: a tracker that raises is dropped, said once on stdout (the
    worker's train.log), and kept in ``errors`` for result.json."""

    def __init__(self) -> None:
        """No trackers: what a run holds before ``open``, and on the ranks of a DDP run other than 0."""
        self.active: list = []
        self.errors: dict[str, str] = {}  # for result.json: the trackers dropped, and why
        self.step = 0

    @classmethod
    def open(cls, cfg: DictConfig, directory: Path, start: int) -> Trackers:
        """The chosen trackers of a run starting at iteration ``start`` (continuing their runs when it is > 0)."""
        trackers = cls()
        trackers.step = start
        state = (read_json(directory / "trackers.json") or {}) if start else {}
        for kind in chosen(cfg):
            trackers._guard(
                kind, lambda kind=kind: trackers.active.append(TRACKERS[kind](cfg, directory, start, state))
            )
        if trackers.active:
            write_json(directory / "trackers.json", {t.kind: t.state for t in trackers.active})
        if start:
            trackers.backfill(directory, start)
        return trackers

    def backfill(self, directory: Path, start: int) -> None:
        """Send the rows up to the checkpoint that a tracker does not hold (a W&B service killed before it wrote
        them, a server that was down) from the store, in order, before the run goes on."""
        rows = {r["iteration"]: r for r in read_jsonl(directory / "metrics.jsonl")}
        norms = {r["iteration"]: r.get("norms") for r in read_jsonl(directory / "grad_flow.jsonl")}
        for step in sorted(s for s in {*rows, *norms} if isinstance(s, int) and s <= start):
            self.log(step, rows.get(step, {}), norms.get(step))

    def log(self, step: int, row: dict, norms: list[float] | None = None) -> None:
        self.step = step
        values = scalars(row, norms)
        for t in list(self.active):
            if step > t.logged:  # rows a resumed run recomputes, which the tracker already holds, are not sent
                self._guard(t.kind, lambda t=t: t.log(step, values))

    def finish(self, status: str, test_error: float | None) -> None:
        for t in list(self.active):
            self._guard(t.kind, lambda t=t: t.finish(status, test_error))
        self.active = []

    def close(self, reason: str) -> None:
        """The run stops without ending (a stop request, an error): flush, and mark the tracker runs so."""
        for t in list(self.active):
            self._guard(t.kind, lambda t=t: t.close(reason))
        self.active = []

    def _guard(self, kind: str, call) -> None:
        try:
            call()
        except Exception as e:
            self.active = [t for t in self.active if t.kind != kind]
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.errors[kind] = f"stopped at iteration {self.step}: {message}"
            print(f"warning: logger={kind} failed ({message}); it is dropped and the run goes on", flush=True)


def sweep_group(preset: str, arguments: list[str]) -> str:
    """A sweep's name among its runs: the preset and the overrides that shape its cells (not its seeds, paths,
    launcher or trackers), e.g. ``table2 model.depth=20 data=synthetic``."""
    skip = ("store.", "launcher.", "logger", "hydra", "seed=", "sweep=", "+", "~")
    name = " ".join([preset, *(a for a in arguments if not a.startswith(skip))])
    return name.translate({ord(c): None for c in "'\"\\"})  # a display name: no quoting to carry through packs


def sweep_overrides(preset: str, group: str, parent: str | None) -> list[str]:
    """What each cell of a sweep is told of it."""
    return [f"logger.sweep={preset}", f"logger.group='{group}'", *([f"logger.parent={parent}"] if parent else [])]


def open_sweep(cfg: DictConfig, preset: str, arguments: list[str]) -> tuple[str, str | None]:
    """The sweep's group and the parent run a chosen tracker keeps for it (MLflow's; the same each time the same
    sweep runs), or None (its cells' runs then have no parent)."""
    group = sweep_group(preset, arguments)
    for kind in chosen(cfg):
        opener = getattr(TRACKERS[kind], "open_sweep", None)
        if opener is not None:
            return group, opener(cfg, preset, group)
    return group, None


def close_sweep(cfg: DictConfig, parent: str | None, ok: bool) -> None:
    for kind in chosen(cfg):
        closer = getattr(TRACKERS[kind], "close_sweep", None)
        if closer is not None and parent is not None:
            closer(cfg, parent, ok)


# isort: off
from . import tensorboard, wandb, mlflow  # noqa: E402, F401  (each registers its class, in this order)
# isort: on
