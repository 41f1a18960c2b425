"""The benchmark on the CPU: the real training step against the plain baseline loop, in real worker processes."""

import json

from .conftest import cli


def test_bench_times_our_step_and_the_baseline_and_reports_each_setup_as_data():
    args = [
        "bench",
        "--json",
        "--models",
        "resnet20",
        "model.depth=8",
        "--steps",
        "2",
        "--warmup",
        "2",
    ]  # no capture on CPU
    proc = cli(*args, "--seeds", "1,2", "--loader-workers", "0", "--peak", "1", check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    baseline, alone, stacked = report["rows"]
    assert baseline["setup"].startswith("baseline") and baseline["x_baseline"] == 1.0
    assert (alone["seeds"], stacked["seeds"]) == (1, 2) and report["peak_tflops"] == 1
    for row in (alone, stacked):
        assert row["images_per_s"] > 0 and row["ms_per_step"] > 0 and row["warmup_compile_s"] > 0
        assert row["x_baseline"] == row["images_per_s"] / baseline["images_per_s"]
        assert row["mfu"] == row["tflops"]  # against the peak given
