"""The readers at scale: a store of N runs (copies of one real tiny run under N seeds × 2 placements, each keyed as
its config says, with its metrics), then the wall time and peak memory (max RSS) of ``status``, ``table``,
``compare`` and ``report`` on it, each in its own process; and the dry run of a 1-cell and a 1,000-cell grid.

    python benchmarks/scale.py [--runs 5000]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resnet_ablate.config import compose
from resnet_ablate.record import key_of
from resnet_ablate.sweep import run_cells

CELL = ["model=resnet110", "model.depth=8", "data=synthetic", "data.synthetic_train=256", "data.synthetic_test=128",
        "train.batch_size=32", "train.iterations=8", "train.eval_every=4", "train.checkpoint_every=4",
        "train.milestones=[4,6]", "train.warmup_iterations=0", "train.device=cpu"]  # fmt: skip


def make_store(root: Path, data: Path, runs: int) -> None:
    """``runs`` ended runs: one real run per placement, copied under other seeds (result, config, metrics)."""
    for unit in ("original", "full_preact"):
        (result,) = run_cells(compose([*CELL, f"unit={unit}", f"store.root={root}", f"data.root={data}"]))
        source = root / "runs" / result["key"]
        for seed in range(1, runs // 2):
            config = {**result["config"], "seed": seed}
            key = key_of(config)
            target = root / "runs" / key
            target.mkdir()
            (target / "result.json").write_text(json.dumps({**result, "config": config, "key": key}))
            for name in ("config.yaml", "metrics.jsonl", "grad_flow.jsonl"):
                if (source / name).exists():
                    shutil.copy(source / name, target / name)


PROBE = """import resource, runpy, sys
sys.argv = ["resnet-ablate", *sys.argv[1:]]
try:
    runpy.run_module("resnet_ablate", run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
print("peak-rss-kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def measure(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``resnet-ablate <args>`` in a fresh process of its own."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    peak = next(line for line in proc.stderr.splitlines() if line.startswith("peak-rss-kb"))
    return took, int(peak.split()[1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root, data = Path(folder) / "store", Path(folder) / "data"
        make_store(root, data, args.runs)
        where = [f"store.root={root}"]
        commands = {
            "status": ["status", *where],
            "table": ["table", "table2", "data=synthetic", *where],
            "compare": ["compare", "unit=original,full_preact", *where],
            "report": ["report", "data=synthetic", *where, "--out", str(Path(folder) / "r.html")],
            "dry run, 1 cell": ["sweep", "table2", "unit=original", "model=resnet110", "seed=0", "--dry-run", *where],
            "dry run, 1,000 cells": [
                "sweep",
                "table2",
                "unit=original",
                "model=resnet110",
                "seed=range(1000)",
                "--dry-run",
                *where,
            ],  # fmt: skip
        }
        print(f"{args.runs:,} runs in the store")
        for name, command in commands.items():
            took, peak = measure(command)
            print(f"{name:22s} {took:7.1f} s   peak {peak:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
