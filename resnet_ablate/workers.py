"""Worker processes on this machine: ``resnet-ablate train <overrides>`` pinned to a GPU (or a share of the CPU
cores), MPS while several share a GPU, and a worker's watch on the launcher that started it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .files import open_nofollow


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
