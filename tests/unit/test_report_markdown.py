"""report.md reads without Python reprs: counts, settings and lists in words; p-values in sentences."""

import re

from playpen_attribution.report import cells, markdown, markdown_tables
from playpen_attribution.report.records import Aggregate, ArmContents, DataSummary, Report, SelectedArm, Setup, to_json
from playpen_attribution.run.artifacts import ArmSelection

REPR = re.compile(r"[{}\[\]]'|'[{}\]]|\bNone\b|\bTrue\b|\bFalse\b")


def test_counts_settings_and_values_read_as_words():
    assert cells.counts({"success": 300}) == "300 success"
    assert cells.counts({"wrong_guess": 0, "mislabeled": 4}) == "0 wrong_guess, 4 mislabeled"
    assert cells.counts({}) == "none" and cells.counts(None) == "none"
    assert cells.settings({"apply_chat_template": True, "limit": None, "batch_size": "64"}) == (
        "apply_chat_template yes, limit n/a, batch_size 64")
    assert [cells.value(v) for v in (True, False, None, ["a", "b"], 0.5)] == ["yes", "no", "n/a", "a, b", "0.5"]
    assert cells.value({"projection_dim": 16, "unit_normalize": True}) == "(projection_dim 16, unit_normalize yes)"


def test_the_setup_line_shows_only_the_option_sections_of_methods_that_ran():
    from playpen_attribution.report.markdown_tables import attribution_settings

    attribute = {"mode": "mean", "cache_dir": "/c", "method": "trak", "methods": [],
                 "trackstar": {"projection_dim": 16}, "trak": {"projection_dim": 512}}
    assert attribution_settings(attribute) == {"mode": "mean", "method": "trak", "trak": {"projection_dim": 512}}
    several = {**attribute, "methods": ["gradient_cosine", "trackstar"]}
    assert list(attribution_settings(several)) == ["mode", "method", "methods", "trackstar"]


def test_p_in_a_sentence_reads_p_less_than():
    assert cells.p_is(0.0001) == "p < 0.001" and cells.p_is(0.0123) == "p = 0.012"
    assert cells.p_is(None) == "p n/a"


def test_selection_and_setup_lines_have_no_reprs():
    spec = ArmSelection(example_ids=["a"], rows=300, tokens=1200, completion_tokens=300, outcomes={"success": 300},
                        strata={}, kind="top", ranking="attribution", n=300, ranks=None, beyond=None,
                        versus=["matched_random_k"], family="top", k=300, seed=1)
    held = ArmContents(groups=9, target_words=9, eval_target_coverage=0.5, planted={"wrong_guess": 0, "mislabeled": 4},
                       clean_fraction=0.987)
    report = Report(
        selection={1: {"top_k": SelectedArm(spec, held)}}, untracked_modules=["embed_tokens"],
        setup=Setup(model="tiny", train={"lora": {"r": 8}, "learning_rate": 0.005, "epochs": 5},
                    arm_train={"init": "base", "lora": {"r": 8}, "learning_rate": 0.005, "epochs": 8},
                    select={"k": 300}, seeds=[1],
                    attribute={"mode": "mean", "unit_normalize": True, "allow_untracked_modules": False}),
        data=DataSummary(rows={"train_base": 10, "attr_query": 2, "eval": 3}, outcomes=None, source={},
                         dropped={"train_base:aborted": 41, "train_base:duplicate": 3}))
    text = "\n".join(markdown_tables.selection_lines(report.selection) + markdown_tables.setup_lines(report))
    assert not REPR.search(text), REPR.search(text)
    assert "| 300 success |" in text and "| 0 wrong_guess, 4 mislabeled |" in text
    assert "dropped: 41 train_base:aborted, 3 train_base:duplicate." in text
    assert "unit_normalize yes" in text and "allow_untracked_modules no" in text and "did not see embed_tokens" in text


def test_across_seed_table_rows_keep_their_cells():
    test = {"mean": 0.1, "ci_low": 0.0, "ci_high": 0.2, "arm_mean": 0.5, "versus_mean": 0.4, "seeds_favouring_arm": 2,
            "seeds_favouring_versus": 0, "seeds_tied": 0, "p_value": 0.2, "verdict": "none", "mde": 0.15}
    header, _, row = markdown._aggregate_table([Aggregate("a", "b", [1, 2], {"accuracy": test})])[2:5]
    unescaped_pipe = r"(?<!\\)\|"  # where a cell ends
    assert len(re.split(unescaped_pipe, row)) == len(re.split(unescaped_pipe, header)) and "\\|Δ\\| ≥ 0.150" in row


def test_report_json_keeps_its_keys_flat_and_leaves_out_what_is_absent():
    """report.json is the records' serialisation: an arm's selection beside its counts, an absent optional field
    not written, a field that is null on purpose written as null."""
    spec = ArmSelection(example_ids=["a"], rows=2, tokens=8, outcomes={"success": 2}, strata={}, kind="random",
                        ranking=None, n=2, ranks=None, beyond=None, versus=[], family=None, k=None, seed=1)
    data = to_json(Report(selection={1: {"random_k": SelectedArm(spec)}}))
    assert data["selection"][1]["random_k"] == {k: v for k, v in vars(spec).items() if k != "example_ids"
                                                and k not in ("matching", "completion_tokens", "split")}
    assert data["primary"] is None and "control" not in data and "data_efficiency" not in data
    assert list(data)[:5] == ["run_dir", "setup", "arms", "comparisons", "aggregate"]
