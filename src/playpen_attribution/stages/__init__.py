"""Pipeline stages, one module per stage folder. Each exposes `run(cfg, run_dir, *, overwrite=False, ...)
-> Path`: it works in the folder it is handed (the run directory, or a sweep seed's folder, as the stage
table `run.stage_table` says), derives the base model's path itself (`run.model_paths.base_model`),
reads upstream stage folders through `run.artifacts` and writes its own through
`run.stage_folder.run_stage`, passing the CLI command that rebuilds it (`stage_table.command_line`).
Stages never import each other (an import-linter contract in pyproject.toml)."""
