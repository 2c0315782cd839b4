"""Pipeline stages. Each module exposes `run(cfg, run_dir, ...) -> Path`, reads upstream stage
folders through `playpen_attribution.artifacts` and writes its own folder through
`playpen_attribution.stage_folder.run_stage`. Stages never import each other."""
