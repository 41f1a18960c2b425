"""The cost model: a cell's multiply-adds per image, and what a training step costs (6 × MACs per image: the forward
pass, and the backward pass twice as dear), in FLOPs and in estimated GPU-hours."""

from __future__ import annotations

from omegaconf import DictConfig


def forward_macs(cfg: DictConfig) -> int:
    """Multiply-adds of one image's forward pass through the cell's network (counted on the meta device)."""
    import torch

    from .models import build_model, count_macs, input_size

    with torch.device("meta"):  # shapes only
        net = build_model(cfg)
    return count_macs(net, input_size(cfg))


def training_flops(macs: int, images: int) -> float:
    """FLOPs of training ``images`` images through a network of ``macs`` multiply-adds per image: 2 FLOPs per
    multiply-add, forward once and backward twice as dear."""
    return 6 * macs * images


def gpu_hours(cfg: DictConfig, macs: int, tflops: float) -> float:
    """An estimate of one cell's GPU-hours: its training FLOPs at ``tflops`` effective TFLOP/s."""
    return training_flops(macs, cfg.train.batch_size * cfg.train.iterations) / (tflops * 1e12) / 3600
