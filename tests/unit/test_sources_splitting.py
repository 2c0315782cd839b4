import pytest

from playpen_attribution.sources.splitting import (
    assign_groups,
    group_counts,
    sample_rows,
    split_by_group,
)

FRACTIONS = {"train_base": 0.6, "attr_query": 0.2, "eval": 0.2}


def _rows(n_groups=30, per_group=3):
    return [{"group_id": f"g{g}", "i": i} for g in range(n_groups) for i in range(per_group)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 10, 101])
def test_group_counts_sum_and_minimum(n):
    counts = group_counts(n, FRACTIONS)
    assert sum(counts.values()) == n
    if n >= 3:
        assert all(c >= 1 for c in counts.values())


def test_group_counts_rejects_fractions_not_summing_to_one():
    with pytest.raises(ValueError):
        group_counts(10, {"a": 0.5, "b": 0.2})


def test_groups_never_cross_splits_and_no_row_is_lost():
    rows = _rows()
    splits = split_by_group(rows, FRACTIONS, seed=3)
    assert sum(len(v) for v in splits.values()) == len(rows)
    groups = {name: {r["group_id"] for r in part} for name, part in splits.items()}
    assert not groups["attr_query"] & groups["eval"]
    assert not groups["train_base"] & (groups["attr_query"] | groups["eval"])
    assert len(groups["attr_query"]) == 6 and len(groups["eval"]) == 6


def test_same_seed_same_split_regardless_of_row_order():
    rows = _rows()
    a = split_by_group(rows, FRACTIONS, seed=7)
    b = split_by_group(list(reversed(rows)), FRACTIONS, seed=7)
    assert {k: sorted(r["group_id"] for r in v) for k, v in a.items()} == {
        k: sorted(r["group_id"] for r in v) for k, v in b.items()
    }
    c = split_by_group(rows, FRACTIONS, seed=8)
    assert a != c


def test_assign_groups_is_deterministic():
    groups = [f"g{i}" for i in range(50)]
    assert assign_groups(groups, FRACTIONS, 1) == assign_groups(set(groups), FRACTIONS, 1)


def test_sample_rows_keeps_order_and_is_seeded():
    items = list(range(100))
    a = sample_rows(items, 10, seed=1)
    assert a == sorted(a) and len(set(a)) == 10
    assert a == sample_rows(items, 10, seed=1)
    assert sample_rows(items, 1000, seed=1) == items
