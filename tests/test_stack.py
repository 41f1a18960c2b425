"""Seeds of one cell trained together as one stacked network (torch.func.vmap): the same networks, records and
checkpoints as training each seed alone, exact resume, and the sweep's grouping of seeds into workers."""

import shutil

import pytest
import torch

from resnet_ablate import files, record, store
from resnet_ablate.grid import stack_seeds
from resnet_ablate.step import build
from resnet_ablate.train import train, train_seeds
from tests.helpers import recorded

from .conftest import TINY, cli
from .test_train import _killed_and_resumed_vs_uninterrupted


@pytest.mark.parametrize(
    "arch",
    [
        ["unit=original", "shortcut=identity"],  # option A zero-padding shortcuts
        ["model=resnet164", "model.depth=11", "unit=full_preact", "shortcut=exclusive_gating"],  # projections, gates
        ["norm=none", "init=fixup", "shortcut=rezero"],  # scalar parameters: Fixup's biases and multipliers, α
        ["shortcut=dropout", "model.drop_path=0.5"],  # masks: each seed's own, alone or stacked
    ],
)
def test_a_stacked_step_updates_each_seed_as_its_own_step_would(cfg, arch):
    seeds = [cfg(*TINY, *arch, f"seed={s}") for s in (3, 4)]
    torch.manual_seed(0)
    batches = [[(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in seeds] for _ in range(3)]
    stacked, _, step, _ = build(seeds, torch.device("cpu"))
    for pair in batches:
        step(pair, 0.1)
    for i, c in enumerate(seeds):
        [alone], _, alone_step, _ = build([c], torch.device("cpu"))
        for pair in batches:
            alone_step([pair[i]], 0.1)
        assert torch.allclose(step.stats[i], alone_step.stats[0], rtol=1e-4)  # loss sum and errors
        mine, theirs = stacked[i].state_dict(), alone.state_dict()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.allclose(mine[key].float(), theirs[key].float(), atol=1e-5, rtol=1e-4), key


def test_channels_last_stacking_computes_the_same_with_the_seeds_channels_innermost(cfg):
    """On CUDA the stack is channels-last (each seed's NHWC tensors side by side); checked here on the CPU."""
    from resnet_ablate.models import build_model
    from resnet_ablate.stack import stack

    def seeds():
        models = []
        for s in (0, 1):
            torch.manual_seed(s)
            models.append(build_model(cfg(*TINY, "unit=full_preact")))
        return models

    x = torch.randn(2, 8, 3, 32, 32)
    runs = {}
    for channels_last in (False, True):
        models = seeds()
        forward, params = stack(models, channels_last)
        out = forward(x)
        out.sum().backward()
        runs[channels_last] = out, [p.grad for p in params], models
    (plain, grads, _), (cl, cl_grads, cl_models) = runs[False], runs[True]
    assert torch.allclose(plain, cl, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, cl_grads))
    weight = cl_models[1].stem[0].weight  # seed 1's view of the stack
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_seeds_trained_together_keep_the_records_of_seeds_trained_alone(cfg, tmp_path):
    def cells(store_root):
        return [
            cfg(*TINY, "budget=smoke", f"seed={s}", f"store.root={store_root}", f"data.root={tmp_path}") for s in (0, 1)
        ]

    together = train_seeds(cells(tmp_path / "a"), [store.run_dir(c) for c in cells(tmp_path / "a")])
    alone = [train(c, store.run_dir(c)) for c in cells(tmp_path / "b")]
    for a, b in zip(together, alone):
        assert a["key"] == b["key"] and (a["trained_together"], b["trained_together"]) == (2, 1)
        rows_a, rows_b = (
            record.read_jsonl(r / "runs" / a["key"] / "metrics.jsonl") for r in (tmp_path / "a", tmp_path / "b")
        )
        assert [r["iteration"] for r in rows_a] == [r["iteration"] for r in rows_b] == [8, 16, 24]
        for ra, rb in zip(rows_a, rows_b):
            assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-3)
            assert ra["test_error"] == pytest.approx(rb["test_error"], abs=2 / 256)  # at most 2 test images apart
        ca, cb = (
            torch.load(r / "runs" / a["key"] / "checkpoint.pt", weights_only=True)
            for r in (tmp_path / "a", tmp_path / "b")
        )
        assert {k: v.shape for k, v in ca["model"].items()} == {k: v.shape for k, v in cb["model"].items()}
        assert ca["optimizer"]["state"].keys() == cb["optimizer"]["state"].keys()
        for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
            assert sa["momentum_buffer"].shape == sb["momentum_buffer"].shape  # one seed's, not the stack's


