"""The training step and how it runs: eager, as one CUDA graph (``train.compile=graph``), with inductor-compiled
units (``inductor``), k seeds stacked into one network (``stack.py``), or under DistributedDataParallel. Chosen
once by ``build``; the training loop sees one ``TrainStep``."""

from __future__ import annotations

import contextlib
import warnings

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from .distributed import Group
from .models import ResidualUnit, build_model
from .recipe import losses, sgd
from .schema import Compile, Precision
from .stack import stack


class TrainStep:
    """One SGD step ``step(batches, lr)`` of k networks trained together (k = 1 unless seeds are stacked, see
    ``stack.py``): ``batches`` holds one (x, y) per network and ``forward`` maps k×N×… inputs to k×N×classes.
    Each network's summed loss and errors since the last ``stats.zero_()`` accumulate in ``stats`` (k×2) on the
    device, so a step never reads a value back to the host.

    With ``capture`` (``compile=graph|inductor`` on one CUDA device) the first ``WARMUP`` steps run eagerly on a
    side stream (cuDNN autotuning, momentum buffers, compilation), then the whole step (forward, backward, SGD
    update, statistics) is captured as one CUDA graph: every later step is a copy of the batches into the graph's
    inputs and one replay. The learning rate is a device tensor the graph reads, so the schedule still applies.
    """

    WARMUP = 3

    def __init__(self, forward, opt: torch.optim.Optimizer, autocast, k: int, capture: bool):
        self.forward, self.opt, self.autocast = forward, opt, autocast
        device = opt.param_groups[0]["params"][0].device
        self.lr = torch.zeros((), device=device)
        self.use_lr_tensor()
        self.stats = torch.zeros(k, 2, dtype=torch.float64, device=device)  # per network: loss sum, errors
        self.capture, self.warm, self.graph, self.inputs = capture, 0, None, ()

    def use_lr_tensor(self) -> None:
        """Point every param group at the lr tensor (after ``opt.load_state_dict`` replaced it)."""
        for param_group in self.opt.param_groups:
            param_group["lr"] = self.lr

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast():
            out = self.forward(x)
            loss = losses(out, y)
        loss.sum().backward()  # each network's gradient is its own loss's
        self.opt.step()
        self.stats += torch.stack([loss.detach().double() * y.shape[1], (out.argmax(2) != y).sum(1).double()], 1)

    def __call__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float) -> None:
        self.lr.fill_(lr)
        if self.graph is not None:
            for i, batch in enumerate(batches):
                for static, new in zip(self.inputs, batch):
                    static[i].copy_(new)
            self.graph.replay()
            return
        x, y = (torch.stack(parts) for parts in zip(*batches))
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
            self.inputs = (x, y)
            self.opt.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients in its own pool
            self.graph = torch.cuda.CUDAGraph()
            # recorded, not run; thread_local: a DataLoader's pin-memory thread may call CUDA meanwhile
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self._run(*self.inputs)


def check_together(cfg: DictConfig, k: int) -> None:
    """Seeds trained together (k > 1) run in one process with ``train.compile=graph`` or ``none``."""
    mode = Compile(cfg.train.compile)
    if k > 1 and (cfg.train.gpus > 1 or mode is Compile.inductor):
        raise ValueError(
            f"seeds trained together (launcher.seeds, launcher.seeds_together) need train.gpus=1 and "
            f"train.compile=graph or none; got train.gpus={cfg.train.gpus}, train.compile={mode.value}"
        )


def build(cfgs: list[DictConfig], device: torch.device, group: Group | None = None):
    """The networks (one per config: a cell, or seeds of one cell stacked), their optimiser, the training step
    (a ``TrainStep``) and the eval autocast.

    On CUDA: bf16 autocast (``precision=auto`` or ``bf16``), channels_last, fused SGD, the step as one CUDA graph
    (``compile=graph``, the default); for a network alone, residual units compiled by inductor
    (``compile=inductor``). Several processes (``train.gpus``) run the step eagerly under DistributedDataParallel.
    """
    t = cfgs[0].train
    cuda = device.type == "cuda"
    world = group.world if group is not None else 1
    mode = Compile(t.compile)
    check_together(cfgs[0], len(cfgs))
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)  # a network's initialisation is its seed's, stacked or not
        models.append(build_model(cfg).to(device))
    if len(models) > 1:
        forward, params = stack(models, channels_last=cuda and t.channels_last)
    else:
        forward, models[0] = _single_network(models[0], t, device, world, mode)
        params = list(models[0].parameters())
    opt = sgd(params, t, fused=cuda)
    precision = Precision(t.precision)
    use_bf16 = precision is Precision.bf16 or (cuda and precision is Precision.auto)

    def autocast():  # no weight-cast cache: its copies would outlive a graph capture
        return (
            torch.autocast(device.type, torch.bfloat16, cache_enabled=False) if use_bf16 else contextlib.nullcontext()
        )

    capture = cuda and world == 1 and mode is not Compile.none
    return models, opt, TrainStep(forward, opt, autocast, len(models), capture), autocast


def _single_network(model: torch.nn.Module, t: DictConfig, device: torch.device, world: int, mode: Compile):
    """(forward over a 1×N×… input, the model) for a network trained alone."""
    cuda = device.type == "cuda"
    channels_last = cuda and t.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode is Compile.inductor:  # regional compilation: units of one shape share one compiled graph
        torch._dynamo.reset()  # a worker's earlier cells' graphs would count towards the units' recompile limit
        for unit in model.modules():
            if isinstance(unit, ResidualUnit):
                unit.compile()
    net = model
    if world > 1:
        if t.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        with warnings.catch_warnings():  # BN statistics stay per process, as in the paper (no buffer broadcast)
            warnings.simplefilter("ignore", FutureWarning)
            net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None, broadcast_buffers=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x[0].contiguous(memory_format=torch.channels_last) if channels_last else x[0])[None]

    return forward, model
