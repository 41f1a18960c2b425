"""What SLURM says about a sweep's jobs: the job that last ran each cell, and why a submitted job is still waiting.

A job whose request the partition can never grant (more CPUs than a node has, a time limit above the partition's)
stays PENDING forever; the sweep would wait without a word. ``PendingWatch`` reads ``squeue`` while the sweep waits,
says why its jobs pend, and cancels those that cannot start, so the sweep ends with the scheduler's reason.
"""

from __future__ import annotations

import getpass
import re
import subprocess
import sys
import threading
from pathlib import Path

from .files import read_json

# squeue reasons that no amount of waiting clears (the job's request exceeds a limit, or names what does not exist)
NEVER = {
    "PartitionConfig",
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
}


def cannot_start(reason: str) -> bool:
    return reason in NEVER or "PerJob" in reason  # QOSMaxCpuPerJobLimit, QOSMaxGRESPerJob, …


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def jobs(directories: list[Path]) -> dict[Path, str]:
    """'<job id> <state>' of the SLURM job that last ran each cell (from scheduler.json and one sacct call)."""
    ids = {d: j["slurm_job_id"] for d in directories if (j := read_json(d / "scheduler.json"))}
    if not ids:
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(set(ids.values()))])
    states = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
    return {d: f"{job} {states.get(job, '')}".strip() for d, job in ids.items()}


def pending(arrays: set[str]) -> dict[str, str]:
    """The reason of every pending task of these job arrays, by task id (``123_4``)."""
    out = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-t", "PENDING", "-o", "%i|%r"])
    rows = (line.split("|", 1) for line in out.splitlines() if "|" in line)
    return {task: reason for task, reason in rows if task.split("_")[0] in arrays}


class PendingWatch(threading.Thread):
    """While a launcher waits on the jobs it submitted (their folders under ``folder``, named by job id, as submitit
    makes them): every ``every`` seconds, a note when the pending reasons change, and the jobs that cannot start
    cancelled; ``refused`` then says which and why."""

    def __init__(self, folder: Path, every: float = 5.0):
        super().__init__(daemon=True, name="slurm-pending-watch")
        self.folder, self.every = folder, every
        self.stopped = threading.Event()
        self.refused: dict[str, str] = {}

    def run(self) -> None:
        said: dict[str, int] = {}
        while not self.stopped.wait(self.every):
            names = [p.name for p in self.folder.iterdir()] if self.folder.is_dir() else []
            arrays = {n.split("_")[0] for n in names if re.fullmatch(r"\d+(_\d+)?", n)}
            reasons = pending(arrays) if arrays else {}
            refused = {task: r for task, r in reasons.items() if cannot_start(r)}
            if refused:
                self.refused = refused
                _run(["scancel", *sorted({t.split("_")[0] for t in refused})])
                return
            counts = {r: list(reasons.values()).count(r) for r in sorted(set(reasons.values()))}
            if counts and counts != said:
                waiting = ", ".join(f"{n} ({r})" for r, n in counts.items())
                print(f"note: SLURM jobs of this sweep pending: {waiting}", file=sys.stderr, flush=True)
            said = counts

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def why(self) -> str:
        reasons = sorted(set(self.refused.values()))
        return (
            f"SLURM cannot start {len(self.refused)} job(s) of this sweep ({', '.join(reasons)}: the partition's "
            "limits refuse what they ask); cancelled them: ask for less (hydra.launcher.cpus_per_task, mem_gb, "
            "gpus_per_node, timeout_min) or another hydra.launcher.partition, then rerun; `sinfo` shows what the "
            "partitions offer"
        )
