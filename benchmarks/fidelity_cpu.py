"""A short real run beside a plain one (issue: fidelity without a GPU): ResNet-20 `unit=original` on real CIFAR-10,
trained by `resnet-ablate train` and by the loop a reader of the paper would write with torchvision's own pieces
(`CIFAR10` + `RandomCrop(32, padding=4)` + `RandomHorizontalFlip` + `DataLoader` + `torch.optim.SGD`), the same
shortened schedule and seeds; the two sets of test errors and the exact permutation test's p (`compare`'s).

    python benchmarks/fidelity_cpu.py DATA_ROOT [--iterations 1500] [--seeds 0,1,2] [--store /tmp/fidelity]

DATA_ROOT holds `cifar-10-batches-py/` (e.g. unpacked from the team's JPEG-train / lossless-test pack). The
schedule is the paper's scaled: milestones at 1/2 and 3/4 of the iterations, the warm-up scaled alike.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_ablate.config import compose
from resnet_ablate.models import build_model
from resnet_ablate.report.compare import difference
from resnet_ablate.train import train


def overrides(root: str, iterations: int, seed: int, store: str) -> list[str]:
    m1, m2, warmup = iterations // 2, iterations * 3 // 4, max(1, iterations * 400 // 64000)
    return [
        "model=resnet20",
        "unit=original",
        "data=cifar10",
        f"data.root={root}",
        "data.download=false",
        f"train.iterations={iterations}",
        f"train.milestones=[{m1},{m2}]",
        f"train.warmup_iterations={warmup}",
        f"train.eval_every={iterations}",
        f"train.checkpoint_every={iterations}",
        "train.device=cpu",
        f"seed={seed}",
        f"store.root={store}",
    ]


def plain(cfg) -> float:
    """The textbook loop: torchvision's dataset, transforms and loader; SGD on every parameter; lr per iteration."""
    import torchvision
    from torchvision import transforms as T

    class Local(torchvision.datasets.CIFAR10):  # the batch files are not byte-identical to the official ones
        train_list = [[f"data_batch_{i}", None] for i in range(1, 6)]
        test_list = [["test_batch", None]]

    t = cfg.train
    norm = T.Normalize((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255))
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    train_set = Local(cfg.data.root, train=True, transform=augment)
    test_set = Local(cfg.data.root, train=False, transform=T.Compose([T.ToTensor(), norm]))
    torch.manual_seed(cfg.seed)
    net = build_model(cfg)
    opt = torch.optim.SGD(net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    loader = torch.utils.data.DataLoader(train_set, t.batch_size, shuffle=True, drop_last=True, num_workers=1)
    it = 0
    while it < t.iterations:
        for x, y in loader:
            if it == t.iterations:
                break
            lr = t.warmup_lr if it < t.warmup_iterations else t.lr * t.lr_decay ** sum(it >= m for m in t.milestones)
            for group in opt.param_groups:
                group["lr"] = lr
            net.train()
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            it += 1
    net.eval()
    wrong = n = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test_set, 500):
            wrong += (net(x).argmax(1) != y).sum().item()
            n += len(y)
    return 100 * wrong / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--store", default="/tmp/fidelity")
    a = parser.parse_args()
    ours, theirs, walls = [], [], {"ours": 0.0, "plain": 0.0}
    for seed in map(int, a.seeds.split(",")):
        cfg = compose(overrides(a.root, a.iterations, seed, a.store))
        start = time.perf_counter()
        ours.append(100 * train(cfg, Path(a.store) / f"seed{seed}")["test_error"])
        walls["ours"] += time.perf_counter() - start
        start = time.perf_counter()
        theirs.append(plain(cfg))
        walls["plain"] += time.perf_counter() - start
        print(f"seed {seed}: ours {ours[-1]:.2f}%  plain {theirs[-1]:.2f}%", flush=True)
    d = difference(np.array(ours), np.array(theirs), paired=False)
    print(f"ours  {' '.join(f'{e:.2f}' for e in ours)}  mean {statistics.mean(ours):.2f}")
    print(f"plain {' '.join(f'{e:.2f}' for e in theirs)}  mean {statistics.mean(theirs):.2f}")
    print(f"plain − ours: {d['delta']:+.2f} points, p = {d['p']:.4f} ({d['test']})")
    print(f"wall: ours {walls['ours']:.0f} s, plain {walls['plain']:.0f} s ({a.iterations} iterations a run)")


if __name__ == "__main__":
    main()
