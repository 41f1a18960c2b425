"""Grids of cells: expanding a preset's grid lines, deciding what each cell needs, and running one cell.

A preset (conf/sweep/*.yaml) holds ``hydra.sweeper.params`` (common to every cell) and ``hydra.sweeper.grid``,
a list of lines in Hydra's override grammar; the grid is the union of each line's Cartesian product. The task
function owns skip and resume, so any Hydra launcher can run the cells.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from . import checkpoint, presets, store
from .config import compose, conf_dir, key_fields, with_seed
from .files import open_nofollow, remove_leftovers, set_aside
from .record import key_of
from .status import Status


def expand_grid(lines: list[str], params: list[str], arguments: list[str]) -> list[list[str]]:
    """Cells (lists of overrides) of the union of ``lines``. An argument whose value a line holds selects: the
    cells whose value of that key (their line's, else the params') is one it names, and no others
    (``shortcut=identity`` narrows Table 1 to its identity row, ``shortcut=layerscale`` after2016 to its LayerScale
    row); where no line holds its value, or on other keys, it replaces the value (``model.depth=20``)."""
    parser = OverridesParser.create()
    given = parser.parse_overrides(arguments)
    parsed = [parser.parse_overrides(shlex.split(line)) for line in lines or [""]]
    choices = [{o.get_key_element(): set(_choices(o)) for o in line} for line in parsed]
    wanted = {a.get_key_element(): set(_choices(a)) for a in given}
    selecting = {k: v for k, v in wanted.items() if any(v & line.get(k, set()) for line in choices)}
    cells = _cells(parser.parse_overrides(params), parsed, given, selecting)
    if not cells:
        chosen = " ".join(a.input_line for a in given if a.get_key_element() in selecting)
        raise ValueError(f"no cell of the grid holds {chosen} (each picks the rows that hold it); drop one")
    return cells


MAX_CELLS = 20_000  # a grid larger is refused at once (a 100,000-cell dry run composed silently for 10 minutes)


def _cells(params: list[Override], lines: list[list[Override]], given: list[Override], selecting: dict) -> list:
    """The union of each line's Cartesian product: params, then the line, then the arguments that do not select;
    a cell is kept when it holds a selected value of each selecting key."""
    cells: list[list[str]] = []
    held: set[tuple[str, ...]] = set()
    for line in lines:
        merged: dict[str, Override] = {}
        for override in [*params, *line, *(a for a in given if a.get_key_element() not in selecting)]:
            merged.pop(override.get_key_element(), None)
            merged[override.get_key_element()] = override
        for cell in itertools.product(*(_choices(o) for o in merged.values())):
            kept = all(not wanted.isdisjoint(cell) for wanted in selecting.values())
            if kept and cell not in held:
                held.add(cell)
                cells.append(list(cell))
            if len(cells) > MAX_CELLS:
                raise ValueError(
                    f"the grid has more than {MAX_CELLS:,} cells; split it into sweeps of fewer "
                    "(e.g. seed=range(0,5000), then seed=range(5000,10000))"
                )
    return cells


def quote(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar: any path survives (commas, parentheses, ``=``,
    quotes, non-ASCII), where an unquoted one would re-parse as a sweep or not at all."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def _choices(override: Override) -> list[str]:
    """``key=value`` for each value an override sweeps over (one when it does not sweep)."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if not override.is_discrete_sweep():
        raise ValueError(f"{key}: a grid takes lists, ranges and choices, not intervals")
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def preset_grid(preset: str, arguments: list[str]) -> list[list[str]]:
    spec = presets.load(preset)
    return expand_grid(spec.lines(), [f"{k}={v}" for k, v in spec.params.items()], arguments)


def axes(cells: list[list[str]]) -> tuple[list[dict[str, str]], list[str]]:
    """Each cell's overrides as {key: value} (store/launcher keys left out), and the keys whose values vary."""
    values = [dict(o.split("=", 1) for o in c if not o.startswith(("store.", "launcher."))) for c in cells]
    keys = list(dict.fromkeys(k for v in values for k in v))
    return values, [k for k in keys if len({v.get(k) for v in values}) > 1]


def flags(force: bool, retry_failed: bool, fail_fast: bool, gpus: str | None) -> list[str]:
    """The sweep command's flags as overrides."""
    rerun = ["store.rerun=all"] if force else ["store.rerun=failed"] if retry_failed else []
    fast = ["launcher.fail_fast=true"] if fail_fast else []
    return [*rerun, *fast, *([f"launcher.gpus={quote(gpus)}"] if gpus else [])]


def absolute_paths(cfg: DictConfig) -> list[str]:
    """The store and the data as absolute paths, quoted: cells may run in other working directories (SLURM, Ray)."""
    paths = [("store.root", cfg.store.root), *([("data.root", cfg.data.root)] if cfg.data.root else [])]
    return [f"{key}={quote(str(Path(value).resolve()))}" for key, value in paths]


