"""Independent jobs of a run (an arm x seed's training and evaluation) as separate processes, through submitit.

`LauncherConfig` is the config's `launcher:` section. `run_jobs(cfg, jobs, folder)` runs a list of
`Job`s and returns when all are done:

- `local`: submitit's `LocalExecutor`, each job its own process (`python -m submitit.core._submit`), at
  most `workers` at a time (a thread pool of that width waits on them; submitit's local executor has
  no limit of its own). With CUDA GPUs each of the `workers` slots is pinned to one GPU (slot i ->
  GPU i mod the GPU count, submitit's `visible_gpus`; without GPUs submitit hides them all), and each
  job sets torch to its share of the CPU threads (cores // workers).
- `slurm`: submitit's `AutoExecutor(cluster="slurm")`, all jobs submitted as one job array
  (`slurm_array_parallelism` = `workers`) with the `launcher.slurm` settings.

Both show a progress bar over finished jobs (log lines are written above it). A failed job stops new submissions; the jobs already
running finish, then `JobFailed` names the failed job and its log. Logs and submitit's pickles live in
the folder handed in (the run's `jobs/`). Interrupting the parent (Ctrl-C) cancels the running jobs.
Whatever a job finished stays finished: the run folder is what coordinates the jobs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger, setup_logging

if TYPE_CHECKING:
    import submitit


class SlurmSettings(Section):
    """How each job is submitted to SLURM (submitit's AutoExecutor parameters)."""

    partition: str | None = Field(None, description="SLURM partition (--partition); null = the cluster's default.")
    gpus_per_job: int = Field(1, ge=0, description="GPUs per job (--gpus-per-node).")
    cpus_per_job: int | None = Field(None, gt=0, description="CPU cores per job (--cpus-per-task); null = SLURM's default.")
    time_min: int = Field(120, gt=0, description="Time limit per job in minutes (--time).")
    mem_gb: int | None = Field(None, gt=0, description="Memory per job in GB (--mem); null = SLURM's default.")
    extra: dict[str, str | int] = Field(
        default_factory=dict,
        description="Further sbatch options, e.g. {account: my_lab, qos: high, constraint: h100} (#SBATCH --key=value).",
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before each job (e.g. 'module load cuda', 'source .venv/bin/activate')."
    )


class LauncherConfig(Section):
    """Where the arm x seed jobs (training + evaluation) run; shared stages and the report always run in this process."""

    kind: Literal["inline", "local", "slurm"] = Field(
        "inline",
        description="inline: one after another in this process; local: separate processes on this machine, `workers` "
        "at a time (submitit's local executor); slurm: a SLURM job array through submitit.",
    )
    workers: int = Field(1, gt=0, description="Jobs running at once (local: processes; slurm: the array's parallelism).")
    timeout_min: int = Field(24 * 60, gt=0, description="local: a job still running after this many minutes is stopped.")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings, description="kind slurm: the sbatch settings per job.")


@dataclass(frozen=True)
class Job:
    """One independent unit of work: `fn(*args)` in a fresh process; `fn` must be importable (module level)."""

    name: str
    fn: Callable
    args: tuple


class JobFailed(UserError):
    """A job of the run failed; the message names it and its log file."""


def job_main(fn: Callable, args: tuple, threads: int | None) -> None:
    """What a job process runs: the package's logging to the job's log, its share of CPU threads, then `fn`."""
    setup_logging()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    fn(*args)


def cpu_threads(workers: int) -> int:
    """Each of `workers` jobs' share of this machine's cores (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def slurm_parameters(cfg: LauncherConfig) -> dict:
    """submitit AutoExecutor parameters of `launcher.slurm` (names submitit translates to sbatch options)."""
    s = cfg.slurm
    params = {"timeout_min": s.time_min, "gpus_per_node": s.gpus_per_job, "slurm_array_parallelism": cfg.workers,
              "name": "playpen-attribution"}
    optional = {"slurm_partition": s.partition, "cpus_per_task": s.cpus_per_job, "mem_gb": s.mem_gb,
                "slurm_additional_parameters": dict(s.extra) or None, "slurm_setup": list(s.setup) or None}
    return params | {k: v for k, v in optional.items() if v is not None}


def slurm_executor(cfg: LauncherConfig, folder: Path):
    """submitit's AutoExecutor for SLURM with the config's settings (no sbatch call until a job is submitted)."""
    import shutil

    import submitit

    if shutil.which("srun") is None:
        raise UserError("launcher.kind is slurm, but this machine has no SLURM (no srun on PATH); "
                        "use launcher.kind local (or run --workers N) here")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**slurm_parameters(cfg))
    return executor


def run_jobs(cfg: LauncherConfig, jobs: list[Job], folder: Path) -> None:
    """Run every job under `cfg.kind` (local or slurm) and wait; `JobFailed` when one fails."""
    if not jobs:
        return
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "local":
        failed = _run_local(cfg, jobs, folder)
    elif cfg.kind == "slurm":
        failed = _run_slurm(cfg, jobs, folder)
    else:
        raise ValueError(f"run_jobs runs local or slurm jobs, not {cfg.kind!r}")
    if failed:
        (name, log, why), more = failed[0], len(failed) - 1
        others = f" ({more} more failed job(s), logs in {folder})" if more else ""
        raise JobFailed(f"job '{name}' failed: {why}; its log: {log}{others}")


def _lines_above(bar_class):
    """While the jobs bar runs, the package's console log lines are written above it (tqdm's redirect), not
    into the bar's line; a logger without a console handler (the package used as a library) is left alone."""
    import logging
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    console = [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)]
    if not console:
        return contextlib.nullcontext()
    return logging_redirect_tqdm(loggers=[logger], tqdm_class=bar_class)


