"""Integration: every stage on a tiny model (one small demo sweep per session) and its exact files."""

import json
import math

import pytest
from helpers import SWEEP_PLAN, SWEEP_SEEDS, stage_row

from playpen_attribution.core.modeling import load_model
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts

COMMON = {"config.yaml", "manifest.json"}
EXPECTED = {
    "data": COMMON | {"splits/train_base.jsonl", "splits/attr_query.jsonl", "splits/eval.jsonl"},
    "base_model": COMMON | {"model/config.json", "model/generation_config.json", "model/model.safetensors",
                            "model/tokenizer.json", "model/tokenizer_config.json", "model/chat_template.jinja"},
    "train_base": COMMON | {"adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                            "train_log.json"},
    "attribute": COMMON | {"scores.jsonl", "summary.json", "row_diagnostics.jsonl", "score_histogram.png",
                           "score_vs_length.png"},
    "select": COMMON | {"selections.json"},
    "eval_base": COMMON | {"predictions.jsonl", "metrics.json"},
    "report": COMMON | {"report.md", "report.json", "differences.png", "accuracy.png", "eval_loss.png",
                        "training_loss.png"},
}
EXPECTED["report"] |= {f for f in EXPECTED["attribute"] if f.endswith(".png")}  # the attribute plots, copied
EXPECTED["baselines"] = COMMON | {"row_baselines.jsonl"}
EXPECTED["eval_base_adapter"] = EXPECTED["eval_base"]
for _seed in SWEEP_SEEDS:                      # per seed: its selection, and a training + evaluation per arm
    EXPECTED[f"seed_{_seed}/select"] = EXPECTED["select"]
    for _arm in SWEEP_PLAN:
        EXPECTED[f"seed_{_seed}/train_{_arm}"] = EXPECTED["train_base"]
        EXPECTED[f"seed_{_seed}/eval_{_arm}"] = EXPECTED["eval_base"]
del EXPECTED["select"]
SHARED_LINKS = {"data", "base_model", "train_base", "attribute", "baselines"}


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
            and not p.relative_to(folder).as_posix().startswith(artifacts.BERGSON_DIR + "/")}


def test_run_dir_holds_exactly_the_stage_folders(demo_run):
    _, run_dir = demo_run
    folders = {p.name for p in run_dir.iterdir() if p.is_dir() and p.name != ".locks"}  # .locks: the stage locks
    assert folders == {name.split("/")[0] for name in EXPECTED}
    assert {"report.md", "report.json", "accuracy.png", "experiment.yaml"} <= {p.name for p in run_dir.iterdir()}
    for seed in SWEEP_SEEDS:  # a seed folder: its own stages, and links to the shared ones
        seed_dir = run_dir / f"seed_{seed}"
        own = {name.split("/")[1] for name in EXPECTED if name.startswith(f"seed_{seed}/")}
        assert {p.name for p in seed_dir.iterdir()} - {".locks"} == own | SHARED_LINKS
        assert all((seed_dir / name).is_symlink() and (seed_dir / name).resolve() == (run_dir / name).resolve()
                   for name in SHARED_LINKS)


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_each_stage_writes_exactly_its_files(demo_run, stage):
    _, run_dir = demo_run
    assert _files(run_dir / stage) == EXPECTED[stage]
    manifest = artifacts.load_manifest(run_dir / stage)
    assert set(manifest.fields["produced"]) == EXPECTED[stage] - {"manifest.json"} | (
        {k for k in manifest.fields["produced"] if k.startswith("bergson/")})


def test_each_stage_reads_only_what_the_stage_table_says(demo_run):
    _, run_dir = demo_run
    for name in sorted(EXPECTED):
        consumed = artifacts.load_manifest(run_dir / name).fields["consumed"]
        read = {stage_row((run_dir / name / c["path"]).resolve().relative_to(run_dir.resolve()).as_posix()).name
                for c in consumed.values()}
        assert read <= set(stage_row(name).reads) and bool(read) == bool(stage_row(name).reads), (name, read)


def test_attribute_keeps_bergsons_replayable_folders(demo_run):
    _, run_dir = demo_run
    bergson = run_dir / "attribute" / artifacts.BERGSON_DIR
    assert (bergson / "query_index" / "config.yaml").is_file() and (bergson / "scores" / "config.yaml").is_file()


def test_data_stage_drops_and_counts_aborted_rows(demo_run):
    cfg, run_dir = demo_run
    manifest = artifacts.load_manifest(run_dir / "data")
    pool = artifacts.load_split(run_dir / "data", "train_base")
    assert manifest.fields["dropped"]["train_base:aborted"] > 0
    removed = sum(n for reason, n in manifest.fields["dropped"].items() if reason.startswith("train_base:"))
    assert len(pool) + removed == cfg.data.source.n_train  # aborted games and exact repeats, each counted
    assert {r["outcome"] for r in pool} == {"success", "failure"}
    for split in ("attr_query", "eval"):
        assert {r["outcome"] for r in artifacts.load_split(run_dir / "data", split)} == {"success"}


