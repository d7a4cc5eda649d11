"""`hydra/sweeper=plan`: the plan sweeper's options, registered with Hydra's ConfigStore."""

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class PlanSweeperConf:
    _target_: str = "hydra_plugins.candlelab_plan_sweeper.plan_sweeper.PlanSweeper"
    path: Optional[str] = None  # the plan file; null = the newest <paths.output_dir>/plans/*/<plan file>
    stages: List[str] = field(default_factory=lambda: ["cpu", "gpu"])  # which stages run, in this order
    cores: Optional[int] = None  # cores the jobs of a stage share; null = os.cpu_count()
    runs_dir: Optional[str] = None  # base of the job folders; null = <paths.output_dir>/plans/<plan_id>/runs
    pbo_partitions: int = 16  # CSCV partitions (even) for each slot's Probability of Backtest Overfitting


ConfigStore.instance().store(group="hydra/sweeper", name="plan", node=PlanSweeperConf, provider="candlelab")
