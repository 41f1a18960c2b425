"""Cluster launchers for real: SLURM (a single-node cluster from tests/cluster/slurm.sh, sbatch through
hydra-submitit-launcher) and Ray (a local instance through hydra-ray-launcher)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from resnet_ablate import files, record
from tests.helpers import recorded

from .conftest import ROOT, cli, start_cli

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "tests" / "cluster" / "slurm.sh"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("slurmctld") is None or shutil.which("mariadbd") is None:
        pytest.skip("SLURM is not installed here: run `tests/cluster/slurm.sh install` (as .ci/run does)")
    state = tmp_path_factory.mktemp("slurm")
    subprocess.run(["bash", str(SCRIPT), "start", str(state)], check=True, capture_output=True, timeout=120)
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)
        os.environ.pop("SLURM_CONF", None)


SLURM = [
    "launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]
SMALL = [
    "model=resnet20",
    "model.depth=8",
    "data=synthetic",
    "data.synthetic_train=256",
    "data.synthetic_test=128",
    "budget=smoke",
    "train.grad_flow=false",
]


def _two_cells(tmp_path) -> list[str]:
    return [
        "table2",
        *SMALL,
        "unit=original,full_preact",
        "seed=0",
        f"store.root={tmp_path}",
        f"data.root={tmp_path / 'data'}",
    ]


@pytest.mark.slurm
def test_a_grid_runs_as_a_slurm_job_array(cluster, tmp_path):
    args = [
        *_two_cells(tmp_path),
        *SLURM,
    ]
    cli("sweep", *args, check=True, timeout=300)
    results = recorded(tmp_path)
    assert sorted(r["config"]["unit"]["name"] for r in results) == ["full_preact", "original"]
    assert all(r["status"] == "done" for r in results)
    status = cli("status", "table2", *args[1:], check=True)
    assert status.stdout.count("COMPLETED") == 2  # SLURM job ids and states beside the cells


@pytest.mark.slurm
@pytest.mark.parametrize("packing", ["launcher.jobs_per_gpu=2", "launcher.seeds_together=2"])
def test_cells_packed_by_process_or_stacked_by_seed_need_fewer_slurm_jobs(cluster, tmp_path, packing):
    args = [
        "table2",
        *SMALL,
        "unit=original,full_preact",
        "seed=0,1",
        f"store.root={tmp_path}",
        f"data.root={tmp_path / 'data'}",
        *SLURM,
        "hydra.launcher.cpus_per_task=2",
        packing,
    ]
    cli("sweep", *args, check=True, timeout=300)
    results = recorded(tmp_path)
    assert len(results) == 4 and all(r["status"] == "done" for r in results)
    assert {r["trained_together"] for r in results} == {2 if "seeds" in packing else 1}
    jobs = [files.read_json(run / "scheduler.json")["slurm_job_id"] for run in tmp_path.glob("runs/*")]
    assert len(set(jobs)) == 2 and all(jobs.count(j) == 2 for j in jobs)  # 4 cells, 2 array tasks


@pytest.mark.slurm
def test_a_requeued_cell_resumes_from_its_checkpoint(cluster, tmp_path):
    args = [
        "table2",
        *SMALL,
        "unit=original",
        "seed=0",
        "train.iterations=200",  # long enough for the requeue to land mid-run on a busy machine
        "train.milestones=[100,150]",
        "train.eval_every=5",
        "train.checkpoint_every=5",
        f"store.root={tmp_path}",
        f"data.root={tmp_path / 'data'}",
        *SLURM,
    ]
    sweep = start_cli("sweep", *args, stderr=subprocess.STDOUT)
    deadline, job = time.time() + 240, None
    while time.time() < deadline:
        run = next(iter(tmp_path.glob("runs/*")), None)
        rows = record.read_jsonl(run / "metrics.jsonl") if run else []
        if rows and rows[-1]["iteration"] >= 15 and (run / "scheduler.json").exists():
            job = files.read_json(run / "scheduler.json")["slurm_job_id"]
            break
        time.sleep(0.2)
    assert job, "the cell never got going"
    subprocess.run(["scontrol", "requeue", job], check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    result = files.read_json(run / "result.json")
    assert result["status"] == "done" and result["iterations"] == 200
    assert result["resumed_from"] and result["resumed_from"][0] >= 10  # resumed, not restarted
    iterations = [r["iteration"] for r in record.read_jsonl(run / "metrics.jsonl")]
    assert iterations == list(range(5, 201, 5))


@pytest.mark.slurm
def test_a_job_the_partition_can_never_start_is_cancelled_with_the_schedulers_reason(cluster, tmp_path):
    more_cpus_than_the_node = f"hydra.launcher.cpus_per_task={os.cpu_count() + 1}"
    proc = cli("sweep", *_two_cells(tmp_path), *SLURM, more_cpus_than_the_node, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "SLURM cannot start 2 job(s) of this sweep (PartitionConfig" in proc.stderr
    queue = subprocess.run(["squeue", "-h", "-t", "PENDING"], capture_output=True, text=True, check=True)
    assert queue.stdout == ""  # cancelled, not left waiting
    assert not list(tmp_path.glob("runs/*/result.json"))


def test_slurm_launcher_without_sbatch_fails_at_once(tmp_path):
    proc = cli(
        "sweep", "table2", *SMALL, f"store.root={tmp_path}", *SLURM, env={"PATH": os.path.dirname(sys.executable)}
    )
    assert proc.returncode == 2 and "needs SLURM's sbatch on PATH" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_grid_runs_as_ray_tasks_on_a_local_ray_instance(tmp_path):
    env = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    args = [
        *_two_cells(tmp_path),
        "launcher=ray",
        "hydra.launcher.ray.remote.num_gpus=0",
        "hydra.launcher.ray.init.num_cpus=2",
    ]
    cli("sweep", *args, env=env, check=True, timeout=300)
    assert sorted(r["status"] for r in recorded(tmp_path)) == ["done", "done"]


def test_ray_launcher_asking_for_a_missing_gpu_fails_at_once(tmp_path):
    proc = cli("sweep", "table2", *SMALL, f"store.root={tmp_path}", "launcher=ray")
    assert proc.returncode == 2 and "asks for a GPU per cell but this machine has none" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_ray_launcher_with_an_unreachable_cluster_fails_at_once(tmp_path):
    proc = cli(
        "sweep",
        "table2",
        *SMALL,
        f"store.root={tmp_path}",
        "launcher=ray",
        "hydra.launcher.ray.init.address=127.0.0.1:9",
    )
    assert proc.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in proc.stderr
    assert not (tmp_path / "runs").exists()
