"""One grid cell trained with the paper's recipe (PAPER.md §4): SGD, an iteration schedule with warm-up,
records per evaluation, atomic checkpoints, exact resume, and divergence reported as a result."""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import random
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from . import __version__, distributed, store
from .config import Compile, Precision, identity
from .data import make_data
from .distributed import Group
from .models import ResidualUnit, build_model
from .progress import print_evaluation

Progress = Callable[[int, dict | None], None]


def lr_at(iteration: int, t: DictConfig) -> float:
    """Warm-up at ``warmup_lr``, then ``lr`` divided by 10 at each milestone (iterations, not epochs)."""
    if iteration < t.warmup_iterations:
        return t.warmup_lr
    return t.lr * t.lr_decay ** sum(iteration >= m for m in t.milestones)


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """``auto``: the GPU of this rank when there is one, else the CPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    if name in ("auto", "cuda"):
        return torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def _rng_states(device: torch.device) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``; a corrupt or truncated one is reported, removed, and training starts over."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}); restarting this run from scratch")
        path.unlink()
        return None


def _git_commit() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


@torch.compiler.set_stance("force_eager")
def gradient_flow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """‖∂E/∂x_l‖ at every residual unit's input for one batch; weights, BN statistics and RNGs stay unchanged."""
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    inputs: list[torch.Tensor] = []
    hooks = [u.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for u in units]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = _rng_states(x.device)
    try:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), inputs)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        _set_rng_states(rng, x.device)
    return [g.float().norm().item() for g in grads]


@torch.no_grad()
@torch.compiler.set_stance("force_eager")  # evaluation runs uncompiled: only the training step compiles
def evaluate(model: torch.nn.Module, data, autocast) -> dict[str, float]:
    model.eval()
    loss = top1 = top5 = n = 0.0
    for x, y in data.test_batches():
        with autocast():
            out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum").item()
        k = min(5, out.shape[1])
        hits = out.topk(k, 1).indices == y[:, None]
        top1 += (~hits[:, 0]).sum().item()
        top5 += (~hits.any(1)).sum().item()
        n += len(y)
    model.train()
    return {"test_loss": loss / n, "test_error": top1 / n, "test_error_top5": top5 / n}


class TrainStep:
    """One SGD step ``step(x, y, lr)``; the summed loss and the errors since the last ``stats.zero_()`` accumulate
    in ``stats`` on the device, so a step never reads a value back to the host.

    With ``capture`` (``compile=graph|inductor`` on one CUDA device) the first ``WARMUP`` steps run eagerly on a
    side stream (cuDNN autotuning, momentum buffers, compilation), then the whole step (forward, backward, SGD
    update, statistics) is captured as one CUDA graph: every later step is a copy of the batch into the graph's
    inputs and one replay. The learning rate is a device tensor the graph reads, so the schedule still applies.
    """

    WARMUP = 3

    def __init__(self, forward, opt: torch.optim.Optimizer, autocast, channels_last: bool, capture: bool):
        self.forward, self.opt, self.autocast, self.channels_last = forward, opt, autocast, channels_last
        device = opt.param_groups[0]["params"][0].device
        self.lr = torch.zeros((), device=device)
        self.keep_lr()
        self.stats = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, errors
        self.capture, self.warm, self.graph, self.inputs = capture, 0, None, ()

    def keep_lr(self) -> None:
        """Point every param group at the lr tensor (after ``opt.load_state_dict`` replaced it)."""
        for param_group in self.opt.param_groups:
            param_group["lr"] = self.lr

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast():
            out = self.forward(x)
            loss = F.cross_entropy(out, y)
        loss.backward()
        self.opt.step()
        self.stats += torch.stack([loss.detach().double() * len(y), (out.argmax(1) != y).sum().double()])

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self.lr.fill_(lr)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.graph is not None:
            for static, new in zip(self.inputs, (x, y)):
                static.copy_(new)
            self.graph.replay()
            return
        self.opt.zero_grad(set_to_none=True)
        if not self.capture:
            self._run(x, y)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._run(x, y)
        torch.cuda.current_stream().wait_stream(side)
        self.warm += 1
        if self.warm == self.WARMUP:
            self.inputs = (x.clone(), y.clone())
            self.opt.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients in its own pool
            self.graph = torch.cuda.CUDAGraph()
            # recorded, not run; thread_local: a DataLoader's pin-memory thread may call CUDA meanwhile
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self._run(*self.inputs)


def setup(cfg: DictConfig, device: torch.device, group: Group | None = None):
    """The model, its optimiser, the training step (a ``TrainStep``) and the eval autocast.

    On CUDA: channels_last, bf16 autocast (``precision=auto`` or ``bf16``), fused SGD, the step as one CUDA graph
    (``compile=graph``, the default), residual units compiled by inductor (``compile=inductor``). Several processes
    (``train.gpus``) run the step eagerly under DistributedDataParallel.
    """
    t = cfg.train
    cuda = device.type == "cuda"
    world = group.world if group is not None else 1
    model = build_model(cfg).to(device)
    channels_last = cuda and t.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=t.lr,
        momentum=t.momentum,
        nesterov=t.nesterov,
        weight_decay=t.weight_decay,
        fused=cuda or None,
    )
    precision = Precision(t.precision)
    use_bf16 = precision is Precision.bf16 or (cuda and precision is Precision.auto)

    def autocast():  # no weight-cast cache: its copies would outlive a graph capture
        return (
            torch.autocast(device.type, torch.bfloat16, cache_enabled=False) if use_bf16 else contextlib.nullcontext()
        )

    mode = Compile(t.compile)
    if mode is Compile.inductor:  # regional compilation: units of one shape share one compiled graph
        for unit in model.modules():
            if isinstance(unit, ResidualUnit):
                unit.compile()
    forward = model
    if world > 1:
        if t.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        with warnings.catch_warnings():  # BN statistics stay per process, as in the paper (no buffer broadcast)
            warnings.simplefilter("ignore", FutureWarning)
            forward = DistributedDataParallel(
                model, device_ids=[device.index] if cuda else None, broadcast_buffers=False
            )
    capture = cuda and world == 1 and mode is not Compile.none
    return model, opt, TrainStep(forward, opt, autocast, channels_last, capture), autocast


