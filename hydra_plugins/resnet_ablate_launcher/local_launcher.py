"""Hydra launcher ``resnet_ablate_local``: cells as worker processes on this machine.

Each worker is ``python -m resnet_ablate train <overrides>`` pinned to one GPU through CUDA_VISIBLE_DEVICES
(``jobs_per_gpu`` workers share a GPU; the CPU when there is none), its output in the cell's ``train.log``.
Ended cells are skipped before a worker starts; a failing cell is recorded and the rest go on unless
``fail_fast``. Ctrl-C terminates the workers; checkpoints and results are written atomically, so the store
holds every ended cell and the latest checkpoint of the others.

Processes sharing a GPU only take turns on it; with ``mps`` (the default) and ``jobs_per_gpu`` > 1 the launcher
runs a private NVIDIA MPS daemon for the sweep's lifetime when ``nvidia-cuda-mps-control`` is installed, so the
kernels of a GPU's workers run side by side (measured on an H200: 4 ResNet-110 workers 21,300 images/s with MPS,
11,800 without; BENCHMARKS.md).
"""

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher


@dataclass
class LocalLauncherConf:
    _target_: str = "hydra_plugins.resnet_ablate_launcher.local_launcher.LocalLauncher"
    jobs_per_gpu: Any = "${launcher.jobs_per_gpu}"
    gpus: Any = "${launcher.gpus}"
    fail_fast: Any = "${launcher.fail_fast}"
    mps: Any = "${launcher.mps}"


ConfigStore.instance().store(
    group="hydra/launcher", name="resnet_ablate_local", node=LocalLauncherConf, provider="resnet_ablate"
)


def visible_gpus(gpus: Optional[str]) -> List[str]:
    if gpus:
        return [g.strip() for g in str(gpus).split(",") if g.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class LocalLauncher(Launcher):
    shares_gpus = True  # runs jobs_per_gpu workers per GPU itself: the sweeper gives it cells, not packs of them

    def __init__(
        self, jobs_per_gpu: int = 1, gpus: Optional[str] = None, fail_fast: bool = False, mps: bool = True
    ) -> None:
        self.jobs_per_gpu, self.gpus, self.fail_fast, self.mps = int(jobs_per_gpu), gpus, bool(fail_fast), bool(mps)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from resnet_ablate import store
        from resnet_ablate.grid import varying
        from resnet_ablate.progress import SweepDisplay
        from resnet_ablate.sweep import seed_cells
        from resnet_ablate.workers import mps_daemon

        jobs: List[Job] = []
        rows = []  # per cell: (overrides, run directory, iterations, batch size) for the display
        for overrides in job_overrides:
            label = [o for o in filter_overrides(overrides) if not o.startswith(("seed=", "launcher.seeds="))]
            cfgs = seed_cells(self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides)))
            jobs.append(Job(list(overrides), [(len(rows) + i, c, store.run_dir(c)) for i, c in enumerate(cfgs)]))
            for c in cfgs:
                rows.append(([*label, f"seed={c.seed}"], store.run_dir(c), c.train.iterations, c.train.batch_size))
        values, varied = varying([r[0] for r in rows])
        labels = [" ".join(f"{k}={v[k]}" for k in varied if k in v) or "(one cell)" for v in values]
        gpus = visible_gpus(self.gpus)
        workers = Workers(SweepDisplay([(label, *rest) for label, (_, *rest) in zip(labels, rows)]), self, gpus)
        threads = [threading.Thread(target=workers.run, args=(job,), daemon=True) for job in jobs]
        try:
            with workers.display, mps_daemon(self.mps and bool(gpus) and self.jobs_per_gpu > 1):
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    workers.display.refresh()
                    time.sleep(0.5)
        except KeyboardInterrupt:
            workers.stop.set()
            _terminate(workers.procs)
            raise
        return [job.returned or _job_return(job.overrides, RuntimeError("not started (--fail-fast)")) for job in jobs]


@dataclass
class Job:
    """One worker's share of a sweep: its overrides and its cells as (display row, config, run directory)."""

    overrides: List[str]
    cells: List[tuple]
    returned: Optional[JobReturn] = None


class Workers:
    """Runs jobs as worker processes, ``jobs_per_gpu`` at a time on each GPU slot (the CPU when there is none)."""

    def __init__(self, display, launcher: LocalLauncher, gpus: List[str]):
        self.display, self.launcher = display, launcher
        self.slots: queue.Queue[Optional[str]] = queue.Queue()
        for slot in (gpus or [None]) * launcher.jobs_per_gpu:
            self.slots.put(slot)
        self.procs: dict = {}
        self.stop = threading.Event()

    def run(self, job: Job) -> None:
        from resnet_ablate import store
        from resnet_ablate.record import read_result
        from resnet_ablate.workers import start_worker

        todo = {n: directory for n, cfg, directory in job.cells if store.needs_run(cfg, directory)}
        for n, _, _ in job.cells:
            if n not in todo:
                self.display.finish(n, "skipped")
        if not todo:
            job.returned = _job_return(job.overrides, [read_result(d) for _, _, d in job.cells])
            return
        slot = self.slots.get()
        try:
            if self.stop.is_set():
                return
            proc = start_worker(job.overrides, list(todo.values()), slot, self.launcher.jobs_per_gpu)
            self.procs[id(job)] = proc
            for n in todo:
                self.display.start(n, slot)
            code = proc.wait()
            ok = code == 0  # without a result, a clean exit means another process holds the cell
            ended = "killed" if code < 0 else f"exit {code}"
            missing = {"status": "running elsewhere" if ok else ended}
            results = [read_result(d) or missing for _, _, d in job.cells]
            log = next(iter(todo.values())) / "train.log"
            job.returned = _job_return(job.overrides, results if ok else RuntimeError(f"worker {ended}; see {log}"))
            for (n, _, _), result in zip(job.cells, results):
                if n in todo:
                    self.display.finish(n, "stopped" if self.stop.is_set() and not ok else result["status"])
            if not ok and self.launcher.fail_fast:
                self.stop.set()
                _terminate(self.procs)
        finally:
            self.slots.put(slot)


def _job_return(overrides: List[str], value: Any) -> JobReturn:
    """What Hydra's launchers return for a job: the task's value, or the error it raised."""
    failed = isinstance(value, BaseException)
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED if failed else JobStatus.COMPLETED)
    ret.return_value = value
    return ret


def _terminate(procs: dict) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
