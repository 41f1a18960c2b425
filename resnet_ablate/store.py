"""The results store: one directory per run, keyed by a hash of the fields that decide its result.

``<root>/runs/<key>/``: ``config.yaml`` (the composed config), ``metrics.jsonl`` (one row per evaluation),
``grad_flow.jsonl``, ``starts.jsonl`` (one row each time a process started training it), ``checkpoint.pt``,
``train.log`` (from the local launcher), ``lock`` (held while a process trains the cell), with ``logger=`` the
trackers' files and ``trackers.json`` (``trackers/``) and, written last and atomically, ``result.json``: its
presence means the run was recorded, done, diverged or failed (docs/architecture.md, "The run directory").

Readers never trust the store: a file that is not what we write (binary, a list, a foreign JSON) is skipped and
counted, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import key_fields
from .files import WriteError, atomic_write, nested_too_deep, open_nofollow, open_regular, read_bytes
from .record import key_of, read_jsonl, read_result
from .schema import Rerun
from .status import Status


def run_key(cfg: DictConfig) -> str:
    return key_of(key_fields(cfg))


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.store.root) / "runs" / run_key(cfg)


def append_jsonl(path: Path, row: dict) -> None:
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
    except OSError as e:
        raise WriteError.at(path, e) from None


def truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Keep the rows up to ``last_iteration`` (the checkpoint a run resumes from); -1 keeps none (a fresh start)."""
    keep = [r for r in read_jsonl(path) if r["iteration"] <= last_iteration]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def record_start(directory: Path, iteration: int) -> list[int]:
    """Log that a process starts training the cell at ``iteration``; returns the iterations of every restart so
    far (each start after the first, the same iteration as often as it happened)."""
    append_jsonl(
        directory / "starts.jsonl",
        {"iteration": iteration, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()},
    )
    return [r["iteration"] for r in read_jsonl(directory / "starts.jsonl")][1:]


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


@contextlib.contextmanager
def cell_lock(directory: Path) -> Iterator[bool]:
    """Hold the cell's lock without waiting; yields False when another process holds it. The lock file says who
    holds it (host, pid, since); ``touch_lock`` marks the holder alive. A directory it made that holds nothing but
    the lock when it is let go (set-up failed: a download, the data) is removed: no trace of a run that never began."""
    if directory.is_symlink():
        raise WriteError(errno.ELOOP, f"cannot use {directory}: it is a link, and run directories must not be links")
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_nofollow(directory / "lock", os.O_RDWR | os.O_CREAT), "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_holder()) + "\n")
        f.flush()
        try:
            yield True
        finally:
            if made and [p.name for p in directory.iterdir()] == ["lock"]:
                (directory / "lock").unlink()
                directory.rmdir()
            fcntl.flock(f, fcntl.LOCK_UN)


def touch_lock(directory: Path) -> None:
    """The holder is alive: the lock's modification time is when it last said so (at each evaluation)."""
    with contextlib.suppress(OSError):
        os.utime(directory / "lock", follow_symlinks=False)


def lock_holder(directory: Path) -> str | None:
    """Who holds the cell's lock, in words ("pid 12 on host-a, stopped"), or None when nobody does."""
    try:
        fd = open_regular(directory / "lock", os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(f.read(4096))
            except ValueError:  # an older lock (a bare pid), or torn
                holder = {}
            return _describe(holder if isinstance(holder, dict) else {}, os.fstat(fd).st_mtime)
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def _describe(holder: dict, seen: float) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or not isinstance(host, str):
        return "a process that did not say who it is"
    where = f"pid {pid} on {host}"
    if host != socket.gethostname():
        return f"{where}, last seen {_ago(time.time() - seen)} ago (another host: not checkable from here)"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return f"{where}, which is gone (a process it started still holds the lock)"
    if state in ("T", "t"):
        return f"{where}, which is stopped (SIGSTOP): `kill -CONT {pid}` resumes it, `kill {pid}` frees the cell"
    return f"{where}, last seen {_ago(time.time() - seen)} ago"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cell_status(directory: Path) -> Status:
    result = read_result(directory)
    if result is not None:
        return Status(result["status"])
    if lock_holder(directory) is not None:
        return Status.running
    return Status.partial if (directory / "checkpoint.pt").exists() else Status.pending


def save_config(directory: Path, cfg: DictConfig) -> None:
    atomic_write(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())


def saved_config(directory: Path) -> dict:
    """A run's config.yaml as plain data, read without YAML aliases (a 400-byte alias bomb expands to gigabytes)
    and at most 1 MB; {} when it is missing, a link or not a YAML mapping."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("aliases are refused")
            return super().compose_node(parent, index)

    try:
        config = yaml.load(read_bytes(directory / "config.yaml", 1 << 20), Loader=NoAliases)
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return {}
    return config if isinstance(config, dict) and not nested_too_deep(config) else {}


def describe_skipped(skipped: dict[str, list[str]]) -> list[str]:
    """One line per reason, to print once: which entries of the store a reader left out, and why."""
    return [
        f"skipped {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}: {why}"
        for why, names in skipped.items()
    ]


def check_writable(root: str | Path) -> None:
    root = Path(root)
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root / "runs"):
            pass
    except OSError as e:
        raise PermissionError(
            f"store.root {str(root)!r} is not writable ({e.strerror}); choose another with store.root=DIR"
        ) from None


def needs_run(cfg: DictConfig, directory: Path | None = None) -> bool:
    """False when the cell has ended and the rerun policy keeps its result; a failed cell always runs again."""
    result = read_result(directory or run_dir(cfg))
    if result is None:
        return True
    status, rerun = Status(result["status"]), Rerun(cfg.store.rerun)
    return not status.ended or rerun is Rerun.all or (rerun is Rerun.failed and status is Status.diverged)
