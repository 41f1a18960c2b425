"""The recipe, the records, and resume: exact after SIGKILL, diverged runs as results, corrupt checkpoints."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from resnet_ablate import files, record, store
from resnet_ablate.data import CifarOnDevice, load_cifar, write_synthetic
from resnet_ablate.train import lr_at, train
from tests.helpers import recorded

from .conftest import TINY, cli, start_cli


def test_schedule_warms_up_then_returns_to_0_1_and_decays_at_32k_48k(cfg):
    t = cfg().train
    assert (t.iterations, list(t.milestones), t.warmup_iterations) == (64000, [32000, 48000], 400)
    assert [lr_at(i, t) for i in (0, 399)] == [0.01, 0.01]
    assert lr_at(400, t) == 0.1 and lr_at(31999, t) == 0.1  # the warm-up returns to 0.1
    assert lr_at(32000, t) == pytest.approx(0.01) and lr_at(48000, t) == pytest.approx(0.001)


def test_budgets_keep_the_milestones_at_the_same_fractions(cfg):
    for name in ("half", "quarter", "tenth", "hundredth"):
        t = cfg(f"budget={name}").train
        assert [m / t.iterations for m in t.milestones] == [0.5, 0.75]


def test_synthetic_data_is_written_in_torchvisions_cifar_layout(tmp_path):
    import torchvision

    write_synthetic(tmp_path / "cifar-10-batches-py", 100, 50)
    ds = torchvision.datasets.CIFAR10.__new__(torchvision.datasets.CIFAR10)  # torchvision's own reader, minus MD5
    ds.root, ds.train, ds.base_folder, ds.transform, ds.target_transform = (
        str(tmp_path),
        True,
        "cifar-10-batches-py",
        None,
        None,
    )
    ds.data, ds.targets = [], []
    import pickle

    for i in range(1, 6):
        with open(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        ds.data.append(entry["data"])
        ds.targets.extend(entry["labels"])
    ds.data = np.vstack(ds.data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
    image, label = ds[0]
    assert image.size == (32, 32) and len(ds) == 100


def test_missing_cifar_is_a_clear_error_naming_the_folder(cfg, tmp_path):
    c = cfg("data=cifar10", f"data.root={tmp_path}", "data.download=false")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar(c)


def test_train_batches_are_padded_crops_and_flips_of_the_normalised_images(cfg, tmp_path):
    c = cfg(*TINY, f"data.root={tmp_path}", "train.batch_size=64")
    data = CifarOnDevice(c, torch.device("cpu"))
    x, y = data.train_batch(3)
    padded = data.train_x[data._permutation(0)[3 * 64 : 4 * 64]]
    for img, src in zip(x, padded):
        windows = [src[:, r : r + 32, q : q + 32] for r in range(9) for q in range(9)]
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(2)) for w in windows)
    assert torch.all(data.train_x[:, :, :4] == 0)  # zero padding after normalisation (authors' order)


def test_a_run_writes_the_run_directory_contract(cfg, tmp_path):
    c = cfg(*TINY, "budget=smoke", f"store.root={tmp_path}", f"data.root={tmp_path}")
    result = train(c, store.run_dir(c))
    d = store.run_dir(c)
    rows = record.read_jsonl(d / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [8, 16, 24]
    assert {
        "iteration",
        "epoch",
        "lr",
        "train_loss",
        "train_error",
        "test_loss",
        "test_error",
        "images_per_s",
        "elapsed",
    } <= set(rows[0])
    assert result["status"] == "done" and result["test_error"] == rows[-1]["test_error"]
    ckpt = torch.load(d / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 24 and "model" in ckpt and "optimizer" in ckpt and "data" in ckpt["rng"][0]
    assert OmegaConf.load(d / "config.yaml").model.depth == 8
    flow = record.read_jsonl(d / "grad_flow.jsonl")
    assert [r["iteration"] for r in flow] == [0, 8, 16, 24] and len(flow[0]["norms"]) == 3


def test_a_diverging_run_ends_as_a_diverged_result(cfg, tmp_path):
    c = cfg(
        *TINY,
        "budget=smoke",
        "train.lr=1e12",
        "train.warmup_iterations=0",
        f"store.root={tmp_path}",
        f"data.root={tmp_path}",
    )
    result = train(c, store.run_dir(c))
    assert result["status"] == "diverged" and result["diverged_at"] == 8


def test_a_corrupt_checkpoint_restarts_the_run_from_scratch(cfg, tmp_path, capsys):
    c = cfg(*TINY, "budget=smoke", f"store.root={tmp_path}", f"data.root={tmp_path}")
    d = store.run_dir(c)
    d.mkdir(parents=True)
    (d / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    result = train(c, d)
    assert "unreadable" in capsys.readouterr().out
    assert result["status"] == "done" and result["iterations"] == 24


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed")} for r in rows]


def _killed_and_resumed_vs_uninterrupted(overrides: list[str], tmp_path, kill_after: int, sig=signal.SIGKILL):
    """Train the tiny deterministic run(s) with ``overrides`` once uninterrupted (store a) and once killed by
    ``sig`` (the whole process group) after ``kill_after`` iterations, then resumed (store b); returns each run's
    pair of checkpoints, having checked the records match."""
    common = [
        *TINY,
        "train.eval_every=4",
        "train.checkpoint_every=4",
        "train.deterministic=true",
        "train.warmup_iterations=0",  # the default 400 would outlast these short schedules (refused)
        f"data.root={tmp_path / 'data'}",
        *overrides,
    ]
    cli("train", "--quiet", *common, f"store.root={tmp_path / 'a'}", check=True)
    b = tmp_path / "b"
    proc = start_cli(
        "train", "--quiet", *common, f"store.root={b}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = record.read_jsonl(next(iter(b.glob("runs/*/metrics.jsonl")), b / "none"))
        if rows and rows[-1]["iteration"] >= kill_after:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    assert proc.wait() == (-sig if sig == signal.SIGKILL else 128 + sig)  # 128 + n: it checkpointed and exited
    runs_a, runs_b = (sorted((tmp_path / s).glob("runs/*")) for s in "ab")
    assert not any((r / "result.json").exists() for r in runs_b), "killed too late: a run had ended"
    cli("train", "--quiet", *common, f"store.root={b}", check=True)
    assert [r.name for r in runs_a] == [r.name for r in runs_b]  # same identities, same keys
    pairs = []
    for run_a, run_b in zip(runs_a, runs_b):
        assert _strip(record.read_jsonl(run_a / "metrics.jsonl")) == _strip(record.read_jsonl(run_b / "metrics.jsonl"))
        ra, rb = (files.read_json(r / "result.json") for r in (run_a, run_b))
        assert ra["test_error"] == rb["test_error"] and ra["train_loss"] == rb["train_loss"] and rb["resumed_from"]
        sa, sb = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (run_a, run_b))
        assert sa["model"].keys() == sb["model"].keys()
        for key in sa["model"]:
            assert torch.equal(sa["model"][key], sb["model"][key]), key
        pairs.append((sa, sb))
    return pairs


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_identical_to_an_uninterrupted_one(tmp_path):
    overrides = ["shortcut=dropout", "train.iterations=48", "train.milestones=[24,36]"]
    [(sa, sb)] = _killed_and_resumed_vs_uninterrupted(overrides, tmp_path, kill_after=14)
    for ga, gb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(ga["momentum_buffer"], gb["momentum_buffer"])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_request_checkpoints_where_training_is_and_the_resumed_run_is_bit_identical(tmp_path, sig):
    """A scheduler's preemption, the local launcher's Ctrl-C (SIGTERM) or a Ctrl-C in the terminal (SIGINT) loses
    nothing: with no periodic checkpoint before the end, the run resumes from where the signal found it."""
    overrides = ["train.iterations=32", "train.milestones=[16,24]", "train.checkpoint_every=1000"]
    _killed_and_resumed_vs_uninterrupted(overrides, tmp_path, kill_after=8, sig=sig)
    (run,) = (tmp_path / "b").glob("runs/*")
    assert files.read_json(run / "result.json")["resumed_from"][0] >= 8


def test_imagenet_from_a_tiny_image_folder_trains_and_reports_top5(cfg, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c in ("n01", "n02", "n03"):
            (tmp_path / "imagenet" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "imagenet" / split / c / f"{i}.jpeg"
                )
    c = cfg(
        "model=imagenet_resnet152",
        "model.stages=[1,1,1,1]",
        "model.widths=[8,8,8,8]",
        "unit=full_preact",
        "data=imagenet",
        "data.num_classes=3",
        "data.image_size=32",
        "data.scale=[32,40]",
        "data.test_size=32",
        "data.workers=0",
        "budget=imagenet",
        "train.batch_size=4",
        "train.iterations=6",
        "train.milestones=[3]",
        "train.eval_every=3",
        "train.checkpoint_every=3",
        "train.device=cpu",
        f"data.root={tmp_path}",
        f"store.root={tmp_path}",
    )
    result = train(c, store.run_dir(c))
    assert result["status"] == "done" and result["iterations"] == 6
    assert 0 <= result["test_error_top5"] <= result["test_error"] <= 1


@pytest.mark.slow
def test_two_process_ddp_run_resumes_bit_identical_after_sigkill(tmp_path):
    """train.gpus=2 on the CPU (gloo): the same records and checkpoints as one process, and exact resume."""
    overrides = ["train.gpus=2", "train.iterations=40", "train.milestones=[20,30]"]
    [(sa, _)] = _killed_and_resumed_vs_uninterrupted(overrides, tmp_path, kill_after=12)
    assert len(sa["rng"]) == 2  # every rank's RNG states


@pytest.mark.slow
def test_bf16_autocast_trains_within_noise_of_fp32(cfg, tmp_path):
    """The recipe is unchanged by bf16 (here on the CPU, where ``precision=bf16`` autocasts too)."""
    results = {}
    for precision in ("fp32", "bf16"):
        c = cfg(
            *TINY,
            "train.iterations=60",
            "train.lr=0.01",  # 60 iterations at 0.01 throughout: no warm-up, no decay
            "train.warmup_iterations=0",
            "train.milestones=[]",
            "train.eval_every=20",
            "train.grad_flow=false",
            f"train.precision={precision}",
            f"store.root={tmp_path}",
            f"data.root={tmp_path}",
        )
        results[precision] = train(c, store.run_dir(c))
    fp32, bf16 = results["fp32"], results["bf16"]
    assert fp32["key"] != bf16["key"]
    assert abs(fp32["test_error"] - bf16["test_error"]) < 0.05
    assert abs(fp32["train_loss"] - bf16["train_loss"]) < 0.1 * fp32["train_loss"]


def test_workers_writing_the_synthetic_dataset_at_once_do_not_collide(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    folder = tmp_path / "cifar-10-batches-py"
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(write_synthetic, [folder] * 8, [2000] * 8, [1000] * 8))
    assert sorted(p.name for p in folder.iterdir()) == [
        "batches.meta",
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]


@pytest.mark.slow
def test_inductor_compiles_one_graph_per_unit_shape_and_trains_like_eager(cfg, tmp_path):
    """``compile=inductor``: units of one shape share a compiled graph (depth 14: stage 1 one shape, stages 2 and 3
    a first unit and the rest), evaluation and gradient flow run uncompiled, and the run matches an eager one."""
    from torch._dynamo.utils import counters

    counters.clear()
    results = {}
    for mode in ("none", "inductor"):
        c = cfg(
            *TINY,
            "model.depth=14",
            "budget=smoke",
            f"train.compile={mode}",
            f"store.root={tmp_path / mode}",
            f"data.root={tmp_path}",
        )
        results[mode] = train(c, store.run_dir(c))
    assert counters["stats"]["unique_graphs"] == 5
    eager, compiled = results["none"], results["inductor"]
    assert compiled["status"] == "done" and compiled["key"] == eager["key"]  # the compile mode is not identity
    # inductor reorders float sums (differently on each CPU's vector units): 24 steps drift ~0.2% on an AMD EPYC
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-2)
    assert compiled["test_error"] == pytest.approx(eager["test_error"], abs=0.01)


@pytest.mark.slow
def test_inductor_shares_one_graph_per_unit_shape_under_drop_path(cfg, tmp_path):
    """Units differ in their drop rate p_l (a tensor, not a float the compiler would guard on): depth 20's nine units
    still compile as five shapes, after the graphs of an earlier cell in this process (the test above): a worker
    that trains several cells starts each from a fresh compiler cache, not from its units' recompile limit."""
    from torch._dynamo.utils import counters

    counters.clear()
    c = cfg(
        *TINY,
        "model.depth=20",
        "model.drop_path=0.5",
        "budget=smoke",
        "train.compile=inductor",
        f"store.root={tmp_path}",
        f"data.root={tmp_path}",
    )
    assert train(c, store.run_dir(c))["status"] == "done"
    assert counters["stats"]["unique_graphs"] == 5