def unended(statuses: list[Status]) -> str | None:
    """Why a sweep exits 1: cells that failed or did not end (a killed worker leaves no result); None when every
    cell ended. Cells another process is training are not this sweep's to judge."""
    failed = statuses.count(Status.failed)
    left = statuses.count(Status.pending) + statuses.count(Status.partial)
    if not (failed or left):
        return None
    return (
        f"{failed} cell(s) failed and {left} did not end (a worker was killed, or never started); "
        "see their train.log; the same command retries and resumes them"
    )


def check_launcher(args: list[str]) -> None:
    """A launcher that cannot start is a ValueError at once, naming what is missing, before the store is touched."""
    import importlib.util
    import shutil

    if "launcher=slurm" in args or any(a.startswith("hydra/launcher=submitit_slurm") for a in args):
        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            raise ValueError("launcher=slurm needs hydra-submitit-launcher: pip install 'resnet-ablate[slurm]'")
        if shutil.which("sbatch") is None:
            raise ValueError(
                "launcher=slurm needs SLURM's sbatch on PATH (a SLURM client); on one machine use launcher=local"
            )
    if "launcher=ray" in args or any(a.startswith("hydra/launcher=ray") for a in args):
        if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
            raise ValueError("launcher=ray needs hydra-ray-launcher: pip install 'resnet-ablate[ray]'")
        given = dict(a.split("=", 1) for a in args if a.startswith("hydra.launcher.ray."))
        gpus = float(given.get("hydra.launcher.ray.remote.num_gpus", 1))
        address = given.get("hydra.launcher.ray.init.address", "null")
        if address not in ("null", "auto"):
            import socket

            host, _, port = address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError) as e:
                raise ValueError(
                    f"cannot reach the Ray cluster at {address} ({e}); check hydra.launcher.ray.init.address=HOST:PORT"
                ) from None
        if address == "null" and gpus > 0:
            import torch

            if torch.cuda.device_count() == 0:  # Ray would wait forever for a GPU this machine does not have
                raise ValueError(
                    "launcher=ray asks for a GPU per cell but this machine has none; "
                    "add hydra.launcher.ray.remote.num_gpus=0 or hydra.launcher.ray.init.address=HOST:PORT"
                )


def forward_macs(cfg: DictConfig) -> int:
    """Multiply-adds of one image's forward pass through the cell's network (counted on the meta device)."""
    import torch

    from .models import build_model, count_macs

    with torch.device("meta"):  # shapes only
        net = build_model(cfg)
    return count_macs(net, cfg.data.image_size if cfg.data.name == "imagenet" else 32)


def gpu_hours(cfg: DictConfig, macs: int, tflops: float) -> float:
    """An estimate of one cell's GPU-hours: its network's multiply-adds per image (×6 for a training step: forward,
    and backward twice as dear) times its images, at ``tflops`` effective TFLOP/s."""
    return 6 * macs * cfg.train.batch_size * cfg.train.iterations / (tflops * 1e12) / 3600


@dataclass
class Cell:
    overrides: list[str]
    cfg: DictConfig
    directory: Path

    @property
    def status(self) -> str:
        return store.cell_status(self.directory)


def plan(preset: str, arguments: list[str]) -> list[Cell]:
    """The cells of a preset's grid, composed: once per cell less its seed (seeds are copies, ``with_seed``); a
    cell whose run another cell of the grid already is (``seed=0,0``; a value its kind does not read) is listed once."""
    cells, composed, seen = [], {}, set()
    for overrides in preset_grid(preset, arguments):
        rest = tuple(o for o in overrides if not o.startswith("seed="))
        if rest not in composed:
            composed[rest] = (compose(list(rest)), key_fields(compose(list(rest))))
        seeds = [o.split("=", 1)[1] for o in overrides if o.startswith("seed=")]
        if seeds and seeds[0].isdigit():  # a seed's copy, keyed by its cell's fields with its seed (cheap at 1,000s)
            cfg = with_seed(composed[rest][0], int(seeds[0]))
            directory = Path(cfg.store.root) / "runs" / key_of({**composed[rest][1], "seed": cfg.seed})
        else:
            cfg = compose(overrides)
            directory = store.run_dir(cfg)
        if directory not in seen:
            seen.add(directory)
            cells.append(Cell(overrides, cfg, directory))
    return cells