def test_stages_count_the_rows_the_token_limit_cuts(demo_run):
    _, run_dir = demo_run
    attribute = artifacts.load_manifest(run_dir / "attribute").fields["truncated"]
    evaluate = artifacts.load_manifest(run_dir / "eval_base").fields["truncated"]
    assert set(attribute) == {"train_base", "attr_query"} and set(evaluate) == {"eval"}
    for counts in (*attribute.values(), *evaluate.values()):
        assert set(counts) == {"completion", "prompt"} and all(isinstance(n, int) for n in counts.values())


def test_eval_reuses_training_targets_with_new_clues(demo_run):
    _, run_dir = demo_run
    pool = artifacts.load_split(run_dir / "data", "train_base")
    evals = artifacts.load_split(run_dir / "data", "eval")
    assert {r["target_word"] for r in evals} <= {r["target_word"] for r in pool}
    assert not {(r["target_word"], r["prompt"]) for r in evals} & {(r["target_word"], r["prompt"]) for r in pool}


def test_scores_join_every_pool_row_by_id(demo_run):
    _, run_dir = demo_run
    scores = artifacts.load_scores(run_dir / "attribute")
    pool = artifacts.load_split(run_dir / "data", "train_base")
    assert set(scores) == {r["example_id"] for r in pool}
    assert all(math.isfinite(s) for s in scores.values())


def test_attribution_finds_the_planted_signal(demo_run):
    _, run_dir = demo_run
    summary = json.loads((run_dir / "attribute" / "summary.json").read_text())
    # lost games are at most half as common in the top-k as in the pool (the pool is 82% won here)
    assert 1 - summary["precision_success_at_k"] <= 0.5 * (1 - summary["pool_success_fraction"])
    planted = summary["planted"]  # both kinds of planted rows, the kind outcome matching cannot see included
    assert planted["clean_fraction_at_k"] >= planted["pool_clean_fraction"] + 0.2
    top_share = planted["planted_at_k"]["mislabeled"] / planted["k"]
    assert top_share < 0.5 * planted["planted_in_pool"]["mislabeled"] / summary["rows"]


@pytest.mark.parametrize("seed", SWEEP_SEEDS)
def test_arms_have_equal_size_and_matched_strata(demo_run, seed):
    cfg, run_dir = demo_run
    sel = artifacts.load_selections(run_dir / f"seed_{seed}" / "select")
    assert list(sel) == SWEEP_PLAN and {len(sel[arm].example_ids) for arm in SWEEP_PLAN} == {cfg.select.k}
    top, rnd = sel["top_k"], sel["matched_random_k"]
    assert top.rows == rnd.rows == cfg.select.k
    # matched_random_k is drawn from the whole pool (the counterfactual), so it may share rows with top_k;
    # the seed's disjoint control, matched_random_rest_k, is held to no overlap in tests/unit/test_attribution_selection.py
    assert top.tokens > 0 and rnd.tokens > 0
    assert rnd.matching["matched"] + rnd.matching["unmatched_filled"] == cfg.select.k
    scores = artifacts.load_scores(run_dir / "attribute")
    assert min(scores[e] for e in top.example_ids) >= max(
        s for e, s in scores.items() if e not in set(top.example_ids))


def test_each_arm_trains_a_fresh_lora_on_the_base_model_with_the_sweep_seed(demo_run):
    _, run_dir = demo_run
    for seed in SWEEP_SEEDS:
        for arm in SWEEP_PLAN:
            folder = run_dir / f"seed_{seed}" / f"train_{arm}"
            manifest = artifacts.load_manifest(folder)
            assert manifest.fields["rows"] == 100 and manifest.fields["init_adapter"] is None
            assert "select" in manifest.fields["consumed"] and "train_base" not in manifest.fields["consumed"]
            config = artifacts.load_stage_config(folder)["train"]
            assert config["seed"] == seed and config["init"] == "base"


def test_report_json_holds_the_promised_fields(demo_run):
    _, run_dir = demo_run
    report = json.loads((run_dir / "report.json").read_text())
    names = [(a["name"], a["seed"]) for a in report["arms"]]
    assert names == [("base", None), ("base_adapter", None)] + [(arm, s) for s in SWEEP_SEEDS for arm in SWEEP_PLAN]
    for arm in report["arms"]:
        assert {"name", "seed", "correct", "total", "accuracy"} <= set(arm)
        assert arm["accuracy"] == pytest.approx(arm["correct"] / arm["total"])
    assert report["wall_seconds"] > 0
    speed = report["real_model"]  # what each stage recorded of its own throughput
    assert "tokens/s in training" in speed["train_base"] and "Bergson token batch" in speed["attribute"]
    assert "generation" in speed["eval_base_adapter"] and "rows/s" in speed["eval_base_adapter"]
    assert {"precision_success_at_k", "pool_success_fraction"} <= set(report["attribution"])
    by_name = {(a["name"], a["seed"]): a for a in report["arms"]}
    assert by_name[("base_adapter", None)]["accuracy"] > by_name[("base", None)]["accuracy"]  # training taught the task
    md = (run_dir / "report.md").read_text()
    for seed in SWEEP_SEEDS:
        top = by_name[("top_k", seed)]
        assert f"{top['correct']}/{top['total']} = {top['accuracy']:.4f}" in md


