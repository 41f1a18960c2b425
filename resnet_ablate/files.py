"""Files written whole or not at all, with the mode ``open`` would give them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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
