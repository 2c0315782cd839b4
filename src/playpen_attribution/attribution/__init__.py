"""Gradient attribution and what is built from it: the scoring procedure and its query-index cache
(`scoring`), Bergson's commands run in this process and their outputs read back (`bergson_runs`),
diagnostics of a ranking where the truth is known (`diagnostics`), the arm plan of a run (`arms`:
standard arms, custom arms, sizes and comparisons) and the pure selection logic that turns rankings
into arms (`selection`)."""
