"""Nothing a user types, nothing in a data file and nothing the machine does leaves a wrong record: each test
reproduces one finding of the fault campaign with real files, real processes and real signals."""

import os
import pickle
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from resnet_ablate import files, record, store
from resnet_ablate.cli import app
from resnet_ablate.data import write_synthetic
from resnet_ablate.files import atomic_write
from resnet_ablate.sweep import run_cells

from .conftest import TINY, cli, start_cli


def _one_line_error(result, code: int = 2) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code and len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def _store(tmp_path, *extra):
    return [*TINY, "budget=smoke", f"store.root={tmp_path / 'store'}", f"data.root={tmp_path / 'data'}", *extra]


# 1, 5: a result always has numbers; restarts are all recorded; no duplicated rows after a restart from scratch


def test_a_run_killed_before_its_result_resumes_as_done_with_its_numbers(cfg, tmp_path):
    c = cfg(*_store(tmp_path))
    (first,) = run_cells(c)
    d = store.run_dir(c)
    for lost in (["result.json"], ["result.json"], ["result.json", "metrics.jsonl"]):
        for name in lost:  # as a kill after the final checkpoint, before result.json, leaves it
            (d / name).unlink()
        (again,) = run_cells(c)
        assert again["status"] == "done" and again["test_error"] == first["test_error"]
    assert again["resumed_from"] == [24, 24, 24]  # every restart, each from the final checkpoint


def test_a_restart_from_scratch_leaves_no_rows_of_the_first_attempt(cfg, tmp_path):
    c = cfg(*_store(tmp_path))
    run_cells(c)
    d = store.run_dir(c)
    for name in ("result.json", "checkpoint.pt"):  # killed before any checkpoint: records but nothing to resume
        (d / name).unlink()
    (result,) = run_cells(c)
    assert [r["iteration"] for r in record.read_jsonl(d / "grad_flow.jsonl")] == [0, 8, 16, 24]
    assert [r["iteration"] for r in record.read_jsonl(d / "metrics.jsonl")] == [8, 16, 24]
    assert result["resumed_from"] == [0]


# 3, 4: only a failure of training itself is recorded, and a plain rerun retries it; foreign checkpoints


def test_a_training_failure_is_recorded_and_a_plain_rerun_retries_it(cfg, tmp_path, monkeypatch):
    from resnet_ablate.train import Training, TrainingError

    c = cfg(*_store(tmp_path))
    real = Training.record_evaluation

    def broken(self, done, *args):
        if done == 16:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, done, *args)

    monkeypatch.setattr(Training, "record_evaluation", broken)
    with pytest.raises(TrainingError, match="illegal memory access"):
        run_cells(c)
    d = store.run_dir(c)
    assert files.read_json(d / "result.json")["status"] == "failed" and store.cell_status(d) == "failed"
    monkeypatch.setattr(Training, "record_evaluation", real)
    (result,) = run_cells(c)  # no --retry-failed: it resumes from its checkpoint at 8
    assert result["status"] == "done" and result["resumed_from"] == [8]


@pytest.mark.parametrize(
    "setting,problem",
    [
        ("train.checkpoint_every=0", "train.checkpoint_every=0 is out of range; it must be >= 1"),
        ("train.device=cuda", "no CUDA device is visible"),
        ("data=cifar10", "cifar10 not found at"),
        ("model.widths=[0,0,0]", "model.widths=[0, 0, 0] is out of range; each must be >= 1"),
        ("data.root=FILE", "is not a folder; point it at the folder that holds the datasets"),
    ],
)
def test_settings_outside_the_runs_identity_never_touch_the_cell(tmp_path, setting, problem):
    (tmp_path / "file").write_text("")
    args = _store(tmp_path, setting.replace("FILE", str(tmp_path / "file")), "data.download=false")
    assert problem in _one_line_error(CliRunner().invoke(app, ["train", *args]))
    assert not (tmp_path / "store").exists()


def test_a_failed_download_records_nothing_against_the_cell(tmp_path):
    proc = cli("train", "--quiet", *_store(tmp_path, "data=cifar10", "data.download=true"), timeout=300)
    assert proc.returncode == 1 and "cifar10 not found" in proc.stderr and "download failed" in proc.stderr
    assert not list((tmp_path / "store").glob("runs/*"))  # not even a directory holding a lock: status lists none


@pytest.mark.parametrize("foreign", [{"foo": torch.zeros(2)}, torch.zeros(3), {"iteration": 5}])
def test_a_checkpoint_that_is_not_ours_is_set_aside_and_the_run_starts_over(cfg, tmp_path, foreign, capsys):
    c = cfg(*_store(tmp_path))
    d = store.run_dir(c)
    d.mkdir(parents=True)
    torch.save(foreign, d / "checkpoint.pt")
    (result,) = run_cells(c)
    assert result["status"] == "done" and result["iterations"] == 24 and result["resumed_from"] == []
    assert "not a resnet-ablate checkpoint" in capsys.readouterr().out
    assert (d / "checkpoint.pt.rejected").exists()  # kept, not deleted


