"""Throughput benchmark: steady-state training steps of the real training step (warm-up and compilation timed
apart), k concurrent jobs, and a plain baseline loop (torchvision DataLoader + transforms, eager fp32) on the
same machine, so every figure comes with its ratio to that baseline."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from .config import compose, with_seed
from .cost import training_flops
from .data import CIFAR_MEAN, CIFAR_STD, CifarOnDevice, for_seed, load_cifar
from .distributed import resolve_device
from .models import count_macs, input_size
from .step import build

BASE = ["data=synthetic", "data.synthetic_train=5120", "data.synthetic_test=128"]  # data on any machine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak_tflops(device: torch.device) -> float:
    """Dense matmul throughput (bf16 on CUDA, fp32 on CPU): the peak MFU is measured against."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t0 = (50 if device.type == "cuda" else 5), time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def time_ours(
    cfg: DictConfig,
    steps: int,
    warmup: int,
    barrier: tuple[Path, int] | None = None,
    streams: int = 1,
    seeds: int = 1,
) -> dict[str, Any]:
    """Images/s of the training step train.py uses, with the data on the device; ``streams`` > 1 trains that many
    steps in this process at once, each on its own CUDA stream (a thread each); each step trains ``seeds``
    networks stacked into one (stack.py)."""
    device = resolve_device(cfg.train.device)
    torch.backends.cudnn.benchmark = True
    cuda = device.type == "cuda"
    jobs, macs = _streams(cfg, device, streams, seeds)

    def run(job, first: int, n: int) -> None:
        stream, datas, step = job
        with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
            for it in range(first, first + n):
                step([data.train_batch(it) for data in datas], 0.1)

    t0 = time.perf_counter()
    for job in jobs:  # one after another: compilation and graph capture are not raced
        run(job, 0, warmup)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    if barrier:  # k jobs: start the timed window together
        _wait_for_all(*barrier)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(job, warmup, steps)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _sync(device)
    elapsed = time.perf_counter() - t0
    images = steps * cfg.train.batch_size * streams * seeds
    return {
        "images_per_s": images / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
        "warmup_compile_s": warmup_s,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "reserved_gb": torch.cuda.max_memory_reserved(device) / 2**30 if cuda else None,
        "tflops": training_flops(macs, images) / elapsed / 1e12,
    }


def _streams(cfg: DictConfig, device: torch.device, streams: int, seeds: int) -> tuple[list, int]:
    """``streams`` jobs for ``time_ours`` (a CUDA stream, each network's data, the step), and one network's MACs."""
    jobs = []
    for i in range(streams):
        cfgs = [with_seed(cfg, cfg.seed + i * seeds + j) for j in range(seeds)]
        data = CifarOnDevice(cfgs[0], device)
        models, _, step, _ = build(cfgs, device)
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        jobs.append((stream, [for_seed(data, c.seed) for c in cfgs], step))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return jobs, count_macs(models[0], input_size(cfg))


def _wait_for_all(folder: Path, k: int) -> None:
    """Say this process is ready in ``folder``, and wait until ``k`` are."""
    (folder / f"{os.getpid()}.ready").touch()
    while len(list(folder.glob("*.ready"))) < k:
        time.sleep(0.05)


