"""The query builder: an attribution query set drawn by metadata filters from the pool's own stream.

`QueryBuilder` (a source's `query:` section) keeps rows whose metadata columns take one of the
allowed values (e.g. quality in {good, excellent}), draws up to `quota[category]` rows per category
(or `size` rows stratified over what passed), seeded, and returns them with the rows that are left:
the pool is then sampled from the rest only, so query and pool are disjoint by construction. What
was filtered and drawn is counted (`counts`) for the data manifest.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from pydantic import Field

from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.sources.splitting import sample_rows


class QueryBuilder(Section):
    """Draw attr_query from the pool split's stream by metadata filters and category quotas."""

    size: int = Field(500, gt=0, description="Rows in attr_query (a ceiling when quotas are given).")
    filters: dict[str, list[str]] = Field(
        default_factory=lambda: {"quality": ["good", "excellent"]},
        description="column -> allowed values; a row must pass every filter.",
    )
    quotas: dict[str, int] = Field(
        default_factory=dict, description="category -> rows drawn from it; empty = `size` rows stratified by category.",
    )
    category_column: str = Field("category", description="Column the quotas and the stratification read.")


def _passes(row: dict, filters: dict[str, list[str]]) -> bool:
    return all(str(row.get(col)) in set(allowed) for col, allowed in filters.items())


def build_query(rows: list[dict], cfg: QueryBuilder, seed: int) -> tuple[list[dict], list[dict], dict]:
    """(query rows, every other row in stream order, counts). Query rows are never among the others."""
    missing = sorted({col for col in cfg.filters if not any(col in r for r in rows)})
    if rows and missing:
        raise UserError(f"query.filters: no scanned row has column(s) {missing}")
    passed = [r for r in rows if _passes(r, cfg.filters)]
    by_category: dict[str, list[dict]] = defaultdict(list)
    for r in passed:
        by_category[str(r.get(cfg.category_column))].append(r)
    if cfg.quotas:
        wanted = dict(cfg.quotas)
    else:
        total = min(cfg.size, len(passed))
        exact = {c: total * len(v) / max(len(passed), 1) for c, v in sorted(by_category.items())}
        wanted = {c: int(x) for c, x in exact.items()}
        for c in sorted(exact, key=lambda c: (wanted[c] - exact[c], c))[: total - sum(wanted.values())]:
            wanted[c] += 1
    query: list[dict] = []
    short: dict[str, dict[str, int]] = {}
    for category, n in sorted(wanted.items()):
        taken = sample_rows(by_category.get(category, []), min(n, cfg.size - len(query)), seed)
        query += taken
        if len(taken) < n:
            short[category] = {"asked": n, "got": len(taken)}
    taken_ids = {r["example_id"] for r in query}
    rest = [r for r in rows if r["example_id"] not in taken_ids]
    counts = {
        "scanned": len(rows), "passed_filters": len(passed),
        "failed_filters": len(rows) - len(passed), "filters": cfg.filters,
        "quotas": wanted, "drawn_by_category": dict(Counter(str(r.get(cfg.category_column)) for r in query)),
        "short": short, "query_rows": len(query),
    }
    return query, rest, counts
