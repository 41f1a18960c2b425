"""On a CUDA device (skipped without one; on the lent GPU: `pytest -m gpu`): the step replayed as one CUDA graph,
with or without inductor-compiled units or stacked seeds, trains like the eager step, learning-rate changes after
capture included."""

import pytest
import torch

from resnet_ablate import record, store
from resnet_ablate.train import train, train_seeds

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = [
    "model=resnet20",
    "model.depth=8",
    "data=synthetic",
    "data.synthetic_train=1024",
    "data.synthetic_test=256",
    "train.device=cuda",
    "train.precision=fp32",
    "budget=smoke",  # lr 0.01 → 0.1 at 2, ÷10 at 12 and 18: two changes after the capture at step 3
]


@pytest.mark.parametrize("mode", ["graph", "inductor"])
def test_the_captured_step_trains_like_the_eager_step(cfg, tmp_path, mode):
    results, runs = {}, {}
    for m in ("none", mode):
        c = cfg(*TINY, f"train.compile={m}", f"store.root={tmp_path / m}", f"data.root={tmp_path}")
        runs[m] = store.run_dir(c)
        results[m] = train(c, runs[m])
    eager, captured = results["none"], results[mode]
    assert captured["status"] == "done"
    assert captured["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-2)
    assert abs(captured["test_error"] - eager["test_error"]) <= 0.02
    rows = {m: record.read_jsonl(d / "metrics.jsonl") for m, d in runs.items()}
    assert [r["lr"] for r in rows[mode]] == [r["lr"] for r in rows["none"]]
    assert [r["train_loss"] for r in rows[mode]] == pytest.approx([r["train_loss"] for r in rows["none"]], rel=1e-2)


def test_stacked_seeds_under_the_captured_step_train_like_seeds_trained_alone(cfg, tmp_path):
    def cells(mode):
        return [cfg(*TINY, f"seed={s}", f"train.compile={mode}", f"store.root={tmp_path / mode}") for s in (0, 1)]

    stacked = train_seeds(cells("graph"), [store.run_dir(c) for c in cells("graph")])
    alone = [train(c, store.run_dir(c)) for c in cells("none")]
    for a, b in zip(stacked, alone):
        assert a["status"] == "done" and a["trained_together"] == 2
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-2)
        assert abs(a["test_error"] - b["test_error"]) <= 0.02