def test_a_checkpoint_of_another_cell_is_refused(cfg, tmp_path):
    a, b = cfg(*_store(tmp_path)), cfg(*_store(tmp_path, "seed=1"))
    run_cells(a)
    store.run_dir(b).mkdir(parents=True)
    os.replace(store.run_dir(a) / "checkpoint.pt", store.run_dir(b) / "checkpoint.pt")
    (result,) = run_cells(b)
    assert result["resumed_from"] == [] and (store.run_dir(b) / "checkpoint.pt.rejected").exists()


# 7: values the schema accepts but training cannot use


@pytest.mark.parametrize(
    "setting,problem",
    [
        ("seed=-1", "seed=-1 is out of range"),
        ("train.batch_size=0", "train.batch_size=0 is out of range"),
        ("train.eval_every=0", "train.eval_every=0 is out of range"),
        ("train.iterations=-5", "train.iterations=-5 is out of range"),
        ("train.batch_size=1024", "train.batch_size=1024 exceeds the 512 training images"),
        ("train.milestones=[20,10]", "in increasing order"),
        ("shortcut.p=1.5", "shortcut.p does not apply to shortcut=identity (its parameters: none)"),
        ("shortcut=scaling shortcut.gate_bias=-6", "shortcut.gate_bias does not apply to shortcut=scaling"),
        ("shortcut=dropout shortcut.p=1.5", "shortcut.p=1.5 is out of range; it must be in [0, 1)"),
        ("launcher.seeds=[0,-2]", "launcher.seeds holds -2"),
    ],
)
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_values_training_cannot_use_are_one_line_errors_before_the_store(tmp_path, setting, problem, command):
    if command == "sweep" and setting.startswith("launcher.seeds"):
        return  # the sweeper sets launcher.seeds itself
    args = ["table2", "--dry-run"] if command == "sweep" else []
    result = CliRunner().invoke(app, [command, *args, *_store(tmp_path, *setting.split())])
    assert problem in _one_line_error(result)
    assert not (tmp_path / "store").exists()


# 8, 11: damaged and crafted data


