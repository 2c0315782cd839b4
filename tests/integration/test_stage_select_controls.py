"""The select stage's fair controls on SmolTalk-like rows: strata by category x token length, matched
random and label arms within 2% of their target's completion tokens, token budgets per arm."""

from __future__ import annotations

from collections import Counter

from helpers import small_demo_dict

from playpen_attribution.config import parse_config
from playpen_attribution.stages.select import build_selections


def _pool(tokenizer, n=240):
    words = ["apple", "dog", "sun", "snow", "tree", "red", "fruit", "cold"]
    rows = []
    for i in range(n):
        completion = "GUESS: " + " ".join(words[(i + j) % len(words)] for j in range(1 + (i * 7) % 23))
        rows.append({"example_id": f"r{i}", "prompt": "USER: CLUE: fruit red\nASSISTANT:", "completion": completion,
                     "outcome": "success", "category": ("coding", "math", "advice")[i % 3],
                     "quality": ("poor", "average", "good", "excellent")[i % 4], "reward_model_score": (i * 13) % 17})
    return rows


def test_matched_random_and_label_arms_match_category_strata_and_completion_tokens(tokenizer, tmp_path):
    arms = [{"name": "top_k", "kind": "top", "ranking": "metadata:reward_model_score"},
            {"name": "matched_random_k", "kind": "matched_random", "ranking": "metadata:reward_model_score"},
            {"name": "label_k", "kind": "label", "ranking": "metadata:reward_model_score"}, "random_k"]
    cfg = parse_config(small_demo_dict(select={"k": 40, "arms": arms, "match_column": "category", "match_tokens": True,
                                               "label_column": "quality", "length_bins": 3}))
    selections, _ = build_selections(cfg, _pool(tokenizer), 1, tmp_path, tokenizer)
    top = selections["top_k"]
    for name in ("matched_random_k", "label_k"):
        arm = selections[name]
        assert abs(arm.completion_tokens - top.completion_tokens) <= 0.02 * top.completion_tokens, name
        assert arm.matching["tokens_target"] == top.completion_tokens and arm.matching["within_tolerance"]
    assert selections["matched_random_k"].strata == top.strata  # category x length bin, unchanged by the swaps
    assert all(s.split("|")[0] in ("coding", "math", "advice") for s in top.strata)
    assert all(sel.completion_tokens > 0 and sel.tokens > sel.completion_tokens for sel in selections.values())


def test_a_category_stratified_top_n_its_control_and_the_length_arm(tokenizer, tmp_path):
    """select.stratify_by: category takes top_k per category in the pool's proportions (recorded), the control
    matches category (beside outcome x length) and the length arm takes label-passing rows up to top_k's tokens."""
    arms = [{"name": "top_k", "kind": "top", "ranking": "metadata:reward_model_score"},
            {"name": "matched_random_k", "kind": "matched_random", "ranking": "metadata:reward_model_score"},
            {"name": "longest_label_k", "kind": "longest_label", "ranking": "metadata:reward_model_score"}]
    pool = _pool(tokenizer)[:200]  # 67 coding, 67 math, 66 advice
    cfg = parse_config(small_demo_dict(select={"k": 30, "arms": arms, "stratify_by": "category", "match_tokens": True,
                                               "label_column": "quality", "length_bins": 3}))
    selections, extra = build_selections(cfg, pool, 1, tmp_path, tokenizer)
    category = {r["example_id"]: r["category"] for r in pool}
    top, control, longest = (selections[n] for n in ("top_k", "matched_random_k", "longest_label_k"))
    quotas = {"advice": 10, "coding": 10, "math": 10}
    assert top.matching == {"stratified_quotas": quotas}
    assert Counter(category[e] for e in top.example_ids) == Counter(category[e] for e in control.example_ids) == quotas
    assert extra["stratify_by"] == {"column": "category", "train_base": {"advice": 66, "coding": 67, "math": 67}}
    assert all(s.split("|")[0] in quotas for s in control.strata)  # category | outcome | length bin
    good = {r["example_id"] for r in pool if r["quality"] in ("good", "excellent")}
    assert set(longest.example_ids) <= good and len(good) == 100 and extra["label_filter_passed"] == {"train_base": 100}
    assert longest.matching["tokens_target"] == top.completion_tokens
    assert longest.matching["tokens"] == longest.completion_tokens and longest.matching["eligible"] == 100
    assert abs(longest.completion_tokens - top.completion_tokens) <= 0.02 * top.completion_tokens
    assert longest.rows < top.rows  # the same budget in fewer, longer rows