def train(cfg: DictConfig, directory: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Train the cell of ``cfg`` in ``directory`` (resuming from its checkpoint) and write its result.json;
    with ``train.gpus`` > 1 in that many processes."""
    if cfg.train.gpus > 1 and "WORLD_SIZE" not in os.environ:
        if cfg.train.batch_size % cfg.train.gpus:
            raise ValueError(f"train.batch_size {cfg.train.batch_size} does not split over train.gpus={cfg.train.gpus}")
        plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        distributed.spawn(cfg.train.gpus, _train, plain, directory, print_evaluation if progress else None)
        return store.read_json(directory / "result.json")
    return _train(cfg, directory, progress)


def _train(cfg: DictConfig, directory: Path, progress: Progress | None) -> dict[str, Any]:
    t = cfg.train
    group = distributed.current()
    device = resolve_device(t.device, group.rank)
    seed_everything(cfg.seed, t.deterministic)
    directory.mkdir(parents=True, exist_ok=True)
    if group.main:
        store.save_config(directory, cfg)
    ckpt_path, metrics_path, flow_path = (
        directory / "checkpoint.pt",
        directory / "metrics.jsonl",
        directory / "grad_flow.jsonl",
    )

    data = make_data(cfg, device, group)
    model, opt, step, autocast = setup(cfg, device, group)
    stats = step.stats  # train loss sum, errors since the last evaluation

    start, elapsed, resumed_from = 0, 0.0, []
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step.keep_lr()
        start, elapsed = ckpt["iteration"], ckpt["elapsed"]
        resumed_from = [*ckpt["resumed_from"], start]
        print(f"resuming {directory.name} from its checkpoint at iteration {start}", flush=True)
        stats.copy_(ckpt["stats"][group.rank])
        rng = ckpt["rng"][group.rank]
        _set_rng_states(rng, device)
        data.set_rng_state(rng["data"])
    if group.main:
        for path in (metrics_path, flow_path):
            store.truncate_jsonl(path, start)
    flow_batch = None
    if t.grad_flow and group.main and hasattr(data, "train_x"):
        flow_batch = (data.train_x[: t.batch_size, :, 4:36, 4:36], data.train_y[: t.batch_size])
        if start == 0:
            store.append_jsonl(flow_path, {"iteration": 0, "norms": gradient_flow(model, *flow_batch)})

    def save(iteration: int) -> None:
        per_rank = group.gather(({**_rng_states(device), "data": data.rng_state()}, stats.cpu()))
        if not group.main:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "iteration": iteration,
            "resumed_from": resumed_from,
            "elapsed": elapsed,
            "stats": [s for _, s in per_rank],
            "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "rng": [r for r, _ in per_rank],
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        store.atomic_write(ckpt_path, buffer.getvalue())

    status, diverged_at, row = "done", None, {}
    model.train()
    tick, tick_iteration = time.perf_counter(), start
    for it in range(start, t.iterations):
        x, y = data.train_batch(it)
        step(x, y, lr_at(it, t))
        done = it + 1
        if progress and group.main:
            progress(done, None)
        if done % t.eval_every and done != t.iterations:
            continue
        now = time.perf_counter()
        elapsed += now - tick
        loss_sum, errors = group.all_reduce(stats.clone()).tolist()
        seen = (done - (it // t.eval_every) * t.eval_every) * t.batch_size  # images since the last evaluation
        stats.zero_()
        if group.main:  # rank 0 evaluates and writes the records
            row = {
                "iteration": done,
                "epoch": round(done / data.steps_per_epoch, 3),
                "lr": lr_at(it, t),
                "train_loss": loss_sum / seen,
                "train_error": errors / seen,
                **evaluate(model, data, autocast),
                "images_per_s": (done - tick_iteration) * t.batch_size / (now - tick),
                "elapsed": round(elapsed, 3),
            }
            store.append_jsonl(metrics_path, row)
            if flow_batch is not None:
                store.append_jsonl(flow_path, {"iteration": done, "norms": gradient_flow(model, *flow_batch)})
            if progress:
                progress(done, row)
        if not math.isfinite(loss_sum):  # the loss is summed over ranks, so every rank stops here together
            status, diverged_at = "diverged", done
            break
        if done % t.checkpoint_every == 0 or done == t.iterations:
            save(done)
        tick, tick_iteration = time.perf_counter(), done

    result = {
        "status": status,
        "key": directory.name,
        "test_error": row.get("test_error"),
        "test_error_top5": row.get("test_error_top5"),
        "train_loss": row.get("train_loss"),
        "iterations": row.get("iteration", start),
        "diverged_at": diverged_at,
        "resumed_from": resumed_from,
        "wall_time": round(elapsed, 3),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"resnet_ablate": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_commit": _git_commit(),
        "config": identity(cfg),
    }
    if group.main:
        store.write_json(directory / "result.json", result)
    return result
