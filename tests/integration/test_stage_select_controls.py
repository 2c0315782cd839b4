"""The select stage's fair controls on SmolTalk-like rows: strata by category x token length, matched
random and label arms within 2% of their target's completion tokens, token budgets per arm."""

from __future__ import annotations

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
