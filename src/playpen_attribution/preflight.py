"""The checks `run` makes before any stage runs: what would otherwise fail an hour into a real run.

- every `evaluate.benchmarks` task is known to lm-eval and its YAML loads with its Python functions
  imported (`core.benchmarks.check_task_imports`: IFEval needs `langdetect` and `immutabledict`);
- every SAE the `sae` section names is `random`, a folder, or a release and sae_id in SAELens' own
  registry (`sae.features.check_registry`);
- every hub dataset's `config_name` is one of its configs, when the local hub cache holds its card
  (`sources.generic.check_config_name`; a dataset never fetched is checked when it is loaded).

All offline. The first problem found is raised as one `UserError` (the CLI prints one line, exits 2).
"""

from __future__ import annotations

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.log import logger
from playpen_attribution.sources.playpen_data import PlaypenDataSource
from playpen_attribution.sources.smoltalk import SmolTalkSource


def _datasets(cfg: ExperimentConfig) -> list[tuple[str, str | None, str]]:
    """(dataset, config_name, field) of every hub-dataset source the config reads."""
    sources = [("data.source", cfg.data.source)]
    if cfg.data.candidates is not None and cfg.data.candidates.source is not None:
        sources.append(("data.candidates.source", cfg.data.candidates.source))
    return [(src.dataset, src.config_name, f"{where}.config_name") for where, src in sources
            if isinstance(src, PlaypenDataSource | SmolTalkSource)]


def preflight(cfg: ExperimentConfig) -> None:
    """Raise a UserError for the first configured benchmark task, SAE or dataset config that cannot work."""
    ev = cfg.evaluate
    if ev.benchmarks:
        from playpen_attribution.core.benchmarks import check_task_imports

        check_task_imports(list(ev.benchmarks), ev.benchmark_include_path)
    if cfg.sae is not None:
        from playpen_attribution.sae.features import check_registry

        check_registry(cfg.sae)
    from playpen_attribution.sources.generic import check_config_name

    for dataset, config_name, field in _datasets(cfg):
        check_config_name(dataset, config_name, field)
    logger.debug("preflight passed: %d benchmark task(s), %s, %d hub dataset(s)", len(ev.benchmarks or []),
                 "SAEs found" if cfg.sae is not None else "no SAE", len(_datasets(cfg)))
