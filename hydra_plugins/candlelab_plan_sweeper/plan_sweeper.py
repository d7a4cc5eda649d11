"""The plan sweeper: `python train.py -m hydra/sweeper=plan [hydra.sweeper.path=FILE] [overrides...]` trains
every job of a training plan (`python -m trainer.plan` writes `<paths.output_dir>/plans/<plan_id>/
master_training_plan.json`), resumably, and reports how each ended.

Which plan: `hydra.sweeper.path`, or when null the newest `<paths.output_dir>/plans/*/master_training_plan.json`
(by `metadata.created_at`, then file time); none is a user error (exit code 2).

Overrides: each job's `overrides` compose its config (they carry the data, split and feature settings the plan
was ranked on, and `plan.ranked_until`). Overrides typed on the command line apply to every job and win over the
job's own — except in a job whose config lacks the key, which leaves it out (`++model.max_epochs=1` shrinks the
nets and means nothing to a tree job; `++` because Hydra first composes the default model, which may lack the
key). The command line may not change a job's identity (`model=`, `coin*`, `target*`, `stage`) or what the plan
was ranked on (`data*`, `split*`, `features*`, `seed`, `plan*`): a different data or split setting needs a new
plan, or the plan's choices would rest on rows that are now test rows. An override that fits no job of the plan
is a user error (a typo), and so is a command-line sweep (`a=1,2`). `+key=value` adds the key to every job.

Where: job `<id>` runs in `<paths.output_dir>/plans/<plan_id>/runs/<id>/` (`hydra.sweeper.runs_dir` moves the
base), the same folder on every invocation, so a rerun finds what an earlier one finished.

Stages: `hydra.sweeper.stages` [cpu, gpu] says which stages run (always CPU before GPU); a job's stage is the plan's
`stage` field. Every job of one stage finishes before the next stage starts. CPU-stage jobs go to the configured
launcher together (`hydra/launcher=joblib hydra.launcher.n_jobs=4` runs four at once). GPU-stage jobs go one per
GPU at a time (batches of `torch.cuda.device_count()` jobs, job i of a batch pinned with `device.devices=[i]`);
without a CUDA GPU they run one at a time on CPU with `device=cpu`, and the sweeper warns once for the stage.

Thread budget: each job of a stage gets `trainer.num_threads = max(1, cores // parallel_jobs)`, where cores is
`hydra.sweeper.cores` (null = os.cpu_count()) and parallel_jobs is what the launcher runs at once (joblib
`n_jobs`, -1 = cores; submitit: every job of a batch, up to `array_parallelism`; 1 for the basic launcher; GPU stage: at
most one per GPU), capped by the stage's job count; with submitit's `cpus_per_task` set, that is each job's
thread count. A `trainer.num_threads` on the command line is kept. The
thread count is not part of the config hash, so a different budget never forces a rerun.

Resume: before anything runs, each job's config is composed and hashed (`core.runinfo.config_hash`, as the
pipeline does); a job that does not compose fails alone. A job whose folder holds a `result.json` with status
`completed` and that config hash is skipped; a cancelled, failed, missing or differently configured one runs
again (the pipeline removes a stale `<run_dir>/STOP`).

Selection: the jobs of one slot (same coin route and target) compete for one promoted model, so each job gets
`eval.selection.n_trials=<jobs in its slot, whole plan>` (the Deflated Sharpe Ratio's trial count; a command-line
`eval.selection.n_trials` wins; `eval` is outside the config hash, so resume is unaffected). When the plan ends,
`plan_summary.json` holds `selection`: per slot its trial count and the Probability of Backtest Overfitting
(CSCV over the completed jobs' per-period test returns, `hydra.sweeper.pbo_partitions` [16] partitions; see
`_selection.py`), also printed below the table.

Outcome: one failed job never stops the plan. Each job ends `completed`, `skipped`, `failed`, `cancelled` (its
`train()` returned status cancelled: a stop file, a signal) or `not_run`. A job cancelled by SIGINT/SIGTERM
stops the plan after its launch: with the basic launcher (jobs launched one at a time) Ctrl-C leaves every later
job `not_run`; with a parallel launcher the jobs already handed to it finish first, and later stages do not run.
At the end a table goes to stderr (job, stage, family, coin, target, status, headline test metric — accuracy, or
ic for regression —, gates, seconds) and `<paths.output_dir>/plans/<plan_id>/plan_summary.json` is written
atomically (also after every launch, so it shows progress): the same rows with each run's precise `started_at`
and `finished_at`, run id, config hash, reason and run folder; the plan path; totals per status. If any job is
not completed or skipped, `PlanIncomplete` is raised and `train.py` exits with code 4 and a last line
`error: <n> of <m> plan jobs did not complete (<plan_summary.json>)`.
"""

