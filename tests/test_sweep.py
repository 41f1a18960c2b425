"""Configs, grids, the sweep command, the local launcher and the store's locks, run as real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from resnet_ablate import files, presets, record, store
from resnet_ablate.config import conf_dir
from resnet_ablate.grid import expand_grid, preset_grid
from tests.helpers import recorded

from .conftest import ROOT, cli, start_cli

GROUPS = ["model", "unit", "shortcut", "data", "budget", "launcher"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_of_every_group_composes(cfg, group):
    options = [p.stem for p in (conf_dir() / group).glob("*.yaml")]
    assert options
    for option in options:
        assert cfg(f"{group}={option}") is not None


def test_presets_name_every_comparison_of_the_paper():
    assert presets.names("table") == ["table1", "table2", "table3", "table4", "table5", "after2016"]
    assert presets.names("figure") == ["figure1", "figure3", "figure6"]


def test_after2016_rows_hold_the_papers_unit_but_for_what_they_change():
    from resnet_ablate.report.tables import cells

    specs, _ = cells("after2016")
    by_row = {c.row.split(" (")[0]: c.match for c in specs if c.column == "resnet110"}
    assert len(specs) == 22 and len(by_row) == 11
    assert by_row["original"] == {
        "unit": "original", "shortcut": "identity", "norm": "batch", "act": "relu",
        "init": "he", "drop_path": 0, "model": "resnet110",
    }  # fmt: skip
    assert by_row["Fixup"] == {**by_row["original"], "init": "fixup", "norm": "none"}
    assert by_row["SkipInit"] == {**by_row["original"], "shortcut": "rezero", "norm": "none"}
    assert by_row["stochastic depth p_L=0.5"] == {**by_row["original"], "drop_path": 0.5}
    # each row is what its label cites: ours keeps every BN and swaps the activation, not Shah et al.'s ELU unit
    assert by_row["ELU in place of ReLU"] == {**by_row["original"], "act": "elu"}
    assert by_row["GroupNorm G=8"] == {**by_row["original"], "norm": "group", "groups": 8}
    assert by_row["zero-γ"] == {**by_row["original"], "init": "zero_last"}
    assert not [c.row for c in specs if "Shah" in c.row]
    papers = {c.row.split(" (")[0]: c.paper for c in specs if c.column == "resnet164"}
    assert papers["original"] == 5.93 and papers["full pre-activation"] == 5.46  # Table 3
    assert [p for r, p in papers.items() if r not in ("original", "full pre-activation")] == [None] * 9


@pytest.mark.parametrize("preset", presets.names())
def test_every_cell_of_every_preset_composes_and_validates(cfg, preset):
    """The whole grid of each table and figure, as the sweep would run it (the data check aside: no CIFAR here)."""
    from resnet_ablate.validate import check_cells

    cells = [cfg(*cell) for cell in preset_grid(preset, ["seed=0"])]
    check_cells(cells, data=False)
    assert cells


def test_a_table_preset_derives_both_the_grid_and_the_report_cells():
    from resnet_ablate.report.tables import cells

    specs, base = cells("table2")
    grid = preset_grid("table2", ["seed=0"])
    assert len(specs) == len(grid) == 10 and base == {"shortcut": "identity", "data": "cifar10"}
    assert {(c.match["unit"], c.match["model"]) for c in specs} == {
        (o["unit"], o["model"]) for o in (dict(x.split("=") for x in cell) for cell in grid)
    }


@pytest.mark.parametrize(
    "preset,cells",
    [
        ("table1", 16 * 5),
        ("table2", 10 * 5),
        ("table3", 12 * 5),
        ("table4", 5 * 5),
        ("table5", 4),
        ("figure6", 4),
        ("after2016", 22 * 5),
    ],
)
def test_preset_grids_have_the_papers_cells_with_5_seeds(preset, cells):
    assert len(preset_grid(preset, [])) == cells


def test_grid_is_the_union_of_lines_and_command_line_overrides_win_per_key():
    cells = expand_grid(["a=1,2 b=x", "a=3"], ["seed=range(2)"], ["seed=7", "c=z"])
    assert sorted(map(sorted, cells)) == sorted(
        map(sorted, [["a=1", "b=x", "seed=7", "c=z"], ["a=2", "b=x", "seed=7", "c=z"], ["a=3", "seed=7", "c=z"]])
    )


def test_table1_grid_composes_into_distinct_runs(cfg):
    runs = {store.run_key(cfg(*c)) for c in preset_grid("table1", ["seed=0"])}
    assert len(runs) == 16


def test_run_key_ignores_where_results_go_but_not_what_is_computed(cfg):
    a = store.run_key(cfg("store.root=/x", "train.device=cpu"))
    assert a == store.run_key(cfg("store.root=/y", "train.device=cuda"))
    assert a != store.run_key(cfg("seed=1")) and a != store.run_key(cfg("train.precision=fp32"))


SMALL = [
    "model.depth=20",
    "data=synthetic",
    "data.synthetic_train=256",
    "data.synthetic_test=128",
    "budget=smoke",
    "train.iterations=8",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.grad_flow=false",
]


def test_dry_run_lists_cells_and_runs_nothing(tmp_path):
    proc = cli("sweep", "table2", *SMALL, "seed=range(2)", f"store.root={tmp_path}", "--dry-run", check=True)
    assert "20 cells: 20 pending" in proc.stdout and "hours to go at 20 effective TFLOP/s" in proc.stdout
    assert "no GPU here, so this CPU trains them" in proc.stdout  # the estimate is a GPU's: said on a CPU
    assert "hours at 20 TFLOP/s" in proc.stdout and "(CPU)" not in proc.stdout  # the column says what it holds
    assert not list(tmp_path.glob("runs/*"))


def test_the_gpu_hour_estimate_is_per_cell_not_per_architecture(tmp_path):
    """Table 4 trains ResNet-1001 at batch 128 and at batch 64: one network, half the images."""
    proc = cli("sweep", "table4", "seed=0", "data=cifar10", f"store.root={tmp_path}", "--dry-run", check=True)
    rows = [line.split("│") for line in proc.stdout.splitlines() if "resnet1001" in line]  # model │ batch │ …
    hours = {row[2].strip(): float(row[-2]) for row in rows}
    assert hours["64"] == pytest.approx(hours["128"] / 2, rel=0.02)


def test_unwritable_store_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = cli("sweep", "table2", *SMALL, f"store.root={blocker}/store")
    assert proc.returncode == 2 and "is not writable" in proc.stderr and "store.root=DIR" in proc.stderr


def _two_cells(tmp_path) -> list[str]:
    """Table 2's preset cut to two cells (ResNet-110 configuration at depth 20, two placements, one seed)."""
    return [
        "table2",
        *SMALL,
        "model=resnet110",
        "unit=original,full_preact",
        "seed=0",
        f"store.root={tmp_path}",
        f"data.root={tmp_path / 'data'}",
    ]


