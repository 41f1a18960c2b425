"""Files written whole or not at all, with the mode ``open`` would give them."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

PARTIAL = ".partial-"  # in the name of a file being written: ``.NAME.partial-XXXX``


class WriteError(OSError):
    """A write failed (a full disk, a quota, permissions); its text is one line naming the path."""

    def __str__(self) -> str:
        return str(self.strerror)

    @classmethod
    def at(cls, path: Path, error: OSError) -> WriteError:
        return cls(error.errno, f"cannot write {path}: {error.strerror or error}")


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would race with other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    return 0o022


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: readers see old or new, never half.
    The file gets the mode ``open`` would give it (0666 less the umask), so a group can share a store. On failure
    the old file stays and the temporary one is removed."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{PARTIAL}")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError.at(path, e) from None
        raise


def open_regular(path: Path, flags: int) -> int:
    """``os.open`` of a regular file, never through a link: a FIFO, device or socket planted in a run directory is
    an OSError, at once (opened non-blocking, then checked with fstat), never a read that waits forever."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as e:
        if e.errno != errno.ENXIO:  # ENXIO: a FIFO opened for writing with no reader
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def open_nofollow(path: Path, flags: int) -> int:
    """``open_regular`` for writing: a link (it would send our writes elsewhere) or anything but a regular file is a
    ``WriteError`` naming the path."""
    try:
        return open_regular(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise WriteError(e.errno, f"cannot use {path}: a link (links in a run directory are refused)") from None
        raise WriteError.at(path, e) from None


def read_bytes(path: Path, limit: int) -> bytes:
    """A regular file's bytes (at most ``limit``); a link, a FIFO, a device or a larger file is an OSError."""
    fd = open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


MAX_DEPTH = 32  # our records nest a few levels; deeper is not ours (and would exhaust Python's recursion later)


def nested_too_deep(obj: Any) -> bool:
    """Whether ``obj`` (parsed JSON or YAML) nests lists and mappings deeper than ``MAX_DEPTH``; checked without
    recursion."""
    level = [obj]
    for _ in range(MAX_DEPTH + 1):
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else ())]
        if not level:
            return False
    return True


def parse_json(raw: bytes | str) -> Any:
    """JSON as Python data; ValueError for text that is not JSON or that nests deeper than ``MAX_DEPTH`` (a
    1,000-deep file is a ValueError here, not a RecursionError in whoever reads it)."""
    too_deep = f"JSON nested deeper than {MAX_DEPTH} levels, not a record of ours"
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise ValueError(too_deep) from None
    if nested_too_deep(obj):
        raise ValueError(too_deep)
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, a link, or not a JSON object (binary, a list, torn)."""
    try:
        obj = parse_json(read_bytes(path, 1 << 24))
    except (OSError, ValueError):  # missing, a link, a folder, unreadable; not JSON, not UTF-8
        return None
    return obj if isinstance(obj, dict) else None


def numbered(path: Path) -> Path:
    """``path`` itself if free, else ``path.1``, ``path.2``, …: a name that overwrites nothing."""
    candidate, n = path, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def set_aside(path: Path, suffix: str = ".rejected") -> Path:
    """Rename ``path`` to ``<name>.rejected`` (numbered when that exists): kept, never overwritten."""
    target = numbered(path.with_name(path.name + suffix))
    os.replace(path, target)
    return target


def remove_leftovers(directory: Path) -> list[str]:
    """Remove the temporary files ``atomic_write`` leaves when its process is killed mid-write; the run's next
    start calls this, under the cell's lock."""
    removed = []
    for p in directory.glob(f".*{PARTIAL}*"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