def start_worker(overrides: list[str], directories: list[Path], gpu: str | None, share: int) -> subprocess.Popen:
    """``python -m resnet_ablate train <overrides>`` pinned to one GPU (or a 1/share of the CPU cores), training the
    cells in ``directories``; its output is appended to the first one's train.log (the others' say where). In its
    own session, so a terminal's Ctrl-C reaches only the launcher; it stops (checkpointing) if this process dies
    (``watch_parent``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", RESNET_ABLATE_PARENT=str(os.getpid()))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // share))
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for directory in directories[1:]:
        with _log(directory) as log:
            note = f"trained together with its other seeds: the worker's output is in {directories[0]}/train.log\n"
            log.write(note.encode())
    with _log(directories[0]) as log:
        return subprocess.Popen(
            [sys.executable, "-m", "resnet_ablate", "train", *overrides],  # outside a terminal: a line per evaluation
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _log(directory: Path):
    """The run's train.log, to append to (a link there is refused)."""
    return os.fdopen(open_nofollow(directory / "train.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


@contextlib.contextmanager
def mps_daemon(wanted: bool):
    """A private MPS control daemon (its own pipe and log folders) while the block runs; its environment
    variables are set for the workers started inside. Nothing when not wanted, not installed, or already in use
    (``CUDA_MPS_PIPE_DIRECTORY`` set, or the system daemon's default pipe present)."""
    control = shutil.which("nvidia-cuda-mps-control")
    in_use = "CUDA_MPS_PIPE_DIRECTORY" in os.environ or os.path.exists("/tmp/nvidia-mps/control")
    if not (wanted and control) or in_use:
        yield
        return
    folder = tempfile.mkdtemp(prefix="resnet-ablate-mps-")
    env = {"CUDA_MPS_PIPE_DIRECTORY": f"{folder}/pipe", "CUDA_MPS_LOG_DIRECTORY": f"{folder}/log"}
    for path in env.values():
        os.makedirs(path)
    started = subprocess.run(
        [control, "-d"], env={**os.environ, **env}, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if started.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"warning: MPS did not start ({started.stderr.strip() or started.returncode}); GPUs are time-shared")
        yield
        return
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        subprocess.run([control], input="quit\n", text=True, capture_output=True, timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
        shutil.rmtree(folder, ignore_errors=True)


def run_pack(cfg: DictConfig) -> list[dict[str, Any]]:
    """A cluster job holding several workers (``launcher.jobs_per_gpu`` > 1): all of them at once on the job's GPU."""
    lines = [shlex.split(line) for line in cfg.launcher.pack]
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    directories = [[store.run_dir(c) for c in seed_cells(compose(line))] for line in lines]
    with mps_daemon(gpu is not None and cfg.launcher.mps):
        procs = [start_worker(line, ds, gpu, len(lines)) for line, ds in zip(lines, directories)]
        for proc in procs:
            proc.wait()
    results = [store.read_result(d) or {"status": "did not end", "key": d.name} for ds in directories for d in ds]
    unended = [r["key"] for r in results if r["status"] not in (Status.done, Status.diverged)]
    if unended:
        raise RuntimeError(f"cells that did not end in this job: {unended}")
    return results


def seed_cells(cfg: DictConfig) -> list[DictConfig]:
    """The cells one worker trains: ``cfg``'s, or with ``launcher.seeds`` one per seed, trained stacked."""
    from .step import check_together

    seeds = list(cfg.launcher.seeds or [cfg.seed])
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"launcher.seeds {seeds} repeats a seed")
    check_together(cfg, len(seeds))
    return [with_seed(cfg, s) for s in seeds]


def stack_seeds(cells: list[list[str]], k: int) -> list[list[str]]:
    """Workers for ``cells`` (override lists): cells that differ only in ``seed=`` go k at a time to one worker
    (``launcher.seeds=[…]``), the others alone."""
    if k <= 1:
        return cells
    seeds: dict[tuple[str, ...], list[str]] = {}
    for cell in cells:
        rest = tuple(o for o in cell if not o.startswith("seed="))
        seeds.setdefault(rest, []).extend(o.split("=", 1)[1] for o in cell if o.startswith("seed="))
    jobs = []
    for rest, values in seeds.items():
        if not values:  # a cell without a seed override
            jobs.append(list(rest))
        for i in range(0, len(values), k):
            chunk = values[i : i + k]
            jobs.append(
                [*rest, f"seed={chunk[0]}", *([f"launcher.seeds=[{','.join(chunk)}]"] if len(chunk) > 1 else [])]
            )
    return jobs


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
                results[directory] = store.read_result(directory)
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
                    if store.read_result(directory) is None:  # not ended (diverged) before the error
                        failed = {"status": Status.failed.value, "key": directory.name, "error": str(e)}
                        store.write_json(directory / "result.json", {**failed, "config": key_fields(c)})
                raise
            results.update(zip(directories, ended))
    return [results[store.run_dir(c)] for c in cells]


def _prepare(directory: Path) -> None:
    """Record the SLURM job (for ``resnet-ablate status``). A failed cell resumes from its last checkpoint; a rerun
    of an ended cell starts from scratch."""
    if "SLURM_JOB_ID" in os.environ:
        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        store.write_json(directory / "scheduler.json", {"slurm_job_id": f"{job}_{task}" if task else job})
    for name in remove_leftovers(directory):
        print(f"removed {directory / name}, left by a writer that was killed")
    result = store.read_result(directory)
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


def watch_parent() -> None:
    """In a worker of the local launcher: when the launcher dies (SIGKILL, a closed terminal, the end of a SLURM
    job step), send this process SIGTERM, so training checkpoints and exits instead of running on unowned."""
    parent = os.environ.get("RESNET_ABLATE_PARENT")
    if not parent:
        return

    def watch():
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


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