@pytest.mark.slow
def test_sweep_runs_every_cell_then_skips_them_and_force_recomputes(tmp_path):
    args = _two_cells(tmp_path)
    proc = cli("sweep", *args, check=True)
    results = recorded(tmp_path)
    assert sorted(r["config"]["unit"]["name"] for r in results) == ["full_preact", "original"]
    assert all(r["status"] == "done" for r in results)
    for r in results:  # outside a terminal: each cell's log has a line per evaluation; the sweep, one per cell
        log = (tmp_path / "runs" / r["key"] / "train.log").read_text()
        assert f"{r['key']} starting:" in log and f"{r['key']} it 4/8  lr" in log and f"{r['key']} it 8/8" in log
    assert proc.stderr.count("] done") == 2 and "ETA" in proc.stderr
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    proc = cli("sweep", *args, check=True)
    assert "skipped" in proc.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    cli("sweep", *args, "--force", check=True)
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())


@pytest.mark.slow
def test_a_failing_cell_is_recorded_the_rest_go_on_and_a_plain_rerun_retries_it(tmp_path):
    """A fault injected into the workers (a sitecustomize on their PYTHONPATH) breaks seed 1's training; the
    sweep records it, finishes seed 0, exits 1, and the same command without the fault trains it."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "from resnet_ablate.train import Training\n"
        "real = Training.record_evaluation\n"
        "def broken(self, done, *args):\n"
        "    if self.runs[0].cfg.seed == 1:\n"
        "        raise RuntimeError('CUDA error: an illegal memory access was encountered')\n"
        "    return real(self, done, *args)\n"
        "Training.record_evaluation = broken\n"
    )
    args = [*_two_cells(tmp_path)[:-2], "unit=original", "seed=0,1", f"store.root={tmp_path}"]
    args.append(f"data.root={tmp_path / 'data'}")
    proc = cli("sweep", *args, env={"PYTHONPATH": str(inject)})
    assert proc.returncode == 1 and "1 cell(s) failed" in proc.stderr
    assert sorted(r["status"] for r in recorded(tmp_path)) == ["done", "failed"]
    (failed,) = [r for r in recorded(tmp_path) if r["status"] == "failed"]
    assert "illegal memory access" in failed["error"]
    cli("sweep", *args, check=True)  # no --retry-failed needed
    assert sorted(r["status"] for r in recorded(tmp_path)) == ["done", "done"]


def test_a_batch_larger_than_the_data_is_refused_before_the_store(tmp_path):
    args = ["table2", *SMALL, "data.synthetic_train=64", f"store.root={tmp_path / 's'}", f"data.root={tmp_path}"]
    proc = cli("sweep", *args)
    assert proc.returncode == 2 and "train.batch_size=128 exceeds the 64 training images" in proc.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_two_sweeps_at_once_never_train_the_same_cell_twice(tmp_path):
    args = _two_cells(tmp_path)
    cli("train", "--quiet", *SMALL, f"store.root={tmp_path}", f"data.root={tmp_path / 'data'}", check=True)  # data
    procs = [start_cli("sweep", *args) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=600)
    for run in tmp_path.glob("runs/*"):
        if (run / "train.log").exists():
            log = (run / "train.log").read_text()
            assert log.count("done:") <= 1, log
            assert len(record.read_jsonl(run / "metrics.jsonl")) == 2


@pytest.mark.slow
def test_native_hydra_multirun_with_hydras_basic_launcher(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_ablate.sweep",
            "-m",
            "sweep=table2",
            *SMALL,
            "model=resnet110",
            "unit=original",
            "seed=0,1",
            "hydra/launcher=basic",
            f"store.root={tmp_path}",
            f"data.root={tmp_path / 'data'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["config"]["seed"] for r in recorded(tmp_path)) == [0, 1]


@pytest.mark.slow
def test_configs_work_from_an_installed_wheel(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "resnet_ablate/conf/config.yaml" in names and "resnet_ablate/conf/sweep/table1.yaml" in names
    assert "hydra_plugins/resnet_ablate_launcher/local_launcher.py" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    probe = (
        "import resnet_ablate, json; from resnet_ablate.config import conf_dir; "
        "print(json.dumps([resnet_ablate.__file__, str(conf_dir())]))"
    )
    where = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert all(str(tmp_path / "site") in w for w in where)
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_ablate", "sweep", "table1", "--dry-run", "seed=0", f"store.root={tmp_path}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "16 cells: 16 pending" in proc.stdout


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_same_command_resumes(tmp_path):
    args = [
        "table2",
        *SMALL,
        "model=resnet20",
        "model.depth=8",
        "unit=original",
        "seed=0",
        "train.iterations=160",  # long enough that a loaded machine cannot finish before the Ctrl-C lands
        "train.milestones=[80,120]",
        "train.eval_every=4",
        f"store.root={tmp_path}",
        f"data.root={tmp_path / 'data'}",
    ]
    # as a terminal's foreground process: SIGINT at its default (a harness started in the background ignores it,
    # and an ignored SIGINT is inherited: Python then never raises KeyboardInterrupt)
    sweep = start_cli("sweep", *args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("runs/*/checkpoint.pt")):
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and "rerun the same command to resume" in err
    (run,) = tmp_path.glob("runs/*")
    assert not (run / "result.json").exists() and store.lock_holder(run) is None  # the worker is gone, nothing ended
    stopped_at = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    cli("sweep", *args, check=True, timeout=600)
    result = files.read_json(run / "result.json")
    assert result["status"] == "done" and result["resumed_from"][0] >= stopped_at > 0


def _fake_mps_control(folder, monkeypatch, exit_code=0):
    """Put a stand-in for nvidia-cuda-mps-control (no GPU here) first on PATH, with no MPS in use; it logs its
    arguments, stdin and pipe folder to the returned file."""
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    script = folder / "nvidia-cuda-mps-control"
    script.write_text(
        f'#!/bin/sh\necho "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {folder}/calls\n'
        f"[ -t 0 ] || cat >> {folder}/calls\nexit {exit_code}\n"
    )
    script.chmod(0o755)
    return folder / "calls"


def test_mps_daemon_runs_privately_for_the_block_and_is_stopped_after(tmp_path, monkeypatch):
    from resnet_ablate.workers import mps_daemon

    calls = _fake_mps_control(tmp_path, monkeypatch)
    with mps_daemon(True):
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]  # what the workers started here inherit
        assert os.path.isdir(pipe) and os.environ["CUDA_MPS_LOG_DIRECTORY"].startswith(os.path.dirname(pipe))
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ and not os.path.exists(pipe)
    assert calls.read_text().splitlines() == [f"args=-d pipe={pipe}", f"args= pipe={pipe}", "quit"]
    with mps_daemon(False):
        assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_mps_that_fails_to_start_leaves_the_gpus_time_shared(tmp_path, monkeypatch, capsys):
    from resnet_ablate.workers import mps_daemon

    _fake_mps_control(tmp_path, monkeypatch, exit_code=1)
    with mps_daemon(True):
        assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    assert "MPS did not start" in capsys.readouterr().out


@pytest.mark.slow
def test_a_sweep_sharing_a_gpu_runs_its_workers_under_one_mps_daemon(tmp_path, monkeypatch):
    """``launcher.jobs_per_gpu=2`` on GPU slot 0 (the workers fall back to the CPU here): the daemon starts before
    the cells and stops after them; with one job per GPU it is never started."""
    calls = _fake_mps_control(tmp_path, monkeypatch)
    cli("sweep", *_two_cells(tmp_path / "a"), "launcher.gpus=0", "launcher.jobs_per_gpu=2", check=True)
    assert all(r["status"] == "done" for r in recorded(tmp_path / "a"))
    log = calls.read_text().splitlines()
    assert [line.split(" pipe=")[0] for line in log] == ["args=-d", "args=", "quit"]
    calls.unlink()
    cli("sweep", *_two_cells(tmp_path / "b"), "launcher.gpus=0", check=True)
    assert not calls.exists()


def test_the_live_view_has_an_eta_once_a_cell_ended_though_the_running_one_has_no_evaluation_yet(tmp_path):
    from resnet_ablate.progress import SweepDisplay

    display = SweepDisplay([(f"cell {i}", tmp_path / str(i), 100, 32) for i in range(3)])
    display.started -= 60  # a minute in: two cells of 100 iterations ended, the third just started
    display.finish(0, "done")
    display.finish(1, "done")
    display.start(2, None)
    head, _ = display.view()
    assert "cells 2/3 ended" in head and "ETA 0.5 min" in head


def test_an_override_on_a_key_rows_set_picks_those_rows_and_a_grid_never_lists_a_run_twice():
    """after2016 shortcut=layerscale is its LayerScale row (it put LayerScale on every row: fixup+layerscale, a
    duplicate key, hours counted twice); seed=0,0 is one cell; a selection no row holds is one line."""
    from resnet_ablate.grid import plan

    cells = plan("after2016", ["shortcut=layerscale", "seed=0"])
    assert [c.cfg.shortcut.kind for c in cells] == ["layerscale"] * 2 and {c.cfg.init for c in cells} == {"he"}
    assert len({c.directory for c in cells}) == len(cells)
    assert len(plan("table2", ["unit=original", "seed=0,0"])) == 2
    proc = cli("sweep", "after2016", "norm=group", "shortcut=rezero", "--dry-run")
    assert proc.returncode == 2 and "no cell of the grid holds" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["-e"]], ids=["regular", "editable"])
def test_the_hydra_plugins_are_found_in_a_regular_and_a_strict_editable_install(tmp_path, mode):
    """``pip install -e .`` (PEP 660, the way most users install a checkout) hid the plugins from Hydra's scan of
    the hydra_plugins namespace: every command run outside the repository said "unknown hydra/sweeper"."""
    import site
    import sysconfig

    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    Path(purelib, "deps.pth").write_text(site.getsitepackages()[0] + "\n")  # torch & co. from this environment
    python = str(env_dir / "bin" / "python")
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *mode, str(ROOT)]
    subprocess.run(install, check=True, capture_output=True, cwd=tmp_path)
    where = subprocess.run(
        [python, "-c", "import resnet_ablate; print(resnet_ablate.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,  # fmt: skip
    ).stdout
    assert where.startswith(str(ROOT) if mode else purelib), where  # the install under test, not the checkout
    proc = subprocess.run(
        [python, "-m", "resnet_ablate", "sweep", "table1", "--dry-run", "seed=0", f"store.root={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,  # fmt: skip
    )
    assert proc.returncode == 0 and "16 cells: 16 pending" in proc.stdout, proc.stderr


def test_a_plans_seed_copies_are_keyed_as_their_configs_and_a_huge_grid_is_refused_at_once():
    """plan keys a seed's copy from its cell's fields (1,000 cells: 16.6 s, now 8.6 s); a 100,000-cell grid is
    refused with the reason in seconds (it composed silently for 10 minutes)."""
    from resnet_ablate.grid import MAX_CELLS, plan

    cells = plan("after2016", ["seed=range(2)"])
    assert all(c.directory == store.run_dir(c.cfg) for c in cells) and len(cells) == 44
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"more than {MAX_CELLS:,} cells; split it"):
        expand_grid([], [], ["seed=range(100000)"])
    assert time.monotonic() - start < 60  # quadratic de-duplication took minutes here