def test_a_seed_that_diverges_ends_alone_and_its_stack_trains_on(cfg, tmp_path, monkeypatch):
    import resnet_ablate.step as training

    build_model = training.build_model

    def build(c):  # seed 1's network starts with a NaN weight
        net = build_model(c)
        if c.seed == 1:
            torch.nn.init.constant_(net.fc.bias, float("nan"))
        return net

    monkeypatch.setattr(training, "build_model", build)
    cells = [cfg(*TINY, "budget=smoke", f"seed={s}", f"store.root={tmp_path}", f"data.root={tmp_path}") for s in (0, 1)]
    seed0, seed1 = train_seeds(cells, [store.run_dir(c) for c in cells])
    assert (seed1["status"], seed1["diverged_at"]) == ("diverged", 8)
    assert seed0["status"] == "done" and seed0["iterations"] == 24 and seed0["train_loss"] < 2.3
    assert files.read_json(store.run_dir(cells[1]) / "result.json")["status"] == "diverged"


@pytest.mark.slow
def test_sigkilled_stacked_seeds_resume_bit_identical_to_uninterrupted_ones(tmp_path):
    overrides = [
        *["launcher.seeds=[0,1]", "shortcut=dropout", "model.drop_path=0.5"],  # both masks replayed after the kill
        *["train.iterations=32", "train.milestones=[16,24]"],
    ]
    pairs = _killed_and_resumed_vs_uninterrupted(overrides, tmp_path, kill_after=14)
    assert len(pairs) == 2 and pairs[0][0]["model"].keys() == pairs[1][0]["model"].keys()
    for sa, sb in pairs:
        for ga, gb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
            assert torch.equal(ga["momentum_buffer"], gb["momentum_buffer"])


def test_seeds_whose_checkpoints_a_kill_left_apart_resume_each_from_its_own(cfg, tmp_path):
    """A kill between the seeds' checkpoint writes leaves them at different iterations: each resumes from its own."""
    from resnet_ablate.sweep import run_cells

    common = [*TINY, "budget=smoke", "train.checkpoint_every=8", f"store.root={tmp_path}", f"data.root={tmp_path}"]
    for seed, kept in ((0, 8), (1, 16)):  # keep one checkpoint of a full run, as if it had been killed after it
        c = cfg(*common, f"seed={seed}")
        d = store.run_dir(c)

        def keep(done, row, d=d, kept=kept):
            if done == kept + 1:
                shutil.copy(d / "checkpoint.pt", tmp_path / "kept.pt")

        train(c, d, keep)
        (d / "result.json").unlink()
        shutil.move(tmp_path / "kept.pt", d / "checkpoint.pt")
    results = run_cells(cfg(*common, "launcher.seeds=[0,1]"))
    assert [(r["status"], r["resumed_from"], r["trained_together"]) for r in results] == [
        ("done", [8], 1),
        ("done", [16], 1),
    ]


def test_the_sweep_gives_each_worker_up_to_k_seeds_of_one_cell():
    cells = [["a=1", f"seed={s}"] for s in range(5)] + [["a=2", "seed=0"], ["a=3"]]
    assert stack_seeds(cells, 1) == cells
    assert stack_seeds(cells, 2) == [
        ["a=1", "seed=0", "launcher.seeds=[0,1]"],
        ["a=1", "seed=2", "launcher.seeds=[2,3]"],
        ["a=1", "seed=4"],
        ["a=2", "seed=0"],
        ["a=3"],
    ]


@pytest.mark.slow
def test_a_sweep_with_seeds_together_trains_every_cell_and_tables_them(tmp_path):
    args = [
        "table2",
        *TINY,
        "unit=original,full_preact",
        "model=resnet110",
        "model.depth=8",
        "budget=smoke",
        "seed=range(3)",
        "launcher.seeds_together=2",
        f"store.root={tmp_path}",
        f"data.root={tmp_path}",
    ]
    cli("sweep", *args, check=True, timeout=900)
    results = recorded(tmp_path)
    assert len(results) == 6 and all(r["status"] == "done" for r in results)
    assert sorted(r["trained_together"] for r in results) == [1, 1, 2, 2, 2, 2]
    assert "trained together with its other seeds" in "".join(
        (tmp_path / "runs" / r["key"] / "train.log").read_text() for r in results
    )


def test_seeds_together_refuse_what_they_cannot_stack_before_touching_the_store(tmp_path):
    proc = cli("train", *TINY, "launcher.seeds=[0,1]", "train.compile=inductor", f"store.root={tmp_path}")
    assert proc.returncode == 2 and "train.compile=graph or none" in proc.stderr
    proc = cli("train", *TINY, "launcher.seeds=[1,1]", f"store.root={tmp_path}")
    assert proc.returncode == 2 and "repeats a seed" in proc.stderr
    assert not (tmp_path / "runs").exists()
