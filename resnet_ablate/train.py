"""One grid cell trained with the paper's recipe (``recipe.py``): resume from its checkpoint, then step, evaluate,
record and checkpoint until the last iteration; a diverged run is a result. Seeds of one cell may train together
in one process (``stack.py``) and one run may span several GPUs (``distributed.py``): the loop below is the same.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing.spawn import ProcessException

from . import checkpoint, distributed, record, store
from .config import key_fields
from .data import for_seed, make_data
from .distributed import resolve_device
from .files import WriteError
from .models import zeroed
from .progress import print_evaluation
from .recipe import evaluate, gradient_flow, lr_at
from .record import read_jsonl, read_result
from .stack import seed_state, stacked_state
from .status import Status
from .step import build
from .trackers import Trackers

OnProgress = Callable[[int, dict | None], None]  # (iterations done, the evaluation's row or None)


class TrainingError(RuntimeError):
    """Training itself raised (after set-up succeeded): recorded against the cell as ``failed``."""


def train(cfg: DictConfig, directory: Path, progress: OnProgress | None = None) -> dict[str, Any]:
    """Train the cell of ``cfg`` in ``directory`` (resuming from its checkpoint) and write its result.json;
    with ``train.gpus`` > 1 in that many processes."""
    if cfg.train.gpus > 1 and "WORLD_SIZE" not in os.environ:
        if cfg.train.batch_size % cfg.train.gpus:
            raise ValueError(f"train.batch_size {cfg.train.batch_size} does not split over train.gpus={cfg.train.gpus}")
        plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        lines = functools.partial(print_evaluation, directory.name, cfg.train.iterations) if progress else None
        try:
            distributed.spawn(cfg.train.gpus, train_seeds, [plain], [directory], lines)
        except ProcessException as e:  # a rank raised, or died
            raise _rank_error(e) from None
        return read_result(directory)
    return train_seeds([cfg], [directory], progress)[0]


def _rank_error(e: Exception) -> Exception:
    """A rank's failure as one process's would be: a ``TrainingError`` (recorded against the cell as ``failed``)
    where training raised one, else the rank's last line as a ``RuntimeError``. The rank torch reports is the first
    it saw end: the one that failed, or another that lost its connection to it."""
    last = next((line for line in reversed(str(e).splitlines()) if line.strip()), str(e))
    rank = getattr(e, "error_index", "?")
    if "TrainingError: " in last:
        return TrainingError(f"rank {rank}: {last.split('TrainingError: ', 1)[1]}")
    return RuntimeError(f"rank {rank} failed: {last}")


def train_seeds(cfgs: list[DictConfig], directories: list[Path], progress: OnProgress | None = None) -> list[dict]:
    """Train cells that differ only in their seed, and whose checkpoints are at one iteration, together in this
    process; each resumes from and writes to its own directory, and its records, checkpoints and result are what
    it would have alone. Errors before the first step are the caller's to report; errors while training are
    raised as ``TrainingError`` (a failed write to the store as itself)."""
    training = Training(cfgs, directories, progress)
    try:
        with stop_requests(training.group.world == 1) as stop:
            training.loop(stop)
    except BaseException as e:
        for r in training.runs:  # stopped or failed: the trackers of the runs that did not end say so
            r.trackers.close("stopped" if isinstance(e, (SystemExit, KeyboardInterrupt)) else "failed")
        if isinstance(e, WriteError) or not isinstance(e, Exception):
            raise
        raise TrainingError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    for r in training.runs:
        if r.status is Status.running:
            training.finish(r, Status.done)
    return [r.result for r in training.runs]


@dataclass
class Run:
    """One network's share of a ``Training``."""

    cfg: DictConfig
    directory: Path
    data: Any
    model: torch.nn.Module
    restarts: list[int] = field(default_factory=list)
    trackers: Trackers = field(default_factory=Trackers)  # the experiment trackers it also logs to (rank 0 only)
    row: dict = field(default_factory=dict)  # the latest evaluation
    status: Status = Status.running
    diverged_at: int | None = None
    result: dict = field(default_factory=dict)


