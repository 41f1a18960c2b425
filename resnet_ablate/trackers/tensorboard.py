"""TensorBoard: event files in each run directory (``logger=tensorboard``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from . import TRACKERS, hyperparameters


@TRACKERS.register("tensorboard")
class TensorBoard:
    """Event files in ``<run directory>/tensorboard``; a resume purges the steps after its checkpoint, so the
    curves are the run's own (TensorBoard's purge on restart), and the hyper-parameters go to the HParams view."""

    kind = "tensorboard"

    def __init__(self, cfg: DictConfig, directory: Path, start: int, state: dict):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(directory / "tensorboard"), purge_step=start + 1 if start else 0)
        self.state, self.logged = {}, start if start else -1  # each row is flushed as it is written
        if start == 0:
            experiment, session_start, _ = hparams(hyperparameters(cfg), {"test_error": 1.0})
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(session_start)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def finish(self, status: str, test_error: float | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        *_, session_end = hparams({}, {})
        self.writer.file_writer.add_summary(session_end)
        self.writer.close()

    def close(self, reason: str) -> None:
        self.writer.close()
