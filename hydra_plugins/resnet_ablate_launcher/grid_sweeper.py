"""Hydra sweeper ``resnet_ablate_grid``: the union of a preset's grid lines (see resnet_ablate.grid), on Hydra's
public plugin API."""

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.resnet_ablate_launcher.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grid: List[str] = field(default_factory=list)
    table: Optional[Any] = None  # a paper table's columns and rows (resnet_ablate/presets.py)
    figure: Optional[Any] = None  # a paper figure's panels


ConfigStore.instance().store(
    group="hydra/sweeper", name="resnet_ablate_grid", node=GridSweeperConf, provider="resnet_ablate"
)


def _pack(cells: List[List[str]]) -> List[str]:
    """One cluster job for several workers: the first one's overrides (for the job's own config) plus all of them,
    each a shell-quoted line (``run_pack`` splits it back)."""
    lines = ", ".join("'" + shlex.join(c).replace("'", "\\'") + "'" for c in cells)
    return [*cells[0], f"launcher.pack=[{lines}]"]


class GridSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int], params: Any = None, grid: Any = None, table=None, figure=None):
        from resnet_ablate.presets import Preset

        self.max_batch_size = max_batch_size
        self.spec = Preset.from_sweeper("", {"params": params, "grid": grid, "table": table, "figure": figure})

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        from hydra.core.utils import JobStatus

        from resnet_ablate import trackers
        from resnet_ablate.grid import expand_grid, stack_seeds

        cells = expand_grid(self.spec.lines(), self.spec.overrides(), arguments)
        preset = self.config.hydra.runtime.choices.get("sweep") or "sweep"
        group, parent = trackers.open_sweep(self.config, preset, arguments)
        cells = [[*c, *trackers.sweep_overrides(preset, group, parent)] for c in cells]
        cells = stack_seeds(cells, int(self.config.launcher.seeds_together))
        k = int(self.config.launcher.jobs_per_gpu)
        if k > 1 and not getattr(self.launcher, "shares_gpus", False):  # ours shares GPUs itself; others get packs
            cells = [_pack(cells[i : i + k]) for i in range(0, len(cells), k)]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size if self.max_batch_size and self.max_batch_size > 0 else max(1, len(cells))
        returns, ok = [], False
        watch = self._watch()
        try:
            for start in range(0, len(cells), size):
                returns.append(self.launcher.launch(cells[start : start + size], initial_job_idx=start))
            ok = all(r.status is JobStatus.COMPLETED for batch in returns for r in batch)
        except Exception:
            if watch is None or not watch.refused:
                raise
        finally:
            if watch is not None:
                watch.stop()
            trackers.close_sweep(self.config, parent, ok)
        if watch is not None and watch.refused:
            raise CompactHydraException(watch.why())  # one line, not the launcher's traceback
        return returns

    def _watch(self):
        """On SLURM, a watch that reports the submitted jobs' pending reasons (resnet_ablate/slurm.py)."""
        if self.config.launcher.name != "slurm":
            return None
        from resnet_ablate.slurm import PendingWatch

        watch = PendingWatch(Path(str(self.config.hydra.launcher.submitit_folder)).parent)
        watch.start()
        return watch
