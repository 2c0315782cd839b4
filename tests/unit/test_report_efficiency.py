"""The report's data-efficiency answer: how many random rows top_k's k rows are worth, from the random arms
at 1x, 2x and 4x k and their across-seeds tests against top_k (`report.results.data_efficiency`)."""

from playpen_attribution.report.markdown_tables import efficiency_lines
from playpen_attribution.report.records import Aggregate, ArmEntry, ArmSpec, Primary, to_json
from playpen_attribution.report.results import data_efficiency


def _arm(name, seed, accuracy, rows, loss=1.0, k=100):
    spec = ArmSpec(kind="top" if name == "top_k" else "random", ranking=None, n=rows, family=None, k=k, versus=[],
                   rows=rows, tokens=rows * 10)
    return ArmEntry(name=name, seed=seed, metric="correct", correct=None, total=None, accuracy=accuracy,
                    eval_loss=loss, spec=spec)


def _agg(arm, mean, low, high, verdict, key="accuracy"):
    """An across-seed comparison against top_k whose verdict `decide` already gave (arm = random better)."""
    return Aggregate(arm=arm, versus="top_k", seeds=[1, 2],
                     metrics={key: {"mean": mean, "ci_low": low, "ci_high": high, "p_holm": 0.01, "verdict": verdict}})


def _primary(accuracy=True):
    return Primary(arm="top_k", versus="matched_random_k", metric="accuracy" if accuracy else "eval_loss", declared=False)


def _arms(accuracy=True):
    arms = []
    for seed in (1, 2):
        arms += [_arm("top_k", seed, 0.6 if accuracy else None, 100, loss=2.0),
                 _arm("random_k", seed, 0.1 if accuracy else None, 100, loss=3.0),
                 _arm("random_2x_k", seed, 0.5 if accuracy else None, 200, loss=2.5),
                 _arm("random_4x_k", seed, 0.7 if accuracy else None, 400, loss=1.9)]
    return arms


def _efficiency(aggregates, accuracy=True, arms=None):
    """data_efficiency of the four arms in two seeds, as report.json holds it."""
    found = data_efficiency(arms if arms is not None else _arms(accuracy), aggregates, _primary(accuracy))
    return found, to_json(found)


def test_no_reliable_difference_up_to_4x_means_top_k_is_worth_4x():
    _, eff = _efficiency([_agg("random_2x_k", -0.1, -0.2, 0.01, "none"),
                             _agg("random_4x_k", 0.05, -0.01, 0.1, "none")])
    assert eff["metric"] == "accuracy" and eff["top_k"]["mean"] == 0.6
    assert [r["arm"] for r in eff["random"]] == ["random_k", "random_2x_k", "random_4x_k"]
    assert "verdict" not in eff["random"][0] and eff["random"][0]["mean"] == 0.1  # random_k: not tested vs top_k
    assert [r["verdict"] for r in eff["random"][1:]] == ["no reliable difference"] * 2
    assert eff["worth_at_least"] == 4 and eff["beats_up_to"] is None


def test_top_k_beats_2x_and_matches_4x():
    found, eff = _efficiency([_agg("random_2x_k", -0.1, -0.2, -0.05, "versus"),
                             _agg("random_4x_k", 0.05, -0.01, 0.1, "none")])
    assert eff["worth_at_least"] == 4 and eff["beats_up_to"] == 2
    text = "\n".join(efficiency_lines(found))
    assert "matches random rows at 4x k" in text and "reliably better than random at 2x k" in text


def test_random_better_at_4x_stops_the_worth_at_2x():
    _, eff = _efficiency([_agg("random_2x_k", 0.0, -0.1, 0.1, "none"),
                             _agg("random_4x_k", 0.2, 0.1, 0.3, "arm")])
    assert eff["random"][2]["verdict"] == "random better"
    assert eff["worth_at_least"] == 2


def test_random_better_at_2x_means_worth_less_than_2x():
    found, eff = _efficiency([_agg("random_2x_k", 0.2, 0.1, 0.3, "arm"),
                             _agg("random_4x_k", 0.0, -0.1, 0.1, "none")])
    assert eff["worth_at_least"] is None  # a later 'no difference' does not rescue it
    text = "\n".join(efficiency_lines(found))
    assert "worth less than 2x k random rows" in text


def test_one_seed_or_no_replication_gives_no_worth():
    found, eff = _efficiency([_agg("random_2x_k", 0.2, 0.1, 0.3, "one_seed")])
    assert eff["worth_at_least"] is None and eff["random"][1]["verdict"] == "one seed"
    assert "needs at least two" in "\n".join(efficiency_lines(found))


def test_loss_only_runs_judge_by_eval_loss():
    aggs = [_agg("random_2x_k", 0.3, 0.2, 0.4, "versus", key="eval_loss"),   # random's loss higher: top_k better
            _agg("random_4x_k", -0.3, -0.4, -0.2, "arm", key="eval_loss")]   # random's loss lower: random better
    _, eff = _efficiency(aggs, accuracy=False)
    assert eff["metric"] == "eval_loss" and eff["top_k"]["mean"] == 2.0
    assert [r["verdict"] for r in eff["random"][1:]] == ["top_k better", "random better"]
    assert eff["worth_at_least"] == 2 and eff["beats_up_to"] == 2


def test_random_arms_of_another_k_are_left_out():
    arms = _arms() + [_arm("random_k_k50", 1, 0.2, 50, k=50), _arm("random_k_k50", 2, 0.2, 50, k=50)]
    _, eff = _efficiency([_agg("random_2x_k", 0.0, -0.1, 0.1, "none")], arms=arms)
    assert [r["arm"] for r in eff["random"]] == ["random_k", "random_2x_k", "random_4x_k"]


def test_without_top_k_or_random_arms_there_is_no_answer():
    arms, primary = _arms(), _primary()
    assert data_efficiency([a for a in arms if a.name != "top_k"], [], primary) is None
    assert data_efficiency([a for a in arms if a.name == "top_k"], [], primary) is None
    only_1x = [a for a in arms if a.name in ("top_k", "random_k")]  # the demo's arms: nothing to answer
    assert data_efficiency(only_1x, [], primary) is None
    assert data_efficiency(arms, [_agg("random_2x_k", 0.0, -0.1, 0.1, "none")], None) is None
