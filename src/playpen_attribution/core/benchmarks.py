"""Benchmarks through the lm-evaluation-harness (`lm-eval`), on a model already loaded by the stage.

`run_lm_eval` wraps the loaded model (base, or base + a PEFT adapter) and its tokenizer in the
harness's own `HFLM`, loads tasks through a `TaskManager` (the YAML tasks of `include_path`, and the harness's own
library unless the local folder holds every task named) and runs `simple_evaluate`
with `log_samples`, so every task's per-item scores come back keyed by `doc_id` and filter: the
report pairs models on the same items. The chat template is applied when the run's tokenization uses
one (`tokenize.format: chat_template`). Code-execution tasks (humaneval, mbpp) run only when the
config allows it: then `HF_ALLOW_CODE_EVAL=1` is set and the harness's `confirm_run_unsafe_code`;
otherwise the harness refuses them and the refusal becomes one line naming the config field.

Results per task: every `metric,filter` the harness reports with its own stderr (`metric_stderr,filter`),
the number of items, and the switches used (recorded beside them). What the harness `print`s (its batch-size
search) goes to DEBUG: the size it settled on is recorded as `batch_size_used`.
"""

from __future__ import annotations

import io
import math
import os
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger


@contextmanager
def _code_eval_env(allowed: bool):
    old = os.environ.get("HF_ALLOW_CODE_EVAL")
    if allowed:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    try:
        yield
    finally:
        if allowed:
            if old is None:
                os.environ.pop("HF_ALLOW_CODE_EVAL", None)
            else:
                os.environ["HF_ALLOW_CODE_EVAL"] = old


@contextmanager
def _printed_to_debug():
    """The harness prints to stdout (`batch_size: auto`'s search); those lines go to DEBUG instead."""
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            yield
    finally:
        for line in printed.getvalue().splitlines():
            if line.strip():
                logger.debug("lm-eval printed: %s", line)


def task_manager(tasks: list[str], include_path: str | Path | None):
    """The harness's TaskManager: only the YAML tasks under `include_path` when they hold every task named
    (no need to index the harness's library), else those and the library. UserError for unknown tasks."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise UserError(f"evaluate.benchmark_include_path = {str(include_path)!r}: no such folder")
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"evaluate.benchmarks: unknown lm-eval task(s) {unknown} (not in the harness's task "
                        "library or evaluate.benchmark_include_path)")
    return manager


def check_task_imports(tasks: list[str], include_path: str | Path | None) -> None:
    """UserError naming the first task (of `tasks`, or a member of a group or tag named there) whose YAML config
    cannot be loaded with its `!function` references imported: the Python modules a task's metrics and filters
    live in (IFEval's need `langdetect` and `immutabledict`). Offline: the datasets are not touched."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    index = task_manager(tasks, include_path).task_index
    todo, seen = list(tasks), set()
    while todo:
        name = todo.pop()
        entry = index.get(name)
        if name in seen or entry is None:  # an inline member of a group: checked with its group's file
            continue
        seen.add(name)
        if entry.kind == Kind.TAG:
            todo += sorted(entry.tags)
        if entry.yaml_path is None:
            continue
        try:
            config = load_yaml(entry.yaml_path, resolve_func=True)
        except Exception as exc:  # whatever a task module's import raises (ModuleNotFoundError, ...)
            within = "" if name in tasks else f" (in {', '.join(tasks)})"
            raise UserError(f"evaluate.benchmarks: lm-eval task {name!r}{within} cannot be loaded: "
                            f"{type(exc).__name__}: {exc} ({entry.yaml_path})") from exc
        if entry.kind == Kind.GROUP and isinstance(config.get("task"), list):
            todo += [m if isinstance(m, str) else m.get("task") or m.get("group") for m in config["task"]]


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def parse_results(results: dict, n_samples: dict) -> dict[str, dict]:
    """task -> {metrics: [{metric, filter, value, stderr}], n}: the harness's `metric,filter` keys."""
    out = {}
    for task, entry in results.items():
        values, errors = {}, {}
        for key, value in entry.items():
            if "," not in key:
                continue
            metric, filt = key.split(",", 1)
            if metric.endswith("_stderr"):
                errors[(metric.removesuffix("_stderr"), filt)] = _number(value)
            else:
                values[(metric, filt)] = _number(value)
        metrics = [{"metric": m, "filter": f, "value": v, "stderr": errors.get((m, f))}
                   for (m, f), v in sorted(values.items())]
        n = (n_samples.get(task) or {}).get("effective", entry.get("sample_len"))
        out[task] = {"metrics": metrics, "n": n}
    return out


def parse_samples(samples: dict) -> list[dict]:
    """One record per (task, doc_id, filter): the per-item value of each metric the task logs."""
    out = []
    for task, items in samples.items():
        for item in items:
            scores = {m: _number(item.get(m)) for m in item.get("metrics", [])}
            out.append({"task": task, "doc_id": int(item["doc_id"]), "filter": item.get("filter", "none"),
                        "scores": {m: v for m, v in scores.items() if v is not None}})
    return out


def run_lm_eval(
    model, tokenizer, tasks: list[str], *, include_path: str | Path | None, chat_template: bool, allow_code_execution: bool, batch_size: int | str, limit: int | None,
    wandb_init: dict | None = None,
) -> tuple[dict, list[dict], dict]:
    """(results per task, per-item samples, switches used) of the harness on the loaded model; with
    `wandb_init` (`wandb.init` arguments) the results also go to wandb through lm-eval's own logger."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(tasks, include_path)
    if chat_template and not getattr(tokenizer, "chat_template", None):
        raise UserError("tokenize.format is 'chat_template' but the tokenizer has no chat template for lm-eval")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    switches = {"apply_chat_template": chat_template, "confirm_run_unsafe_code": allow_code_execution,
                "HF_ALLOW_CODE_EVAL": allow_code_execution, "batch_size": str(batch_size), "limit": limit,
                "log_samples": True, "lm_eval_version": lm_eval.__version__}
    logger.info("lm-eval: %s on %s (chat template %s)", tasks, type(model).__name__, chat_template)
    with _code_eval_env(allow_code_execution), _printed_to_debug():
        try:
            out = lm_eval.simple_evaluate(
                model=lm, tasks=list(tasks), task_manager=manager, log_samples=True, limit=limit,
                apply_chat_template=chat_template, confirm_run_unsafe_code=allow_code_execution,
                bootstrap_iters=1000, verbosity="WARNING",
            )
        except ValueError as exc:
            if not allow_code_execution and "marked as unsafe" in str(exc):
                raise UserError(f"evaluate.benchmarks: {exc.args[0].split('. ')[0]}; it executes generated code, "
                                "set evaluate.allow_code_execution: true to run it") from None
            raise
    if out is None:
        raise RuntimeError("lm-eval returned no results (a non-zero rank of a distributed run?)")
    if wandb_init is not None:
        from lm_eval.loggers import WandbLogger

        tracked = WandbLogger(init_args=wandb_init)
        tracked.post_init(out)
        tracked.log_eval_result()
        tracked.run.finish()
    switches["batch_size_used"] = str(getattr(lm, "batch_size", batch_size))
    switches["max_length"] = out.get("max_length")
    return parse_results(out["results"], out.get("n-samples", {})), parse_samples(out.get("samples", {})), switches
