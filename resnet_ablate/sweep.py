"""A worker's cells: train the cells of one job (its seeds stacked), skipping ended ones and resuming partial ones;
the task function through which any Hydra launcher runs them (the grid is ``grid.py``)."""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from . import checkpoint, record, store
from .config import compose, conf_dir, key_fields, with_seed
from .files import remove_leftovers, set_aside, write_json
from .status import ENDED, Status
from .workers import mps_daemon, start_worker


def run_pack(cfg: DictConfig) -> list[dict[str, Any]]:
    """A cluster job holding several workers (``launcher.jobs_per_gpu`` > 1): all of them at once on the job's GPU."""
    lines = [shlex.split(line) for line in cfg.launcher.pack]
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    directories = [[store.run_dir(c) for c in seed_cells(compose(line))] for line in lines]
    with mps_daemon(gpu is not None and cfg.launcher.mps):
        procs = [start_worker(line, ds, gpu, len(lines)) for line, ds in zip(lines, directories)]
        for proc in procs:
            proc.wait()
    results = [record.read_result(d) or {"status": "did not end", "key": d.name} for ds in directories for d in ds]
    left = [r["key"] for r in results if r["status"] not in [s.value for s in ENDED]]
    if left:
        raise RuntimeError(f"cells that did not end in this job: {left}")
    return results


def seed_cells(cfg: DictConfig) -> list[DictConfig]:
    """The cells one worker trains: ``cfg``'s, or with ``launcher.seeds`` one per seed, trained stacked."""
    from .step import check_together

    seeds = list(cfg.launcher.seeds or [cfg.seed])
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"launcher.seeds {seeds} repeats a seed")
    check_together(cfg, len(seeds))
    return [with_seed(cfg, s) for s in seeds]


def run_cells(cfg: DictConfig, progress=None) -> list[dict[str, Any]]:
    """Train the cells of ``seed_cells(cfg)`` together, leaving out those that have ended (per ``store.rerun``)
    or that another process holds; partial ones resume. A failure of training itself is recorded in the cell's
    result.json as ``failed`` (the next run retries it); any other error (set-up, a full disk) records nothing."""
    from .train import TrainingError, train, train_seeds
    from .validate import check_cells

    cells = seed_cells(cfg)
    check_cells(cells)
    results: dict[Path, dict[str, Any]] = {}
    with contextlib.ExitStack() as locks:
        todo: dict[int, list[tuple[DictConfig, Path]]] = {}  # by checkpoint iteration
        for c in cells:
            directory = store.run_dir(c)
            if not locks.enter_context(store.cell_lock(directory)):
                results[directory] = {"status": Status.running.value, "key": directory.name}
            elif not store.needs_run(c, directory):
                results[directory] = record.read_result(directory)
            else:
                _prepare(directory)
                ckpt = checkpoint.load(directory / "checkpoint.pt", c)
                todo.setdefault(ckpt["iteration"] if ckpt else 0, []).append((c, directory))
        # stacked seeds resume together; a kill between their checkpoint writes leaves them apart: one stack each
        for group in todo.values():
            cfgs, directories = (list(x) for x in zip(*group))
            try:
                ended = (
                    train_seeds(cfgs, directories, progress)
                    if len(cfgs) > 1
                    else [train(cfgs[0], directories[0], progress)]
                )
            except TrainingError as e:
                for c, directory in group:
                    if record.read_result(directory) is None:  # not ended (diverged) before the error
                        record.write_failed(directory, key_fields(c), str(e))
                raise
            results.update(zip(directories, ended))
    return [results[store.run_dir(c)] for c in cells]


def _prepare(directory: Path) -> None:
    """Record the SLURM job (for ``resnet-ablate status``). A failed cell resumes from its last checkpoint; a rerun
    of an ended cell starts from scratch."""
    if "SLURM_JOB_ID" in os.environ:
        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        write_json(directory / "scheduler.json", {"slurm_job_id": f"{job}_{task}" if task else job})
    for name in remove_leftovers(directory):
        print(f"removed {directory / name}, left by a writer that was killed")
    result = record.read_result(directory)
    if result is None:
        if (directory / "result.json").exists():  # not one of ours: set aside (numbered), never deleted
            kept = set_aside(directory / "result.json")
            print(f"warning: {directory / 'result.json'} is not a record of this run; kept as {kept.name}")
        return
    names = ["result.json"]
    if Status(result["status"]).ended:
        names += ["checkpoint.pt", "metrics.jsonl", "grad_flow.jsonl", "starts.jsonl"]
    for name in names:
        (directory / name).unlink(missing_ok=True)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def task(cfg: DictConfig) -> list[dict[str, Any]]:
    """The Hydra task function: ``python -m resnet_ablate.sweep -m sweep=table2 hydra/launcher=…`` works too. A
    cell's progress goes to the job's output (a SLURM job's log; Ray's driver)."""
    from .progress import RunProgress, run_label

    if cfg.launcher.pack:
        return run_pack(cfg)
    with RunProgress(cfg.train.iterations, run_label(seed_cells(cfg))) as progress:
        return run_cells(cfg, progress)


if __name__ == "__main__":
    task()