import logging
import re
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from trainer.result import RunResult

log = logging.getLogger("candlelab.plan")

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
_SIGNAL_REASON = re.compile(r"^(second )?SIG[A-Z]+")  # a cancellation by SIGINT/SIGTERM: the user stops the plan


class PlanSweeper(Sweeper):
    def __init__(
        self,
        path: Optional[str] = None,
        stages: Optional[List[str]] = None,
        cores: Optional[int] = None,
        runs_dir: Optional[str] = None,
        pbo_partitions: int = 16,
    ) -> None:
        super().__init__()
        self.path = path
        self.pbo_partitions = pbo_partitions
        self.stages = list(stages) if stages is not None else ["cpu", "gpu"]
        self.cores = cores
        self.runs_dir = runs_dir
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        return _PlanRun(self, arguments).execute()


class _PlanRun:
    """One invocation of the sweeper over one plan: preparation, the stages, the rows, the summary."""

    def __init__(self, sweeper: PlanSweeper, arguments: List[str]):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from ._budget import cores_available
        from ._overrides import command_line, value_of

        self.sweeper = sweeper
        self.config: DictConfig = sweeper.config
        self.loader = sweeper.hydra_context.config_loader
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.cli = command_line(self.parser, arguments)
        self.user_threads = value_of(self.cli, "trainer.num_threads")
        self.user_device = value_of(self.cli, "device")
        self.stages = _check_stages(sweeper.stages)
        self.cores = cores_available(sweeper.cores)
        self.launcher_cfg = self.config.hydra.launcher
        self.in_process = self.launcher_cfg.get("_target_") == BASIC_LAUNCHER
        self.rows: dict[str, dict] = {}
        self.job_cli: dict[str, list[str]] = {}  # job id -> the command-line overrides that apply to it
        self.launched: dict[str, str | None] = {}  # job id -> the run id its result.json held before launch
        self.budget: dict[str, int] = {}
        self.gpus = 0
        self.interrupted = False
        self.job_idx = 0

    def execute(self) -> list[dict]:
        from core.runinfo import utc_now

        from ._plan import find_plan, load_plan
        from ._selection import selection_lines, slot_trials
        from ._summary import DONE, SUMMARY_FILE, job_row, print_table

        self.started_at = utc_now()
        output_dir = Path(str(self.config.paths.output_dir)).expanduser().absolute()
        plan_path = Path(self.sweeper.path).expanduser().absolute() if self.sweeper.path else find_plan(output_dir)
        self.plan = load_plan(plan_path)
        self.trials = slot_trials(self.plan.jobs)
        self.home = output_dir / "plans" / self.plan.plan_id
        self.runs_base = (
            Path(self.sweeper.runs_dir).expanduser().absolute() if self.sweeper.runs_dir else self.home / "runs"
        )
        self.summary_path = self.home / SUMMARY_FILE
        with open_dict(self.config.hydra):  # launchers create and log the master sweep dir: make it the runs base
            self.config.hydra.sweep.dir = str(self.runs_base)

        selected = [job for job in self.plan.jobs if job.stage in self.stages]
        self.left_out = [job.id for job in self.plan.jobs if job.stage not in self.stages]
        self.rows = {job.id: job_row(job, self._run_dir(job), "pending") for job in selected}
        log.info(
            "plan %s: %s (%s) from %s; runs in %s",
            self.plan.plan_id,
            _count(selected, "job"),
            ", ".join(f"{s} {sum(j.stage == s for j in selected)}" for s in self.stages),
            plan_path,
            self.runs_base,
        )
        if self.left_out:
            log.info("stages %s selected: %s of other stages left out", self.stages, _count(self.left_out, "job"))
        if any(job.stage == "gpu" for job in selected) and self.user_device != "cpu":
            from ._budget import visible_gpus

            self.gpus = visible_gpus()
        to_run = self._prepare(selected)
        self.home.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.home / "multirun.yaml")
        self._write(finished=False)
        try:
            for stage in self.stages:
                jobs = [job for job in to_run if job.stage == stage]
                if jobs and not self.interrupted:
                    self._run_stage(stage, jobs)
        except KeyboardInterrupt:
            log.warning("plan interrupted: jobs not finished are reported as not run")
            self.interrupted = True
        self._settle()
        selection = self._write(finished=True)
        rows = list(self.rows.values())
        print_table(f"plan {self.plan.plan_id}", rows, selection_lines(selection))
        incomplete = [r for r in rows if r["status"] not in DONE]
        if incomplete:
            from core.errors import PlanIncomplete

            raise PlanIncomplete(len(incomplete), len(rows), self.summary_path)
        return rows

    def _stage_overrides(self, stage: str) -> list[str]:
        cpu_fallback = stage == "gpu" and self.gpus == 0 and self.user_device is None
        return ["device=cpu"] if cpu_fallback else []

    def _prepare(self, jobs: list) -> list:
        """Compose every job's config before anything runs: which command-line overrides apply to it, its
        config hash, whether an earlier run already completed it. Returns the jobs to launch."""
        from core.errors import UserError

        from ._overrides import applies_to

        to_run, used, lacking = [], {o.input_line: 0 for o in self.cli}, {}
        for job in jobs:
            extra = self._stage_overrides(job.stage)
            try:
                base = self._compose(self._overrides(job, extra, cli=[]))
                cli = [o.input_line for o in self.cli if applies_to(o, base)]
                cfg = self._compose(self._overrides(job, extra, cli)) if cli else base
            except Exception as exc:  # a job whose overrides do not compose fails alone; the launcher would stop all
                self._refuse(job, f"its overrides do not compose: {_first_line(exc)}")
                continue
            self.job_cli[job.id] = cli
            for line in self.cli_lines:
                if line in cli:
                    used[line] += 1
                else:
                    lacking.setdefault(line, []).append(job.id)
            pinned = job.stage == "gpu" and self.gpus > 1
            if not self._done_earlier(job, self._config_hashes(cfg, pinned)):
                to_run.append(job)
        if self.job_cli:
            for line, n in used.items():
                if n == 0:
                    raise UserError(f"{line} applies to no job of the plan: no job's config has that key", line)
                if line in lacking:
                    log.info(
                        "%s left out of %s whose config lacks the key: %s",
                        line,
                        _count(lacking[line], "job"),
                        ", ".join(lacking[line]),
                    )
        return to_run

    @property
    def cli_lines(self) -> list[str]:
        return [o.input_line for o in self.cli]

    def _compose(self, overrides: list[str]) -> DictConfig:
        return self.loader.load_sweep_config(self.config, overrides)

    def _config_hashes(self, cfg: DictConfig, pinned: bool) -> set[str]:
        """The config hash the pipeline will record for this job (one per GPU slot when jobs are pinned)."""
        import copy

        from hydra.core.hydra_config import HydraConfig

        from core.runinfo import config_hash

        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(self.runs_base / "_")
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(cfg)  # as run_job does, in case the task config reads ${hydra:...}
        try:
            task = copy.deepcopy(cfg)
            with open_dict(task):
                del task["hydra"]
            if not pinned:
                return {config_hash(task)}
            hashes = set()
            for i in range(self.gpus):
                with open_dict(task):
                    task.device.devices = [i]
                hashes.add(config_hash(task))
            return hashes
        finally:
            HydraConfig.instance().cfg = saved

    def _done_earlier(self, job, hashes: set[str]) -> bool:
        from ._summary import job_row

        run_dir = self._run_dir(job)
        previous = RunResult.read(run_dir / "result.json")
        if not previous:
            return False
        recorded = previous.run.config_hash
        if previous.status == "completed" and recorded in hashes:
            log.info(
                "plan job %s: skipped, completed earlier with the same config (hash %s) in %s",
                job.id,
                recorded,
                run_dir,
            )
            self.rows[job.id] = job_row(
                job, run_dir, "skipped", previous, reason="completed earlier with the same config hash"
            )
            return True
        why = "its config changed" if previous.status == "completed" else f"the last run ended {previous.status}"
        log.info("plan job %s: runs again, %s", job.id, why)
        return False

    def _refuse(self, job, reason: str) -> None:
        from ._summary import job_row

        log.error("plan job %s failed: %s", job.id, reason)
        self.rows[job.id] = job_row(job, self._run_dir(job), "failed", reason=reason)

    def _run_stage(self, stage: str, jobs: list) -> None:
        from ._budget import launcher_parallelism, thread_budget

        extra = self._stage_overrides(stage)
        if extra:
            log.warning(
                "no CUDA GPU visible: %s train on CPU (device=cpu), one at a time", _count(jobs, "GPU-stage job")
            )
        per_gpu = max(1, self.gpus) if stage == "gpu" else len(jobs)
        group = 1 if self.in_process else per_gpu
        parallel = min(launcher_parallelism(self.launcher_cfg, self.cores, len(jobs)), len(jobs), per_gpu)
        pacing: list[str] = []
        if self.user_threads is not None:
            self.budget[stage] = int(self.user_threads)
            log.info(
                "%s stage: %s, trainer.num_threads=%s from the command line",
                stage,
                _count(jobs, "job"),
                self.user_threads,
            )
        elif self.launcher_cfg.get("cpus_per_task"):  # submitit: each job owns what it asked for
            self.budget[stage] = int(self.launcher_cfg.cpus_per_task)
            pacing.append(f"trainer.num_threads={self.budget[stage]}")
            log.info(
                "%s stage: %s, cpus_per_task=%d -> trainer.num_threads=%d per job",
                stage,
                _count(jobs, "job"),
                self.budget[stage],
                self.budget[stage],
            )
        else:
            self.budget[stage] = thread_budget(self.cores, parallel)
            pacing.append(f"trainer.num_threads={self.budget[stage]}")
            log.info(
                "%s stage: %s, %d at a time on %d cores -> trainer.num_threads=%d per job",
                stage,
                _count(jobs, "job"),
                parallel,
                self.cores,
                self.budget[stage],
            )
        for start in range(0, len(jobs), group):
            batch = jobs[start : start + group]
            pins = [[f"device.devices=[{i}]"] if stage == "gpu" and self.gpus > 1 else [] for i in range(len(batch))]
            self._launch(batch, [self._overrides(job, extra + pin + pacing) for job, pin in zip(batch, pins)])
            if self.interrupted:
                log.warning("a job was stopped by a signal: the plan stops here")
                return

    def _launch(self, batch: list, overrides: list[list[str]]) -> None:
        for job in batch:
            previous = RunResult.read(self._run_dir(job) / "result.json")
            self.launched[job.id] = previous.run.run_id if previous else None
        try:
            returns = self.sweeper.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a killed worker or a timed-out cluster job: the batch fails, the plan goes on
            log.error("the launcher failed on %s: %s", _count(batch, "job"), _first_line(exc))
            returns = [None] * len(batch)
        self.job_idx += len(batch)
        for job, ret in zip(batch, returns):
            self._record(job, ret)
        self._write(finished=False)

    def _record(self, job, ret: JobReturn) -> None:
        from core.errors import UserError

        from ._summary import job_row

        run_dir = self._run_dir(job)
        result = self._fresh_result(job)
        if ret is None:  # the launcher itself failed: what the job wrote, if anything, says how far it got
            status = result.status if result and result.status in ("completed", "cancelled") else "failed"
            self.rows[job.id] = job_row(
                job,
                run_dir,
                status,
                result,
                reason=None if status == "completed" else "the launcher failed on its batch",
            )
            return
        if ret.status == JobStatus.FAILED:
            exc = ret._return_value  # the property re-raises; the plan goes on
            if result and result.status == "failed":
                reason = result.reason
            else:
                reason = exc.line().removeprefix("error: ") if isinstance(exc, UserError) else _first_line(exc)
            internal = not isinstance(exc, UserError) and getattr(exc, "__traceback__", None) is not None
            log.error("plan job %s failed: %s", job.id, reason, exc_info=exc if internal else None)
            self.rows[job.id] = job_row(job, run_dir, "failed", result, reason=reason)
            return
        if result is None:
            self.rows[job.id] = job_row(job, run_dir, "failed", reason="the job ended without writing result.json")
            log.error("plan job %s failed: no result.json in %s", job.id, run_dir)
            return
        status = result.status if result.status in ("completed", "cancelled", "failed") else "failed"
        self.rows[job.id] = job_row(job, run_dir, status, result)
        log.info("plan job %s: %s%s", job.id, status, f" ({result.reason})" if result.reason else "")
        if status == "cancelled" and _SIGNAL_REASON.match(str(result.reason or "")):
            self.interrupted = True

    def _fresh_result(self, job) -> RunResult | None:
        """The job's result.json if this launch wrote it (an older one describes an earlier run)."""
        result = RunResult.read(self._run_dir(job) / "result.json")
        if result is None or result.run.run_id == self.launched.get(job.id):
            return None
        return result

    def _settle(self) -> None:
        """After an interruption: jobs launched but not recorded take what their result.json says; the rest did
        not run."""
        from ._summary import job_row

        for job in self.plan.jobs:
            row = self.rows.get(job.id)
            if row is None or row["status"] != "pending":
                continue
            result = self._fresh_result(job) if job.id in self.launched else None
            if result and result.status in ("completed", "cancelled", "failed"):
                self.rows[job.id] = job_row(job, self._run_dir(job), result.status, result)
            else:
                self.rows[job.id] = job_row(
                    job, self._run_dir(job), "not_run", reason="the plan was interrupted before this job finished"
                )

    def _write(self, finished: bool) -> dict | None:
        from core.runinfo import utc_now

        from ._selection import slot_selection
        from ._summary import totals, write_summary

        rows = list(self.rows.values())
        selection = slot_selection(self.plan.jobs, self.rows, int(self.sweeper.pbo_partitions)) if finished else None
        write_summary(
            self.summary_path,
            {
                "plan_id": self.plan.plan_id,
                "plan_path": str(self.plan.path),
                "plan_created_at": self.plan.created_at,
                "state": ("interrupted" if self.interrupted else "finished") if finished else "running",
                "started_at": self.started_at,
                "finished_at": utc_now() if finished else None,
                "stages": self.stages,
                "left_out": self.left_out,
                "runs_dir": str(self.runs_base),
                "launcher": self.launcher_cfg.get("_target_"),
                "cores": self.cores,
                "threads_per_job": self.budget,
                "command_line": self.cli_lines,
                "totals": totals(rows),
                "selection": selection,
                "jobs": rows,
            },
        )
        return selection

    def _overrides(self, job, extra: list[str], cli: list[str] | None = None) -> list[str]:
        from ._overrides import merged, quoted

        placement = [
            f"hydra.sweep.dir={quoted(str(self.runs_base))}",
            f"hydra.sweep.subdir={quoted(job.id)}",
            f"eval.selection.n_trials={self.trials[job.id]}",
        ]  # the jobs competing for its slot
        return merged(
            self.parser, list(job.overrides), placement, extra, self.job_cli.get(job.id, []) if cli is None else cli
        )

    def _run_dir(self, job) -> Path:
        return self.runs_base / job.id


def _check_stages(stages: list) -> list[str]:
    from core.errors import UserError

    from ._plan import STAGES

    stages = [str(s) for s in stages]
    if not stages or any(s not in STAGES for s in stages) or len(set(stages)) != len(stages):
        raise UserError(
            f"stages must list each of {', '.join(STAGES)} at most once, got {stages}", "hydra.sweeper.stages"
        )
    if stages != [s for s in STAGES if s in stages]:  # a subset may be chosen; the order is not a choice
        raise UserError(
            f"stages run in the order {', '.join(STAGES)} (every CPU-stage job before the first "
            f"GPU-stage job); got {stages}",
            "hydra.sweeper.stages",
        )
    return stages


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
