import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(2)

# The tiny cell most tests train: an 8-layer net on 512 synthetic images, on the CPU (seconds per run).
TINY = [
    "model=resnet20",
    "model.depth=8",
    "data=synthetic",
    "data.synthetic_train=512",
    "data.synthetic_test=256",
    "train.device=cpu",
]


@pytest.fixture
def cfg():
    """Compose a config from overrides."""
    from resnet_ablate.config import compose

    return lambda *overrides: compose(list(overrides))


@pytest.fixture
def data_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "data"


def start_cli(*args, **popen) -> subprocess.Popen:
    """Start ``python -m resnet_ablate`` in the background (its own session, output captured as text)."""
    defaults = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "start_new_session": True}
    return subprocess.Popen([sys.executable, "-m", "resnet_ablate", *args], cwd=ROOT, **{**defaults, **popen})


def cli(*args, cwd=None, env=None, timeout=600, check=False):
    """Run ``python -m resnet_ablate`` in a real subprocess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_ablate", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
