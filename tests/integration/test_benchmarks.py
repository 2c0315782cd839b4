"""lm-eval benchmarks through the harness's real code path on a tiny model: the shipped local task
`lexicon_choice` (a YAML task over a JSON file built from the demo lexicon), the switches recorded,
per-item scores keyed by doc_id, unknown and code-execution tasks refused in one line, and the
report pairing arms with their controls on the same items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from playpen_attribution.core.benchmarks import run_lm_eval
from playpen_attribution.errors import UserError
from playpen_attribution.report.benchmarks import collect_benchmarks
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import run_stage

TASKS = Path(__file__).resolve().parents[2] / "configs" / "lm_eval_tasks"


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).eval()


def _run(model, tokenizer, tasks=("lexicon_choice",), include=TASKS, **kw):
    args = {"chat_template": False, "allow_code_execution": False, "batch_size": 4, "limit": 12} | kw
    return run_lm_eval(model, tokenizer, list(tasks), include_path=include, **args)


def test_local_task_runs_through_the_harness_with_stderr_and_per_item_scores(model, tokenizer):
    results, samples, switches = _run(model, tokenizer)
    (acc,) = [m for m in results["lexicon_choice"]["metrics"] if m["metric"] == "acc"]
    assert results["lexicon_choice"]["n"] == 12 and 0.0 <= acc["value"] <= 1.0 and acc["stderr"] > 0
    assert sorted(s["doc_id"] for s in samples) == list(range(12))
    assert {s["filter"] for s in samples} == {"none"} and all(s["scores"]["acc"] in (0.0, 1.0) for s in samples)
    assert sum(s["scores"]["acc"] for s in samples) / 12 == pytest.approx(acc["value"])
    assert switches["apply_chat_template"] is False and switches["confirm_run_unsafe_code"] is False
    chat, chat_samples, chat_switches = _run(model, tokenizer, chat_template=True)
    assert chat_switches["apply_chat_template"] is True and len(chat_samples) == 12 and chat["lexicon_choice"]["n"] == 12
    json.dumps([results, samples, switches])


def test_unknown_task_and_missing_folder_are_one_line_errors(model, tokenizer, tmp_path):
    with pytest.raises(UserError, match=r"evaluate.benchmarks: unknown lm-eval task\(s\) \['no_such_task_xyz'\]"):
        _run(model, tokenizer, tasks=["no_such_task_xyz"])
    with pytest.raises(UserError, match="benchmark_include_path"):
        _run(model, tokenizer, include=tmp_path / "missing")


def test_code_execution_task_needs_allow_code_execution(model, tokenizer, tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    text = (TASKS / "lexicon_choice" / "lexicon_choice.yaml").read_text()
    text = text.replace("task: lexicon_choice", "task: lexicon_unsafe\nunsafe_code: true")
    (folder / "lexicon_unsafe.yaml").write_text(text)
    (folder / "load.py").write_text((TASKS / "lexicon_choice" / "load.py").read_text().replace(
        'Path(__file__).with_name("lexicon_choice.jsonl")', f'Path({str(TASKS / "lexicon_choice" / "lexicon_choice.jsonl")!r})'))
    with pytest.raises(UserError, match="allow_code_execution"):
        _run(model, tokenizer, tasks=["lexicon_unsafe"], include=folder)
    _, samples, switches = _run(model, tokenizer, tasks=["lexicon_unsafe"], include=folder, allow_code_execution=True,
                                limit=2)
    assert switches["HF_ALLOW_CODE_EVAL"] is True and len(samples) == 2


def _eval_folder(where: Path, model: str, per_item: list[float]) -> None:
    def build(out: Path) -> dict:
        results = {"lexicon_choice": {"n": len(per_item), "metrics": [
            {"metric": "acc", "filter": "none", "value": sum(per_item) / len(per_item), "stderr": 0.1}]}}
        samples = [{"task": "lexicon_choice", "doc_id": i, "filter": "none", "scores": {"acc": v}}
                   for i, v in enumerate(per_item)]
        artifacts.write_benchmarks(out, results, samples, {"apply_chat_template": False})
        return {}
    run_stage(where, artifacts.eval_dir(model), {"name": model}, {}, build, command="test")


def test_report_pairs_arms_with_their_controls_on_the_same_items(tmp_path):
    run_dir = tmp_path / "run"
    _eval_folder(run_dir, "base", [0, 0, 1, 0])
    for seed, (top, ctrl) in {1: ([1, 1, 1, 0], [0, 1, 1, 0]), 2: ([1, 0, 1, 1], [1, 0, 0, 1])}.items():  # seed 2 differs on another item
        (run_dir / artifacts.seed_dir(seed)).mkdir(parents=True)
        _eval_folder(run_dir / artifacts.seed_dir(seed), "top_k", top)
        _eval_folder(run_dir / artifacts.seed_dir(seed), "matched_random_k", ctrl)
    section = collect_benchmarks(run_dir, {("top_k", s): ["matched_random_k"] for s in (1, 2)})
    assert {(r["name"], r["seed"]) for r in section["results"]} == {
        ("base", None), ("top_k", 1), ("matched_random_k", 1), ("top_k", 2), ("matched_random_k", 2)}
    assert [c["difference"]["mean"] for c in section["comparisons"]] == [0.25, 0.25]
    (agg,) = section["aggregate"]
    assert agg["items"] == 4 and agg["seeds"] == [1, 2] and agg["difference"]["mean"] == pytest.approx(0.25)
    assert agg["seeds_favouring_arm"] == 2 and 0 < agg["p_value"] <= 1


def test_with_wandb_tracking_lm_eval_logs_the_results_offline(model, tokenizer, tmp_path, monkeypatch):
    from playpen_attribution.run.tracking import TrackingConfig, benchmark_logging

    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.setenv(name, "")  # each restored after the test (benchmark_logging sets them)
    monkeypatch.delenv("WANDB_MODE")  # offline is then the default
    init = benchmark_logging(TrackingConfig(backend="wandb"), tmp_path / "tracking", "seed_1/eval_top_k", "demo")
    assert init == {"project": "demo", "name": "demo/seed_1/eval_top_k", "dir": str(tmp_path / "tracking"),
                    "job_type": "eval"}
    _run(model, tokenizer, limit=4, wandb_init=init)
    runs = list((tmp_path / "tracking" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
