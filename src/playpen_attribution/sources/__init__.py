"""Data sources for the `data` stage. Each module turns one kind of input into rows of the schema
in `playpen_attribution.core.rows`, split into `rows.SPLITS`, with every dropped row counted."""
