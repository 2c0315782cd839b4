"""The run folder: the stage-folder contract (`stage_folder`: `.part` then rename, `config.yaml`,
`manifest.json`, reuse or refuse), the name, typed record, loader and writer of every artifact a
stage writes (`artifacts`), the table of stages (`stage_table`: where each folder lives, what it reads,
its command line), the per-seed folders of a sweep (`seeds`) and where the base model and its stage
folder are found (`model_paths`). Stages reach each other's outputs only through here."""