class Training:
    """The state of one training process: its networks (``Run``), optimiser, step, and where it stands."""

    def __init__(self, cfgs: list[DictConfig], directories: list[Path], progress: OnProgress | None):
        self.train_cfg, self.progress = cfgs[0].train, progress
        self.group = distributed.current()
        self.device = resolve_device(self.train_cfg.device, self.group.rank)
        checkpoint.seed_everything(cfgs[0].seed, self.train_cfg.deterministic)
        data = make_data(cfgs[0], self.device, self.group)
        models, self.opt, self.step, self.autocast = build(cfgs, self.device, self.group)
        self.runs = [
            Run(cfg, directory, data if i == 0 else for_seed(data, cfg.seed), model)
            for i, (cfg, directory, model) in enumerate(zip(cfgs, directories, models))
        ]
        self.start, self.elapsed = self.resume()
        self.open_records()

    def resume(self) -> tuple[int, float]:
        """Load the runs' checkpoints (all at one iteration, or none): (iteration, seconds trained so far)."""
        ckpts = [checkpoint.load(r.directory / "checkpoint.pt", r.cfg, r.model) for r in self.runs]
        if len({c and c["iteration"] for c in ckpts}) > 1:
            found = [c and c["iteration"] for c in ckpts]
            raise ValueError(f"seeds trained together must resume from one iteration; found {found}")
        if ckpts[0] is None:
            return 0, 0.0
        for r, ckpt in zip(self.runs, ckpts):
            r.model.load_state_dict(ckpt["model"])
        states = [c["optimizer"] for c in ckpts]
        self.opt.load_state_dict(states[0] if len(states) == 1 else stacked_state(states))
        self.step.use_lr_tensor()
        rank = self.group.rank
        checkpoint.set_rng_states(ckpts[0]["rng"][rank], self.device)  # the global RNGs: one per process
        for i, (r, ckpt) in enumerate(zip(self.runs, ckpts)):
            self.step.stats[i].copy_(ckpt["stats"][rank])
            r.data.set_rng_state(ckpt["rng"][rank]["data"])
            print(f"resuming {r.directory.name} from its checkpoint at iteration {ckpt['iteration']}", flush=True)
        return ckpts[0]["iteration"], ckpts[0]["elapsed"]

    def open_records(self) -> None:
        """Drop rows written after the checkpoint (all of them on a fresh start), log this start, open the
        trackers (which continue their runs on a resume), and record the gradient flow at initialisation."""
        for r in self.runs:
            r.directory.mkdir(parents=True, exist_ok=True)
            if not self.group.main:
                continue
            store.save_config(r.directory, r.cfg)
            kept = self.start if self.start else -1
            for name in ("metrics.jsonl", "grad_flow.jsonl"):
                store.truncate_jsonl(r.directory / name, kept)
            r.row = (read_jsonl(r.directory / "metrics.jsonl") or [{}])[-1]
            r.restarts = store.record_start(r.directory, self.start)
            r.trackers = Trackers.open(r.cfg, r.directory, self.start)
            if self.start == 0 and self.train_cfg.grad_flow and r.data.fixed_batch() is not None:
                r.trackers.log(0, {}, self.record_gradient_flow(r, 0))

    def loop(self, stop: list[int]) -> None:
        t = self.train_cfg
        tick, tick_iteration = time.perf_counter(), self.start
        for it in range(self.start, t.iterations):
            if stop:  # preempted or interrupted: checkpoint here, before this iteration, and exit
                self.elapsed += time.perf_counter() - tick
                self.save(it)
                name = signal.Signals(stop[0]).name
                print(f"{name}: checkpoint saved at iteration {it}; the same command resumes", flush=True)
                raise SystemExit(128 + stop[0])
            self.step([r.data.train_batch(it) for r in self.runs], lr_at(it, t))
            done = it + 1
            if self.progress and self.group.main:
                self.progress(done, None)
            if done % t.eval_every and done != t.iterations:
                continue
            now = time.perf_counter()
            self.elapsed += now - tick
            self.record_evaluation(done, lr_at(it, t), (done - tick_iteration) * t.batch_size / (now - tick))
            if all(r.status is not Status.running for r in self.runs):
                return
            if done % t.checkpoint_every == 0 or done == t.iterations:
                self.save(done)
            tick, tick_iteration = time.perf_counter(), done

    def record_evaluation(self, done: int, lr: float, images_per_s: float) -> None:
        """Each running network's row in metrics.jsonl (and gradient flow); a non-finite loss ends it as diverged."""
        t = self.train_cfg
        sums = self.group.all_reduce(self.step.stats.clone()).tolist()
        seen = (done - ((done - 1) // t.eval_every) * t.eval_every) * t.batch_size  # images since the last one
        self.step.stats.zero_()
        for r, (loss_sum, errors) in zip(self.runs, sums):
            if r.status is not Status.running:
                continue
            if self.group.main:  # rank 0 evaluates and writes the records
                r.row = {
                    "iteration": done,
                    "epoch": round(done / r.data.steps_per_epoch, 3),
                    "lr": lr,
                    "train_loss": loss_sum / seen,
                    "train_error": errors / seen,
                    **evaluate(r.model, r.data, self.autocast),
                    "images_per_s": images_per_s,
                    "elapsed": round(self.elapsed, 3),
                }
                store.append_jsonl(r.directory / "metrics.jsonl", r.row)
                store.touch_lock(r.directory)  # the holder is alive (``resnet-ablate status`` says when it last was)
                norms = self.record_gradient_flow(r, done) if t.grad_flow and r.data.fixed_batch() is not None else None
                r.trackers.log(done, r.row, norms)
            if not math.isfinite(loss_sum):  # summed over ranks, so every rank stops this network together
                self.finish(r, Status.diverged, done)
        if self.progress and self.group.main:
            self.progress(done, self.runs[0].row)

    def record_gradient_flow(self, r: Run, iteration: int) -> list[float]:
        norms = gradient_flow(r.model, *r.data.fixed_batch())
        store.append_jsonl(r.directory / "grad_flow.jsonl", {"iteration": iteration, "norms": norms})
        return norms

    def save(self, iteration: int) -> None:
        """Each running network's checkpoint, in the format of a network trained alone."""
        rng = checkpoint.rng_states(self.device)
        per_rank = self.group.gather(([{**rng, "data": r.data.rng_state()} for r in self.runs], self.step.stats.cpu()))
        if not self.group.main:
            return
        opt_state = self.opt.state_dict()
        for i, r in enumerate(self.runs):
            if r.status is not Status.running:
                continue
            state = {
                "model": {k: v.clone() for k, v in r.model.state_dict().items()},  # a stack's view would save it all
                "optimizer": opt_state if len(self.runs) == 1 else seed_state(opt_state, i),
                "iteration": iteration,
                "elapsed": self.elapsed,
                "stats": [s[i] for _, s in per_rank],
                "config": OmegaConf.to_container(r.cfg, resolve=True, enum_to_str=True),
                "rng": [rngs[i] for rngs, _ in per_rank],
            }
            checkpoint.save(r.directory / "checkpoint.pt", state)

    def finish(self, r: Run, status: Status, diverged_at: int | None = None) -> None:
        """Write the run's result.json. A run that ends without its final evaluation in metrics.jsonl (a resume
        after the last checkpoint whose records were lost) evaluates once more, so ``done`` always has numbers."""
        r.status, r.diverged_at = status, diverged_at
        if status is Status.done and r.row.get("iteration") != self.train_cfg.iterations and self.group.main:
            r.row = {"iteration": self.train_cfg.iterations, **evaluate(r.model, r.data, self.autocast)}
        if self.group.main:
            r.trackers.finish(status.value, r.row.get("test_error"))
        r.result = self.result(r)
        if self.group.main:
            record.write(r.directory, r.result)

    def result(self, r: Run) -> dict[str, Any]:
        device = self.device
        return {
            "status": r.status.value,
            "key": r.directory.name,
            "test_error": r.row.get("test_error"),
            "test_error_top5": r.row.get("test_error_top5"),
            "train_loss": r.row.get("train_loss"),
            "iterations": r.row.get("iteration", self.start),
            "diverged_at": r.diverged_at,
            "resumed_from": r.restarts,  # the iteration of each restart (starts.jsonl)
            "wall_time": round(self.elapsed, 3),
            "trained_together": len(self.runs),  # networks stacked in its process (1: alone)
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "versions": {
                "resnet_ablate": version("resnet-ablate"),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "git_commit": _git_commit(),
            "config": key_fields(r.cfg),
            "zeroed": zeroed(r.cfg.unit, r.cfg.norm, r.cfg.init),  # what the init set to 0 at the start
            "data": r.data.identity,  # the fingerprints of the images it trained and tested on
            **({"trackers": r.trackers.errors} if r.trackers.errors else {}),
        }


@contextlib.contextmanager
def stop_requests(wanted: bool):
    """While the block runs, SIGTERM (a scheduler's preemption, the local launcher stopping its workers), SIGINT
    (Ctrl-C) and SIGHUP (the terminal closed) record their number in the yielded list instead of stopping the
    process, so training can checkpoint first; a second one stops at once. Not in other threads, nor across DDP
    ranks (they could see it at different iterations)."""
    received: list[int] = []
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, request) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _git_commit() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None
