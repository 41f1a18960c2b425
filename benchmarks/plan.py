"""Planning a grid: the wall time of `resnet-ablate sweep table1 --dry-run` for 1 cell and for 80 cells
(Table 1 × 5 seeds), side by side in fresh processes; the 80-cell plan should take under twice the 1-cell one.

    python benchmarks/plan.py [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sys
import time


def wall(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "resnet_ablate", "sweep", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    one, eighty = [], []
    for _ in range(repeats):  # interleaved, so a busy machine slows both alike
        one.append(wall("table1", "--dry-run", "shortcut=identity", "seed=0"))
        eighty.append(wall("table1", "--dry-run", "seed=range(5)"))
    a, b = statistics.median(one), statistics.median(eighty)
    print(f"1 cell: {a:.2f} s, 80 cells: {b:.2f} s (median of {repeats}); ratio {b / a:.2f}")


if __name__ == "__main__":
    main()