def _failure(submitted) -> str | None:
    """Why a finished submitit job failed (its error's last line), or None when it succeeded."""
    error = submitted.exception()
    if error is None:
        return None
    text = str(error)
    parts = text.split("-" * 22)  # submitit's FailedJobError: the job's traceback between two dashed lines
    trace = parts[1] if len(parts) >= 3 else text
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _run_local(cfg: LauncherConfig, jobs: list[Job], folder: Path) -> list[tuple[str, Path, str]]:
    import submitit
    from tqdm.auto import tqdm

    executor = submitit.LocalExecutor(folder=folder)
    gpus = gpu_count()
    threads = cpu_threads(cfg.workers)  # with GPUs too: tokenization and data loading run on the CPU
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(cfg.workers):
        slots.put(slot)
    lock, stop = threading.Lock(), threading.Event()
    running: dict[str, submitit.Job] = {}
    if gpus:
        logger.info("[launcher] %d job(s), %d at a time, each on one of %d GPU(s) with %d CPU thread(s); logs in %s",
                    len(jobs), cfg.workers, gpus, threads, folder)
        if cfg.workers > gpus:
            logger.warning("[launcher] %d workers share %d GPU(s)", cfg.workers, gpus)
    else:
        logger.info("[launcher] %d job(s), %d at a time, %d CPU thread(s) each; logs in %s",
                    len(jobs), cfg.workers, threads, folder)

    def one(job: Job) -> tuple[Job, Path | None, str | None]:
        slot = slots.get()
        try:
            if stop.is_set():
                return job, None, "not started (another job failed)"
            with lock:  # update_parameters + submit must not interleave across threads
                gpu = {"gpus_per_node": 1, "visible_gpus": [slot % gpus]} if gpus else {"gpus_per_node": 0}
                executor.update_parameters(timeout_min=cfg.timeout_min, **gpu)
                submitted = executor.submit(job_main, job.fn, job.args, threads)
                running[job.name] = submitted
            submitted.wait()
            with lock:
                running.pop(job.name, None)
            why = _failure(submitted)
            if why is not None:
                stop.set()
            return job, submitted.paths.stderr, why
        finally:
            slots.put(slot)

    failed = []
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="launcher")
    try:
        futures = [pool.submit(one, job) for job in jobs]
        with _lines_above(tqdm):
            for future in tqdm(as_completed(futures), total=len(futures), desc="jobs", unit="job"):
                job, log, why = future.result()
                if why is None:
                    logger.info("[launcher] %s: done (log %s)", job.name, log)
                elif log is not None:
                    logger.error("[launcher] %s: failed (%s); log %s", job.name, why, log)
                    failed.append((job.name, log, why))
    finally:
        stop.set()
        with lock:
            for submitted in running.values():  # only on an interrupt: cancel what still runs
                submitted.cancel(check=False)
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


def _run_slurm(cfg: LauncherConfig, jobs: list[Job], folder: Path) -> list[tuple[str, Path, str]]:
    from submitit.helpers import as_completed as jobs_completed
    from tqdm.auto import tqdm

    executor = slurm_executor(cfg, folder)
    with executor.batch():
        submitted = [executor.submit(job_main, job.fn, job.args, None) for job in jobs]
    names = {id(s): job.name for s, job in zip(submitted, jobs, strict=True)}
    logger.info("[launcher] submitted %d SLURM job(s) (array %s, %d at a time); logs in %s",
                len(jobs), submitted[0].job_id.split("_")[0], cfg.workers, folder)
    failed = []
    try:
        with _lines_above(tqdm):
            for done in tqdm(jobs_completed(submitted, poll_frequency=30), total=len(submitted), desc="jobs",
                             unit="job"):
                why = _failure(done)
                if why is not None:
                    logger.error("[launcher] %s: failed (%s); log %s", names[id(done)], why, done.paths.stderr)
                    failed.append((names[id(done)], done.paths.stderr, why))
    except KeyboardInterrupt:
        for s in submitted:
            s.cancel(check=False)
        raise
    return failed