def time_baseline(cfg: DictConfig, steps: int, warmup: int, workers: int) -> dict[str, Any]:
    """A plain loop as popular repositories ship it: PIL transforms in DataLoader workers, eager fp32, plain SGD."""
    from .models import build_model

    device = resolve_device(cfg.train.device)
    loader = _baseline_loader(cfg, workers, device.type == "cuda")
    model = build_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def batches():
        while True:
            yield from loader

    it = batches()
    for _ in range(warmup):
        _baseline_step(model, opt, next(it), device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _baseline_step(model, opt, next(it), device)
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {"images_per_s": steps * cfg.train.batch_size / elapsed, "ms_per_step": 1000 * elapsed / steps}


def _baseline_loader(cfg: DictConfig, workers: int, pin: bool):
    """The baseline's DataLoader: PIL images through torchvision's transforms in ``workers`` processes."""
    from PIL import Image
    from torchvision import transforms as T

    (xtr, ytr, _, _), _ = load_cifar(cfg)
    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([m / 255 for m in CIFAR_MEAN], [s / 255 for s in CIFAR_STD]),
        ]
    )

    class Cifar(torch.utils.data.Dataset):
        def __len__(self):
            return len(ytr)

        def __getitem__(self, i):
            return tf(Image.fromarray(xtr[i].transpose(1, 2, 0))), int(ytr[i])

    return torch.utils.data.DataLoader(
        Cifar(),
        cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def _baseline_step(model, opt, batch, device) -> None:
    x, y = (t.to(device, non_blocking=True) for t in batch)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def run_jobs(overrides: list[str], k: int, steps: int, warmup: int, streams: int = 1, seeds: int = 1) -> dict:
    """k concurrent worker processes (``python -m resnet_ablate.bench``) sharing the device, each training
    ``streams`` × ``seeds`` networks; their images/s summed over one window."""
    with tempfile.TemporaryDirectory() as folder:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "resnet_ablate.bench", folder, *map(str, (k, steps, warmup, streams, seeds))]
                + overrides,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(k)
        ]
        results = []
        for p in procs:
            stdout, _ = p.communicate()
            if p.returncode:
                raise RuntimeError(f"a benchmark worker failed (exit {p.returncode})")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    return {
        "images_per_s": sum(r["images_per_s"] for r in results),
        "ms_per_step": max(r["ms_per_step"] for r in results),
        "warmup_compile_s": max(r["warmup_compile_s"] for r in results),
        "peak_mem_gb": max(r["peak_mem_gb"] or 0 for r in results) or None,
        "reserved_gb": max(r["reserved_gb"] or 0 for r in results) or None,
        "tflops": sum(r["tflops"] for r in results),
    }


def measure(
    overrides: list[str], grid: dict[str, list], steps: int, warmup: int, loader_workers, peak: float
) -> list[dict[str, Any]]:
    """One row per model × compile mode × precision × jobs × streams × seeds of ``grid`` (and per model, the plain
    baseline loop unless ``loader_workers`` is None): images/s, ms/step, MFU against ``peak``, memory."""
    rows = []
    for model in grid["models"]:
        ref = None
        if loader_workers is not None:
            b = time_baseline(compose([*BASE, *overrides, f"model={model}"]), steps, warmup, loader_workers)
            ref = b["images_per_s"]
            rows.append({"model": model, "setup": "baseline: DataLoader, eager fp32", "jobs": 1, **b})
            rows[-1]["x_baseline"] = 1.0
        for mode, precision, k, n, m in itertools.product(
            grid["compile"], grid["precision"], grid["jobs"], grid["streams"], grid["seeds"]
        ):
            args = [*overrides, f"model={model}", f"train.compile={mode}", f"train.precision={precision}"]
            r = run_jobs(args, k, steps, warmup, n, m)
            rows.append(
                {
                    "model": model,
                    "setup": f"ours: compile={mode} {precision}",
                    "jobs": k,
                    "streams": n,
                    "seeds": m,
                    **r,
                    "mfu": r["tflops"] / peak,
                    "x_baseline": r["images_per_s"] / ref if ref else None,
                }
            )
    return rows


def _worker(folder: str, k: str, steps: str, warmup: str, streams: str, seeds: str, *overrides: str) -> None:
    """One of ``run_jobs``'s processes: its figures as a JSON line on stdout."""
    cfg = compose([*BASE, *overrides])
    print(json.dumps(time_ours(cfg, int(steps), int(warmup), (Path(folder), int(k)), int(streams), int(seeds))))


if __name__ == "__main__":
    _worker(*sys.argv[1:])