def test_the_step_reads_the_learning_rate_from_one_tensor_that_survives_loading_a_checkpoint(cfg):
    """A captured CUDA graph cannot see a new Python float: the lr lives in a tensor the step fills in place."""
    from resnet_ablate.step import build

    [model], opt, step, _ = build([cfg(*TINY, "train.momentum=0", "train.weight_decay=0")], torch.device("cpu"))
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    before = [p.detach().clone() for p in model.parameters()]
    step([batch], 0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    step([batch], 0.1)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert step.stats[0, 0] > 0 and 0 <= step.stats[0, 1] <= 8  # loss sum and errors of both steps
    opt.load_state_dict(opt.state_dict())
    step.use_lr_tensor()
    assert all(g["lr"] is step.lr for g in opt.param_groups)


def test_outside_a_terminal_a_run_says_it_started_each_evaluation_and_between_them_its_rate(monkeypatch, capsys):
    from resnet_ablate import progress

    monkeypatch.setattr(progress, "HEARTBEAT", 0.0)
    row = {"lr": 0.1, "train_loss": 1.0, "test_error": 0.5, "images_per_s": 100.0}
    with progress.RunProgress(10, "abc") as p:
        p(1, None)
        time.sleep(0.01)
        p(2, None)
        p(5, row)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "abc starting: 10 iterations"
    assert lines[1].startswith("abc it 2/10  ") and "it/s, about" in lines[1] and "min to go" in lines[1]
    assert lines[2].startswith("abc it 5/10  lr 0.1  loss 1.0000  test err 50.00%")


def test_a_step_says_what_it_is_doing_only_when_it_takes_long(monkeypatch, capsys):
    from resnet_ablate import progress

    with progress.doing("quick"):
        pass
    monkeypatch.setattr(progress, "PATIENCE", 0.0)
    with progress.doing("slow step"):
        time.sleep(0.5)
    assert capsys.readouterr().err == "slow step …\n"


@pytest.mark.slow
def test_a_ddp_rank_that_fails_records_the_cell_as_failed_like_one_process(tmp_path):
    """train.gpus=2 on the CPU (gloo), rank 1 failing while it trains (a sitecustomize on the ranks' PYTHONPATH):
    torch's ProcessRaisedException reached the parent and no `failed` record was written."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import os\n"
        "from resnet_ablate.train import Training\n"
        "real = Training.record_evaluation\n"
        "def broken(self, done, *args):\n"
        "    if os.environ.get('RANK') == '1':\n"
        "        raise RuntimeError('CUDA error: an illegal memory access was encountered')\n"
        "    return real(self, done, *args)\n"
        "Training.record_evaluation = broken\n"
    )
    args = [*TINY, "train.gpus=2", "train.iterations=8", "train.eval_every=4", "train.milestones=[4,6]"]
    args += ["train.warmup_iterations=0", f"store.root={tmp_path / 's'}", f"data.root={tmp_path / 'd'}"]
    proc = cli("train", "--quiet", *args, env={"PYTHONPATH": str(inject)})
    last = proc.stderr.strip().splitlines()[-1]  # torch may warn first that it terminates the other rank
    assert proc.returncode == 1 and last.startswith("error: training failed (rank "), proc.stderr
    assert "Traceback" not in proc.stderr
    (result,) = recorded(tmp_path / "s")
    assert result["status"] == "failed" and result["error"].startswith("rank ")
    assert "illegal memory access" in result["error"] or "Connection" in result["error"]  # whichever rank torch saw