class Payload:
    """A pickle that, loaded by ``pickle.load``, would create a file (the campaign's crafted batch ran a shell)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("damage", ["truncated", "random", "wrong shape", "crafted", "labels"])
def test_damaged_or_crafted_cifar_is_a_one_line_error_naming_the_file(tmp_path, damage):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_synthetic(folder, 100, 50)
    batch = folder / "data_batch_1"
    marker = tmp_path / "pwned"
    if damage == "truncated":
        batch.write_bytes(batch.read_bytes()[:500])
    elif damage == "random":
        batch.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "wrong shape":
        batch.write_bytes(pickle.dumps({"data": np.zeros((20, 100), np.uint8), "labels": [0] * 20}))
    elif damage == "crafted":
        batch.write_bytes(pickle.dumps({"data": Payload(marker), "labels": []}))
    else:
        batch.write_bytes(pickle.dumps({"data": np.zeros((20, 3072), np.uint8), "labels": [12] * 20}))
    result = CliRunner().invoke(app, ["train", *_store(tmp_path, "data=cifar10", "train.batch_size=16")])
    line = _one_line_error(result)
    assert str(folder) in line
    assert str(batch) in line or damage == "labels"
    assert not marker.exists() and not (tmp_path / "store").exists()
    if damage == "crafted":
        assert "io.open" in line


def test_the_restricted_reader_loads_batches_written_by_python2_style_pickles(tmp_path):
    from resnet_ablate.data import _read_batch

    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({"data": np.ones((3, 3072), np.uint8), "labels": [1, 2, 3]}, protocol=protocol))
        x, y = _read_batch(path, "labels")
        assert x.shape == (3, 3, 32, 32) and y.tolist() == [1, 2, 3]


# 9: a full disk


def _small_disk(path, size: str):
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return mount.returncode == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_path_and_the_last_checkpoint_stays(tmp_path):
    disk = tmp_path / "disk"
    if not _small_disk(disk, "1200k"):  # room for one checkpoint (about 0.65 MB) but not a second beside it
        pytest.skip("mounting a tmpfs needs root")
    try:
        args = [*TINY, "budget=smoke", "train.checkpoint_every=8", f"store.root={disk}", f"data.root={tmp_path}"]
        proc = cli("train", "--quiet", *args)
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(errors) == 1, proc.stderr
        assert "No space left on device" in errors[0] and "checkpoint.pt" in errors[0] and str(disk) in errors[0]
        (run,) = disk.glob("runs/*")
        assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 8  # the last good one
        assert not (run / "result.json").exists() and not list(run.glob(".checkpoint.pt.*"))
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        cli("train", "--quiet", *args, check=True)
        assert files.read_json(run / "result.json")["resumed_from"] == [8]
    finally:
        subprocess.run(["umount", str(disk)])


# 10, 13: read commands on a damaged or foreign store; status without a preset


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    for unit in ("original", "full_preact"):
        run_cells(_cfg([*TINY, "budget=smoke", f"unit={unit}", f"store.root={root}", f"data.root={root / 'data'}"]))
    runs = root / "runs"
    foreign = {"a": b'{"hello": "world"}', "b": b"[1, 2]", "c": bytes(range(256)), "d": b'{"status": 1}'}
    for name, content in foreign.items():
        (runs / name).mkdir()
        (runs / name / "result.json").write_bytes(content)
    (runs / "stray.txt").write_text("not a run")
    (runs / "e").mkdir()
    (runs / "e" / "config.yaml").write_bytes(b"\x00\xff: [unclosed")
    for metrics in runs.glob("*/metrics.jsonl"):
        with open(metrics, "a") as f:
            f.write('42\n["x"]\n{"iteration": 99}\n')
    return root


def _cfg(overrides):
    from resnet_ablate.config import compose

    return compose(overrides)


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["table", "table2", "data=synthetic", "model=resnet20"],
        ["compare", "unit=original,full_preact", "data=synthetic"],
        ["plot", "runs", "data=synthetic"],
        ["plot", "gradient-flow", "data=synthetic"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_read_commands_skip_what_is_not_a_run_and_say_so_once(damaged, command, tmp_path):
    proc = cli(*command, f"store.root={damaged}", *(["--out", str(tmp_path)] if command[0] == "plot" else []))
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: skipped")]
    assert sorted(notes) == [  # each entry said once, with its reason
        "note: skipped a: result.json has no status of ours (None)",
        "note: skipped b: result.json is a JSON list, not an object",
        "note: skipped c: result.json is not JSON",
        "note: skipped d: result.json has no status of ours (1)",
        "note: skipped stray.txt: not a run directory",
    ]
    if command[0] == "status":
        assert proc.stdout.count("done") == 2 and "pending" in proc.stdout


def test_a_table_shows_a_net_the_paper_does_not_hold_in_its_own_column(damaged):
    proc = cli("table", "table2", "data=synthetic", "model=resnet20", "--format", "md", f"store.root={damaged}")
    assert proc.returncode == 0, proc.stderr
    assert "resnet20 at depth 8 ours" in proc.stdout and "(6.61)" in proc.stdout and "no Δ" in proc.stdout


# 12: a store a group can share


def test_store_files_get_the_mode_open_would_give_them(tmp_path):
    old = os.umask(0o002)
    try:
        atomic_write(tmp_path / "x.json", b"{}")
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
    atomic_write(tmp_path / "y.json", b"{}")
    assert (tmp_path / "y.json").stat().st_mode & 0o777 == 0o666 & ~old


# 2, 6: killed workers, killed sweeps


def _sweep_args(tmp_path, iterations=400):
    return [
        "table2",
        *TINY[2:],
        "model=resnet20",
        "model.depth=8",
        "unit=original",
        "seed=0",
        f"train.iterations={iterations}",
        "train.batch_size=32",  # long enough to be killed mid-run, cheap to finish on resume
        "train.milestones=[200,300]",
        "train.warmup_iterations=0",
        "train.eval_every=4",
        "train.checkpoint_every=4",
        f"store.root={tmp_path}",
        f"data.root={tmp_path / 'data'}",
    ]


def _worker_pid(tmp_path, timeout=240) -> int:
    """The pid in the cell's lock once it has a checkpoint (the worker is training)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for run in tmp_path.glob("runs/*"):
            holder = files.read_json(run / "lock")  # {"host", "pid", "since"} while a process holds it
            if (run / "checkpoint.pt").exists() and holder:
                return holder["pid"]
        time.sleep(0.1)
    raise AssertionError("no worker started training")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        status = f"/proc/{pid}/status"
        if os.path.exists(status) and "zombie" in open(status).read():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_a_sweep_whose_worker_was_killed_exits_non_zero(tmp_path):
    sweep = start_cli("sweep", *_sweep_args(tmp_path))
    os.kill(_worker_pid(tmp_path), signal.SIGKILL)  # as the OOM killer does
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1 and "1 did not end" in err and "killed" in err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_sweep_leaves_no_worker_behind_and_its_cell_resumes(tmp_path, sig):
    sweep = start_cli("sweep", *_sweep_args(tmp_path))
    worker = _worker_pid(tmp_path)
    sweep.send_signal(sig)
    sweep.communicate(timeout=60)
    assert sweep.returncode == (143 if sig == signal.SIGTERM else -9)
    assert _gone(worker, 30), "the worker outlived its sweep"
    (run,) = tmp_path.glob("runs/*")
    log = (run / "train.log").read_text()
    assert "SIGTERM: checkpoint saved at iteration" in log  # it stopped itself, checkpointing
    stopped_at = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    cli("sweep", *_sweep_args(tmp_path, iterations=400), check=True, timeout=600)
    assert files.read_json(run / "result.json")["resumed_from"] == [stopped_at]


def test_status_takes_overrides_without_a_preset(damaged):
    result = CliRunner().invoke(app, ["status", f"store.root={damaged}"])
    assert result.exit_code == 0 and "full_preact" in result.output
