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
    def __init__(
        self, jobs_per_gpu: int = 1, gpus: Optional[str] = None, fail_fast: bool = False, mps: bool = True
    ) -> None:
        self.jobs_per_gpu, self.gpus, self.fail_fast, self.mps = int(jobs_per_gpu), gpus, bool(fail_fast), bool(mps)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from resnet_ablate import store
        from resnet_ablate.progress import SweepDisplay
        from resnet_ablate.sweep import axes, mps_daemon, needs_run, seed_cells, start_worker

        jobs = []  # per worker: its overrides, and its cells as (display row, config, run directory)
        rows = []  # per cell: what the display shows
        for overrides in job_overrides:
            cells = []
            label = [o for o in filter_overrides(overrides) if not o.startswith(("seed=", "launcher.seeds="))]
            for cfg in seed_cells(self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))):
                cells.append((len(rows), cfg, store.run_dir(cfg)))
                rows.append(([*label, f"seed={cfg.seed}"], cells[-1][2], cfg.train.iterations, cfg.train.batch_size))
            jobs.append((list(overrides), cells))
        values, varying = axes([r[0] for r in rows])
        labels = [" ".join(f"{k}={v[k]}" for k in varying if k in v) or "(one cell)" for v in values]
        rows = [(label, *rest) for label, (_, *rest) in zip(labels, rows)]
        gpus = visible_gpus(self.gpus)
        slots: queue.Queue[Optional[str]] = queue.Queue()
        for slot in (gpus or [None]) * self.jobs_per_gpu:
            slots.put(slot)
        returns: List[Optional[JobReturn]] = [None] * len(jobs)
        procs: dict = {}
        stop = threading.Event()
        display = SweepDisplay(rows)

        def run(i: int) -> None:
            overrides, cells = jobs[i]
            todo = {n: directory for n, cfg, directory in cells if needs_run(cfg, directory)}
            for n, _, _ in cells:
                if n not in todo:
                    display.finish(n, "skipped")
            if not todo:
                results = [store.read_result(d) for _, _, d in cells]
                returns[i] = _job_return(overrides, results, JobStatus.COMPLETED)
                return
            slot = slots.get()
            try:
                if stop.is_set():
                    return
                procs[i] = start_worker(overrides, list(todo.values()), slot, self.jobs_per_gpu)
                for n in todo:
                    display.start(n, slot)
                code = procs[i].wait()
                ok = code == 0  # without a result, a clean exit means another process holds the cell
                ended = "killed" if code < 0 else f"exit {code}"
                results = [
                    store.read_result(d) or {"status": "running elsewhere" if ok else ended} for _, _, d in cells
                ]
                returns[i] = _job_return(
                    overrides,
                    results,
                    JobStatus.COMPLETED if ok else JobStatus.FAILED,
                    None
                    if ok
                    else RuntimeError(f"worker exited {code}; see {next(iter(todo.values())) / 'train.log'}"),
                )
                for (n, _, _), result in zip(cells, results):
                    if n in todo:
                        display.finish(n, "stopped" if stop.is_set() and not ok else result["status"])
                if not ok and self.fail_fast:
                    stop.set()
                    _terminate(procs)
            finally:
                slots.put(slot)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(jobs))]
        try:
            with display, mps_daemon(self.mps and bool(gpus) and self.jobs_per_gpu > 1):
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    display.refresh()
                    time.sleep(0.5)
        except KeyboardInterrupt:
            stop.set()
            _terminate(procs)
            raise
        for i, r in enumerate(returns):
            if r is None:  # not started (fail-fast)
                returns[i] = _job_return(
                    jobs[i][0], {"status": "not started"}, JobStatus.FAILED, RuntimeError("not started")
                )
        return returns  # type: ignore[return-value]


def _job_return(
    overrides: List[str], value: Any, status: JobStatus, error: Optional[BaseException] = None
) -> JobReturn:
    ret = JobReturn(overrides=overrides, status=status)
    ret._return_value = error if error is not None else value
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
