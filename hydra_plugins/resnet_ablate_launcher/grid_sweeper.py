"""Hydra sweeper ``resnet_ablate_grid``: the union of a preset's grid lines (see resnet_ablate.sweep)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.resnet_ablate_launcher.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grid: List[str] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper", name="resnet_ablate_grid", node=GridSweeperConf, provider="resnet_ablate"
)


def _pack(cells: List[List[str]]) -> List[str]:
    """One cluster job for several workers: the first one's overrides (for the job's own config) plus all of them."""
    lines = ", ".join("'" + " ".join(c).replace("'", "\\'") + "'" for c in cells)
    return [*cells[0], f"launcher.pack=[{lines}]"]


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[dict[str, str]] = None, grid: Any = None):
        super().__init__(max_batch_size, params)
        self.grid = list(grid or [])

    def sweep(self, arguments: list[str]) -> Any:
        from resnet_ablate.sweep import expand_grid, stack_seeds

        cells = expand_grid(self.grid, self._parse_config(), arguments)
        cells = stack_seeds(cells, int(self.config.launcher.seeds_together))
        k = int(self.config.launcher.jobs_per_gpu)
        if k > 1 and "LocalLauncher" not in self.config.hydra.launcher._target_:
            cells = [_pack(cells[i : i + k]) for i in range(0, len(cells), k)]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, index = [], 0
        for batch in self.split_overrides_to_chunks(cells, self.max_batch_size):
            returns.append(self.launcher.launch(batch, initial_job_idx=index))
            index += len(batch)
        return returns
