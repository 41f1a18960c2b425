"""Whether a launcher can start, checked before the store is touched: its plugin installed, SLURM's client on
PATH, a Ray cluster reachable, a GPU where Ray would wait for one."""

from __future__ import annotations

import importlib.util
import shutil
import socket


def check_launcher(args: list[str]) -> None:
    """A launcher that cannot start is a ValueError at once, naming what is missing, before the store is touched."""
    if "launcher=slurm" in args or any(a.startswith("hydra/launcher=submitit_slurm") for a in args):
        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            raise ValueError("launcher=slurm needs hydra-submitit-launcher: pip install 'resnet-ablate[slurm]'")
        if shutil.which("sbatch") is None:
            raise ValueError(
                "launcher=slurm needs SLURM's sbatch on PATH (a SLURM client); on one machine use launcher=local"
            )
    if "launcher=ray" in args or any(a.startswith("hydra/launcher=ray") for a in args):
        if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
            raise ValueError("launcher=ray needs hydra-ray-launcher: pip install 'resnet-ablate[ray]'")
        given = dict(a.split("=", 1) for a in args if a.startswith("hydra.launcher.ray."))
        gpus = float(given.get("hydra.launcher.ray.remote.num_gpus", 1))
        address = given.get("hydra.launcher.ray.init.address", "null")
        if address not in ("null", "auto"):
            host, _, port = address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError) as e:
                raise ValueError(
                    f"cannot reach the Ray cluster at {address} ({e}); check hydra.launcher.ray.init.address=HOST:PORT"
                ) from None
        if address == "null" and gpus > 0:
            import torch

            if torch.cuda.device_count() == 0:  # Ray would wait forever for a GPU this machine does not have
                raise ValueError(
                    "launcher=ray asks for a GPU per cell but this machine has none; "
                    "add hydra.launcher.ray.remote.num_gpus=0 or hydra.launcher.ray.init.address=HOST:PORT"
                )
