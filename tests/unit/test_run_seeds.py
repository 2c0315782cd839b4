"""Seed folders: which stages a seed shares (links) and which it owns, and the per-seed config (no model)."""

import pytest

from playpen_attribution.config import parse_config
from playpen_attribution.errors import UserError
from playpen_attribution.run.seeds import seed_folder, seed_folders


def _run_dir(tmp_path, *stages):
    run_dir = tmp_path / "run"
    for name in stages:
        (run_dir / name).mkdir(parents=True)
    return run_dir


def test_seeds_default_to_arm_train_seed_and_for_seed_replaces_it():
    assert parse_config({}).seeds == [42]
    cfg = parse_config({"sweep": {"seeds": [3, 1]}, "train": {"seed": 5}})
    assert cfg.seeds == [3, 1]
    with pytest.raises(ValueError, match="for_seed"):
        _ = cfg.run_seed
    one = cfg.for_seed(1)
    assert one.arm_train.seed == 1 and one.train.seed == 5 and one.seeds == [1] and one.run_seed == 1
    retrain = parse_config({"sweep": {"seeds": [3], "retrain_base": True}})
    assert retrain.for_seed(3).train.seed == 3


def test_a_seed_folder_links_the_shared_stages(tmp_path):
    run_dir = _run_dir(tmp_path, "data", "base_model", "train_base", "attribute")
    folder = seed_folder(run_dir, 7, retrain_base=False)
    assert folder == run_dir / "seed_7"
    assert {p.name for p in folder.iterdir()} == {"data", "base_model", "train_base", "attribute"}
    assert all(p.is_symlink() and p.resolve() == (run_dir / p.name).resolve() for p in folder.iterdir())
    assert seed_folder(run_dir, 7, retrain_base=False) == folder  # idempotent
    assert seed_folders(run_dir) == {7: folder}


def test_with_retrain_base_a_seed_owns_its_base_adapter_stages(tmp_path):
    run_dir = _run_dir(tmp_path, "data", "base_model", "train_base", "attribute")
    seed_folder(run_dir, 1, retrain_base=False)
    folder = seed_folder(run_dir, 1, retrain_base=True)  # the old links to the shared base adapter go
    assert {p.name for p in folder.iterdir()} == {"data", "base_model"}
    (folder / "train_base").mkdir()
    with pytest.raises(UserError, match="is a stage folder of its own"):
        seed_folder(run_dir, 1, retrain_base=False)
