"""Bergson's own commands for mean scoring, built the way one would by hand: the reference that the
attribute stage is timed against (`attribution_overhead.py` in this process, `gpu_check.py` as the
bare `bergson` command in a fresh process).

Steps, on the `pool.hf` / `query.hf` the attribute stage handed to Bergson (copied into `work`):
`Hessian` of the query rows (when preconditioning), `Build` of the query index with
`aggregation="mean"` and that Hessian, then `Score` of the pool against it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from playpen_attribution.attribution import bergson_runs as runs


def direct_steps(settings: runs.Scoring, model_path: str, adapter: Path, rows: Path, work: Path):
    """[(command name, Bergson command)] for mean scoring of `work/pool.hf` against `work/query.hf`."""
    from bergson.cli.commands import Build, Hessian, Score
    from bergson.config.config import HessianConfig, PreprocessConfig, ScoreConfig

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(rows, work)  # pool.hf, query.hf as the stage handed them to Bergson

    def index_cfg(data_name: str, out: str):
        return runs.index_config(Path(model_path), adapter, work / data_name, str(work / out), settings)

    steps = []
    hessian = None
    if settings.attribute.preconditioning != "none":
        steps.append(("hessian", Hessian(hessian_cfg=HessianConfig(method="autocorrelation"),
                                         index_cfg=index_cfg("query.hf", "hessian"))))
        hessian = str(work / "hessian")
    preprocess = PreprocessConfig(unit_normalize=settings.attribute.unit_normalize, hessian_path=hessian, aggregation="mean")
    steps.append(("build", Build(index_cfg=index_cfg("query.hf", "query_index"), preprocess_cfg=preprocess)))
    steps.append(("score", Score(score_cfg=ScoreConfig(query_path=str(work / "query_index"), score="individual"),
                                 index_cfg=index_cfg("pool.hf", "scores"), preprocess_cfg=preprocess)))
    return steps


def run_in_process(steps) -> None:
    for _, command in steps:
        command.execute()


def bergson_command() -> list[str]:
    """The `bergson` console script of this environment (or `python -m bergson` without one)."""
    script = Path(sys.executable).parent / "bergson"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bergson"]


def run_bare_command(steps, work: Path, log: Path) -> None:
    """Write the steps as one Bergson pipeline file and run it with the bare `bergson` command."""
    from bergson.config.config_io import save_pipeline_config

    save_pipeline_config(steps, work / "pipeline")
    with log.open("w") as out:
        done = subprocess.run([*bergson_command(), str(work / "pipeline" / "config.yaml")],
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bare bergson command failed (exit {done.returncode}); see {log}")
