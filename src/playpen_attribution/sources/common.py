"""What every source hands to the data stage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SourceRows:
    """Rows of one source, already split, plus the counts of rows its filters removed."""

    splits: dict[str, list[dict]]
    """Split name (one of rows.SPLITS) -> rows with at least rows.ROW_COLUMNS."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Filter reason -> number of rows removed for it (recorded in the manifest)."""
    info: dict = field(default_factory=dict)
    """Anything else worth recording in the manifest (paths read, hub ids, counts per outcome)."""
