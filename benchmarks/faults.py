"""The kill campaign: a 10-cell sweep SIGKILLed (the sweep itself, or one of its workers) at random moments and
rerun until it completes, then checked against the same sweep run once uninterrupted.

    .venv/bin/python benchmarks/faults.py [--seed 0] [--kills 30] [--out /tmp/resnet-ablate-faults]

Prints kills, cells, lost (cells without a done result), corrupt (files of ours that do not read back),
bit-identical (final weights and records equal to the uninterrupted run's) and orphans (workers still alive
20 s after their sweep was killed). Runs on the CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from resnet_ablate import files, record, store

CELLS = [  # Table 2's grid cut to an 8-layer net: 5 placements x 2 seeds, deterministic
    "table2",
    "model=resnet20",
    "model.depth=8",
    "data=synthetic",
    "data.synthetic_train=512",
    "data.synthetic_test=256",
    "seed=0,1",
    "train.iterations=48",
    "train.milestones=[24,36]",
    "train.warmup_iterations=0",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.deterministic=true",
    "train.device=cpu",
    "launcher.jobs_per_gpu=2",
]


def sweep(root: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "resnet_ablate", "sweep", *CELLS, f"store.root={root}", f"data.root={data}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def workers(root: Path) -> list[int]:
    """Pids of the processes holding cells' locks."""
    pids = []
    for run in root.glob("runs/*"):
        holder = files.read_json(run / "lock") if store.lock_holder(run) else None  # {"host", "pid", "since"}
        if holder and isinstance(holder.get("pid"), int):
            pids.append(holder["pid"])
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/status") as f:
        return "zombie" not in f.read()


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed")} for r in record.read_jsonl(run)]


def corrupt_files(run: Path) -> int:
    bad = 0
    if (run / "result.json").exists() and record.read_result(run) is None:
        bad += 1
    for name in ("metrics.jsonl", "grad_flow.jsonl"):
        path = run / name
        if path.exists() and len(record.read_jsonl(path)) != len(path.read_text().splitlines()):
            bad += 1
    if (run / "checkpoint.pt").exists():
        try:
            torch.load(run / "checkpoint.pt", weights_only=True)
        except Exception:
            bad += 1
    return bad


def identical(a: Path, b: Path) -> bool:
    if records(a / "metrics.jsonl") != records(b / "metrics.jsonl"):
        return False
    if records(a / "grad_flow.jsonl") != records(b / "grad_flow.jsonl"):
        return False
    wa, wb = (torch.load(r / "checkpoint.pt", weights_only=True)["model"] for r in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=30, help="stop killing after this many, then let it finish")
    parser.add_argument("--out", type=Path, default=Path("/tmp/resnet-ablate-faults"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    data, reference, attacked = args.out / "data", args.out / "reference", args.out / "attacked"

    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "resnet_ablate", "sweep", *CELLS, f"store.root={reference}", f"data.root={data}"],
        check=True,
        capture_output=True,
    )
    print(f"reference sweep: {time.time() - t0:.0f} s", flush=True)

    kills = {"sweep": 0, "worker": 0}
    orphans = 0
    while sum(kills.values()) < args.kills:
        proc = sweep(attacked, data)
        while proc.poll() is None and not workers(attacked):  # kills land while cells train
            time.sleep(0.1)
        while proc.poll() is None and sum(kills.values()) < args.kills:
            time.sleep(rng.uniform(0, 6))
            pids = workers(attacked)
            if proc.poll() is not None or not pids:
                continue
            if rng.random() < 0.5:  # a worker, as the OOM killer does; the sweep goes on with the other cells
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills["worker"] += 1
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills["sweep"] += 1
            deadline = time.time() + 20
            while time.time() < deadline and any(alive(p) for p in pids):
                time.sleep(0.2)
            left = [p for p in pids if alive(p)]
            orphans += len(left)
            for p in left:
                os.kill(p, signal.SIGKILL)
        proc.wait()
        if proc.returncode == 0:
            break
    final = sweep(attacked, data)  # whatever is left, uninterrupted
    final.wait()

    runs = sorted(p.name for p in reference.glob("runs/*"))
    done = [k for k in runs if (record.read_result(attacked / "runs" / k) or {}).get("status") == "done"]
    print(f"kills: {sum(kills.values())} ({kills['sweep']} of the sweep, {kills['worker']} of a worker)")
    print(f"cells: {len(runs)}")
    print(f"lost: {len(runs) - len(done)}")
    print(f"corrupt: {sum(corrupt_files(r) for r in attacked.glob('runs/*'))}")
    print(f"bit-identical: {sum(identical(reference / 'runs' / k, attacked / 'runs' / k) for k in done)}/{len(runs)}")
    print(f"orphans: {orphans}")
    restarts = [len((record.read_result(attacked / "runs" / k) or {}).get("resumed_from", [])) for k in done]
    print(f"restarts per cell (resumed_from): {restarts}; {time.time() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
