"""Our training step is the textbook one (docs/paper.md, "Recipe"): ``train`` (CIFAR held on the device, crop and
flip as one gather, the step built for capture, stacked seeds, per-epoch permutations, warm-up and milestones in
iterations) against the loop a reader of the paper would write from the recipe alone: torch.optim.SGD with
momentum and weight decay on every parameter, the lr set per iteration, cross-entropy, pad 4 then crop then flip.
The textbook loop replays our data's draws (the epoch permutations and each batch's offsets and flips) and does
everything else itself.

Both run in float64: in fp32 the two differ by rounding alone (another summation order in the loss, the lr as a
tensor) by 3e-6 after one step, and early training amplifies that to 6e-3 by step 11; in float64 they agree to
the last bit, so any real difference (a milestone one iteration late, weight decay skipping BN, a flip that
mirrors the padded image) shows."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from resnet_ablate.data import CIFAR_MEAN, CIFAR_STD, CifarOnDevice, load_cifar
from resnet_ablate.models import build_model
from resnet_ablate.train import train, train_seeds

from .conftest import TINY

ITERATIONS = 30
# 320 images at batch 32: 10 iterations an epoch, so 30 cross two epoch boundaries; warm-up 4, milestones 12 and 22
RECIPE = [
    *TINY,
    "data.synthetic_train=320",
    "data.synthetic_test=128",
    "train.batch_size=32",
    f"train.iterations={ITERATIONS}",
    "train.warmup_iterations=4",
    "train.milestones=[12,22]",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.compile=none",
]


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)  # the data (normalised by float64 constants), nets and steps follow
    yield
    torch.set_default_dtype(torch.float32)


def textbook(c):
    """The recipe's loop, written from the paper: returns the trained network and its test error."""
    t = c.train
    (xtr, ytr, xte, yte), _ = load_cifar(c)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) / 255
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) / 255
    train_x = (torch.from_numpy(xtr).float() / 255 - mean) / std
    test_x = (torch.from_numpy(xte).float() / 255 - mean) / std
    train_y, test_y = torch.from_numpy(ytr), torch.from_numpy(yte)
    torch.manual_seed(c.seed)
    net = build_model(c)
    opt = torch.optim.SGD(net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    draws = torch.Generator().manual_seed(c.seed)  # the data's augmentation stream (rank 0), replayed
    per_epoch = len(train_y) // t.batch_size
    for it in range(t.iterations):
        epoch, step = divmod(it, per_epoch)
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(c.seed * 1_000_003 + epoch))
        idx = order[step * t.batch_size : (step + 1) * t.batch_size]
        n = len(idx)
        dy = torch.randint(0, 9, (n, 1), generator=draws)[:, 0]
        dx = torch.randint(0, 9, (n, 1), generator=draws)[:, 0]
        flip = (torch.rand(n, 1, generator=draws) < 0.5)[:, 0]
        padded = F.pad(train_x[idx], (4, 4, 4, 4))  # zeros after normalisation
        crops = [padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32] for i in range(n)]
        x = torch.stack([crop.flip(-1) if f else crop for crop, f in zip(crops, flip)])
        lr = t.warmup_lr if it < t.warmup_iterations else t.lr * 0.1 ** sum(it >= m for m in t.milestones)
        for group in opt.param_groups:
            group["lr"] = lr
        net.train()
        opt.zero_grad()
        F.cross_entropy(net(x), train_y[idx]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        error = (net(test_x).argmax(1) != test_y).float().mean().item()
    return net, error


def assert_same(ours: dict, theirs: torch.nn.Module, error: float, result: dict) -> None:
    state = theirs.state_dict()
    assert ours.keys() == state.keys()
    for name, value in state.items():  # parameters and BN running statistics
        assert ours[name].dtype == value.dtype and torch.allclose(ours[name], value, rtol=0, atol=1e-12), name
    assert result["test_error"] == error


def _ours(directory) -> dict:
    return torch.load(directory / "checkpoint.pt", weights_only=False)["model"]


def test_train_is_the_textbook_loop_step_for_step(cfg, data_root, tmp_path):
    c = cfg(*RECIPE, f"data.root={data_root}", f"store.root={tmp_path}")
    result = train(c, tmp_path / "run")
    net, error = textbook(c)
    assert_same(_ours(tmp_path / "run"), net, error, result)


def test_stacked_seeds_are_textbook_runs_each(cfg, data_root, tmp_path):
    cells = [cfg(*RECIPE, f"data.root={data_root}", f"seed={s}") for s in (0, 3)]
    results = train_seeds(cells, [tmp_path / "s0", tmp_path / "s3"])
    for c, result, d in zip(cells, results, (tmp_path / "s0", tmp_path / "s3")):
        net, error = textbook(c)
        assert_same(_ours(d), net, error, result)


def test_a_resume_in_the_middle_is_the_textbook_run(cfg, data_root, tmp_path):
    c = cfg(*RECIPE, f"data.root={data_root}", "seed=5")

    def stop_after_the_second_checkpoint(done, row):
        if done == 23:  # checkpoints at 10 and 20; this process dies past the first milestone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(c, tmp_path / "run", stop_after_the_second_checkpoint)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["iteration"] == 20
    result = train(c, tmp_path / "run")
    net, error = textbook(c)
    assert result["resumed_from"] == [20]
    assert_same(_ours(tmp_path / "run"), net, error, result)


# Augmentation (Sec. 4.1; [R1] Sec. 4.2): pad 4, a random 32×32 crop, a random horizontal flip; the test image as is


def test_crop_offsets_and_flips_occur_with_the_papers_frequencies(cfg, data_root):
    """Every offset 0..8 in each axis equally often and both flips half the time (chi-square, fixed seed), read
    back from a padded image whose pixels hold their own coordinates."""
    data = CifarOnDevice(cfg(*RECIPE, f"data.root={data_root}"), torch.device("cpu"))
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    data.train_x = torch.stack([rows, cols, rows * 0]).expand(len(data.train_y), -1, -1, -1)
    dys, dxs, flips = [], [], []
    for it in range(200):  # 6,400 crops
        x, _ = data.train_batch(it)
        dys += x[:, 0, 0, 0].long().tolist()
        left, right = x[:, 1, 0, 0], x[:, 1, 0, 31]
        assert torch.equal((right - left).abs(), torch.full_like(left, 31))  # a contiguous window, maybe mirrored
        flips += (left > right).long().tolist()
        dxs += torch.minimum(left, right).long().tolist()
        assert torch.equal(x[:, 0, :, 0] - x[:, 0, :1, 0], torch.arange(32.0).expand(len(x), -1))  # rows in order
    for seen, values in ((dys, 9), (dxs, 9), (flips, 2)):
        counts = np.bincount(seen, minlength=values)
        assert len(counts) == values and stats.chisquare(counts).pvalue > 1e-3, counts


def test_the_padding_is_zeros_after_normalisation_and_a_test_image_is_never_cropped_or_flipped(cfg, data_root):
    c = cfg(*RECIPE, f"data.root={data_root}")
    (xtr, _, xte, _), _ = load_cifar(c)
    data = CifarOnDevice(c, torch.device("cpu"))
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) / 255
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) / 255
    core = data.train_x[:, :, 4:36, 4:36]
    assert torch.allclose(core, (torch.from_numpy(xtr).float() / 255 - mean) / std)
    ring = data.train_x.clone()
    ring[:, :, 4:36, 4:36] = 0
    assert not ring.any()  # the padding is 0 after normalisation: the mean image, not black
    test = torch.cat([x for x, _ in data.test_batches()])
    assert torch.allclose(test, (torch.from_numpy(xte).float() / 255 - mean) / std)


def test_bn_running_statistics_follow_the_authors_convention(cfg):
    """fb.resnet.torch's BN: running ← 0.9·running + 0.1·batch (the unbiased variance), ε = 1e-5. The textbook loop
    above builds our net, so it shares our BN layers: this checks them against the convention itself."""
    net = build_model(cfg("model=resnet20", "model.depth=8")).train()
    bn = net.stem[1]
    x = torch.randn(16, 3, 32, 32) * 3 + 2
    with torch.no_grad():
        h = net.stem[0](x)
        bn(h)
    assert torch.allclose(bn.running_mean, 0.1 * h.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * h.var((0, 2, 3), unbiased=True), atol=1e-5)
    assert all(m.eps == 1e-5 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