def test_every_stage_records_its_peak_memory_and_the_cost_table_shows_it(demo_run):
    _, run_dir = demo_run
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["stage_peak_rss_mb"]) == set(report["stage_seconds"])
    assert all(mb > 0 for mb in report["stage_peak_rss_mb"].values())
    for name in ("train_base", "attribute", "seed_1/train_top_k"):
        fields = artifacts.load_manifest(run_dir / name).fields
        assert fields["tokens_per_s"] == pytest.approx(fields["tokens_processed"] / fields["wall_seconds"], rel=0.05)
    assert "tokens/s, Bergson token batch" in report["real_model"]["attribute"]
    md = (run_dir / "report.md").read_text()
    assert "| stage | seconds | throughput | peak memory |" in md
    assert f"| {report['stage_peak_rss_mb']['attribute'] / 1024:.1f} GB |" in md


def test_rerun_reuses_every_stage(demo_run, caplog):
    from playpen_attribution.pipeline import run_experiment

    cfg, run_dir = demo_run
    before = {p.name: artifacts.load_manifest(p).fields["finished"] for p in run_dir.iterdir() if (p / "manifest.json").exists()}
    with caplog.at_level("INFO", logger="playpen_attribution"):
        run_experiment(cfg, run_dir)
    after = {p.name: artifacts.load_manifest(p).fields["finished"] for p in run_dir.iterdir() if (p / "manifest.json").exists()}
    assert {k: v for k, v in after.items() if k != "report"} == {k: v for k, v in before.items() if k != "report"}


def test_changed_config_refuses_without_overwrite(demo_run):
    from playpen_attribution.stages import select

    cfg, run_dir = demo_run
    changed = cfg.model_copy(update={"select": cfg.select.model_copy(update={"k": 50})})
    with pytest.raises(UserError, match="--overwrite"):
        select.run(changed.for_seed(SWEEP_SEEDS[0]), run_dir / f"seed_{SWEEP_SEEDS[0]}")


def test_adapter_with_another_base_is_refused(demo_run, tmp_path):
    import shutil

    _, run_dir = demo_run
    adapter = tmp_path / "adapter"
    shutil.copytree(run_dir / "train_base" / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "google/gemma-3-1b-it"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="trained on base model 'google/gemma-3-1b-it'"):
        load_model(run_dir / "base_model" / "model", adapter)


def test_unknown_split_is_named(demo_run):
    _, run_dir = demo_run
    with pytest.raises(UserError, match="unknown split 'validation'.*have: attr_query, eval, train_base"):
        artifacts.load_split(run_dir / "data", "validation")


def test_trainer_sees_exactly_the_ids_bergson_scored(demo_run, tmp_path):
    """The one-tokenization rule: the rows the SFTTrainer trains on are the rows Bergson scored."""
    import datasets
    import torch

    from playpen_attribution.stages.train import build_trainer

    cfg, run_dir = demo_run
    pool = artifacts.load_split(run_dir / "data", "train_base")
    trainer = build_trainer(pool, str(run_dir / "base_model" / "model"), cfg.train, cfg, tmp_path / "t")
    bergson = datasets.load_from_disk(str(run_dir / "attribute" / artifacts.BERGSON_DIR / "scores" / "data.hf"))
    by_id = {eid: (ids, labels)
             for eid, ids, labels in zip(bergson["example_id"], bergson["input_ids"], bergson["labels"], strict=True)}
    assert len(by_id) == len(pool) == len(trainer.train_dataset)
    for row, ids, labels in zip(pool, trainer.train_dataset["input_ids"], trainer.train_dataset["labels"], strict=True):
        assert by_id[row["example_id"]] == (list(ids), list(labels))
    # and the collated batches the model is fed keep those ids and labels (padding aside)
    batch = next(iter(trainer.get_train_dataloader()))
    bergson_rows = {tuple(ids): labels for ids, labels in by_id.values()}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        kept = mask.bool()
        assert bergson_rows[tuple(ids[kept].tolist())] == labels[kept].tolist()
    assert torch.equal(batch["labels"][batch["attention_mask"] == 0], torch.full_like(batch["labels"][batch["attention_mask"] == 0], -100))
