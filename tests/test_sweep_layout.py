"""Seed folders: which stages a seed shares (links) and which it owns, and the per-seed config (no model)."""

import pytest

from playpen_attribution import sweep
from playpen_attribution.config import parse_config
from playpen_attribution.errors import UserError


def _run_dir(tmp_path, *stages):
    run_dir = tmp_path / "run"
    for name in stages:
        (run_dir / name).mkdir(parents=True)
    return run_dir


def test_seeds_default_to_arm_train_seed_and_seed_config_replaces_it():
    assert sweep.seeds_of(parse_config({})) == [42]
    cfg = parse_config({"sweep": {"seeds": [3, 1]}, "train": {"seed": 5}})
    assert sweep.seeds_of(cfg) == [3, 1]
    one = sweep.seed_config(cfg, 1)
    assert one.arm_train.seed == 1 and one.train.seed == 5
    retrain = parse_config({"sweep": {"seeds": [3], "retrain_base": True}})
    assert sweep.seed_config(retrain, 3).train.seed == 3


def test_a_seed_folder_links_the_shared_stages(tmp_path):
    run_dir = _run_dir(tmp_path, "data", "base_model", "train_base", "attribute")
    folder = sweep.seed_run_dir(parse_config({"sweep": {"seeds": [7]}}), run_dir, 7)
    assert folder == run_dir / "seed_7"
    assert {p.name for p in folder.iterdir()} == {"data", "base_model", "train_base", "attribute"}
    assert all(p.is_symlink() and p.resolve() == (run_dir / p.name).resolve() for p in folder.iterdir())
    assert sweep.seed_run_dir(parse_config({"sweep": {"seeds": [7]}}), run_dir, 7) == folder  # idempotent
    assert sweep.seed_folders(run_dir) == {7: folder}


def test_with_retrain_base_a_seed_owns_its_base_adapter_stages(tmp_path):
    run_dir = _run_dir(tmp_path, "data", "base_model", "train_base", "attribute")
    shared = parse_config({"sweep": {"seeds": [1]}})
    sweep.seed_run_dir(shared, run_dir, 1)
    retrain = parse_config({"sweep": {"seeds": [1], "retrain_base": True}})
    folder = sweep.seed_run_dir(retrain, run_dir, 1)  # the old links to the shared base adapter go
    assert {p.name for p in folder.iterdir()} == {"data", "base_model"}
    (folder / "train_base").mkdir()
    with pytest.raises(UserError, match="is a stage folder of its own"):
        sweep.seed_run_dir(shared, run_dir, 1)
