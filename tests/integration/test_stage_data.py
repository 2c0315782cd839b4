"""The data stage on every source kind: splits written, drops counted in the manifest."""

import json

import pytest
from fake_openai_server import FakeOpenAIServer, deterministic_responder
from helpers import (
    CLEMBENCH_RECORDS,
    api_env,
    clembench_readme_counts,
    synth,
    synth_flags,
)

from playpen_attribution.config import parse_config
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.stages import data

CLEMBENCH = CLEMBENCH_RECORDS


def _splits(run_dir):
    return {s: artifacts.load_split(run_dir / "data", s) for s in ("train_base", "attr_query", "eval")}


@pytest.mark.skipif(not CLEMBENCH.is_dir(), reason=f"shared clembench records absent ({CLEMBENCH})")
def test_clembench_records_through_the_data_stage(tmp_path):
    cfg = parse_config({"data": {"source": {"kind": "clembench", "path": str(CLEMBENCH)}}, "select": {"k": 10}})
    data.run(cfg, tmp_path)
    splits = _splits(tmp_path)
    manifest = artifacts.load_manifest(tmp_path / "data")
    dropped_aborted = manifest.fields["dropped"]["aborted"]  # aborted games that reached a guesser turn
    assert dropped_aborted == manifest.fields["source"]["rows_per_outcome"]["aborted"]
    assert 0 < dropped_aborted <= clembench_readme_counts()["aborted"] and manifest.fields["source"]["kind"] == "clembench"
    assert sum(manifest.fields["rows"].values()) == sum(len(s) for s in splits.values())
    query_groups = {r["group_id"] for r in splits["attr_query"]}
    assert not query_groups & {r["group_id"] for r in splits["eval"]}
    # failed games stay in the eval set by default, as in the published eval; the query set keeps only won games
    assert {r["outcome"] for r in splits["eval"]} == {"success", "failure"}
    assert {r["outcome"] for r in splits["attr_query"]} == {"success"}
    assert manifest.fields["dropped"]["attr_query:failure"] > 0


def test_generic_jsonl_through_the_data_stage(tmp_path):
    rows = [{"prompt": f"CLUE: thing {i}", "completion": f"GUESS: w{i}", "group": f"g{i % 10}"} for i in range(60)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({"data": {"source": {"kind": "generic", "path": str(path), "group_column": "group"}},
                        "select": {"k": 10}})
    data.run(cfg, tmp_path / "run")
    splits = _splits(tmp_path / "run")
    assert sum(len(s) for s in splits.values()) == 60
    assert len({r["example_id"] for s in splits.values() for r in s}) == 60


def test_empty_completion_in_a_generic_file_names_file_and_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "GUESS: a"}) + "\n" + json.dumps({"prompt": "p", "completion": ""}) + "\n")
    cfg = parse_config({"data": {"source": {"kind": "generic", "path": str(path)}}})
    with pytest.raises(UserError, match=r"rows.jsonl line 2: empty completion"):
        data.run(cfg, tmp_path / "run")


def test_synth_rows_append_to_the_demo_pool_with_drops_counted(tmp_path, monkeypatch):
    """The synth command's output loads through the data stage's synthetic-append path."""
    targets = tmp_path / "targets.json"
    # 'apple' and 'dog' are demo eval targets: their games must be dropped as eval-word overlap
    targets.write_text(json.dumps([{"target_word": w, "related_words": ["x", "y", "z"]}
                                   for w in ("apple", "dog", "zebra", "violin", "anchor", "lantern")]))
    out = tmp_path / "synth"
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, server.base_url)
        assert synth(synth_flags(out, targets, 3)) == 0
    cfg = parse_config({"data": {
        "source": {"kind": "demo", "n_train": 200, "n_query": 20, "n_eval": 200, "n_targets": 30},
        "synthetic": {"path": str(out / "rows_wordguesser.jsonl")},
    }, "select": {"k": 10}})
    data.run(cfg, tmp_path / "run")
    manifest = artifacts.load_manifest(tmp_path / "run" / "data")
    pool = artifacts.load_split(tmp_path / "run" / "data", "train_base")
    synthetic = [r for r in pool if r["experiment"].startswith("synth")]
    eval_words = {r["target_word"] for r in artifacts.load_split(tmp_path / "run" / "data", "eval")}
    assert synthetic and not {r["target_word"] for r in synthetic} & eval_words
    assert manifest.fields["source"]["synthetic_rows_added"] == len(synthetic)
    dropped = {k: v for k, v in manifest.fields["dropped"].items() if k.startswith("synthetic:")}
    assert sum(dropped.values()) + len(synthetic) == 6  # six games, each kept or counted


def test_exact_duplicates_are_removed_within_and_across_splits_and_counted(tmp_path):
    def rows(prefix, n):
        return [{"prompt": f"CLUE: {prefix} {i}", "completion": f"GUESS: {prefix}{i}"} for i in range(n)]

    pool, query, evals = rows("pool", 20), rows("query", 5), rows("eval", 6)
    pool += [dict(pool[0]), dict(pool[1]), dict(evals[0]), dict(evals[1]), dict(query[0])]  # 2 repeats, 3 leaks
    query += [dict(evals[2])]                                                              # a query row from eval
    evals += [dict(evals[3])]                                                              # a repeat in eval
    paths = {}
    for split, split_rows in {"train_base": pool, "attr_query": query, "eval": evals}.items():
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in split_rows))
    cfg = parse_config({"data": {"source": {"kind": "generic", "splits": {k: str(v) for k, v in paths.items()}}},
                        "select": {"k": 10}})
    data.run(cfg, tmp_path / "run")
    splits = _splits(tmp_path / "run")
    manifest = artifacts.load_manifest(tmp_path / "run" / "data")
    assert manifest.fields["dropped"] == {"train_base:duplicate": 2, "train_base:duplicate_of_eval": 2,
                                          "train_base:duplicate_of_attr_query": 1, "attr_query:duplicate_of_eval": 1,
                                          "eval:duplicate": 1}
    assert manifest.fields["rows"] == {"train_base": 20, "attr_query": 5, "eval": 6}
    keys = [(r["prompt"], r["completion"]) for s in splits.values() for r in s]
    assert len(keys) == len(set(keys))  # no row twice, none shared by two splits
    assert [r["prompt"] for r in splits["eval"]] == [f"CLUE: eval {i}" for i in range(6)]  # every eval row kept


def test_the_demo_source_goes_through_the_same_duplicate_rule(tmp_path, small_cfg):
    source = data.load_source(small_cfg)
    splits, dropped = data.clean_splits(small_cfg, source)
    pool = [r for r in source.splits["train_base"] if r["outcome"] in small_cfg.data.pool_outcomes]
    repeats = len(pool) - len({(r["prompt"], r["completion"]) for r in pool})
    assert repeats > 0 and dropped["train_base:duplicate"] == repeats  # the demo draws a few games twice
    assert len(splits["train_base"]) == len(pool) - repeats
