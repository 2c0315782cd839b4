"""`run.tracking`: what the trainer is handed for each backend."""

import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.run import tracking
from playpen_attribution.run.tracking import TrackingConfig, trainer_reporting


def test_no_backend_reports_nowhere(tmp_path):
    assert trainer_reporting(TrackingConfig(), tmp_path, "train_base", "demo") == {"report_to": "none"}


def test_tensorboard_writes_each_training_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "")
    args = trainer_reporting(TrackingConfig(backend="tensorboard", run_name="r"), tmp_path, "seed_2/train_top_k", "d")
    assert args == {"report_to": "tensorboard", "run_name": "r/seed_2/train_top_k"}
    assert tracking.os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "seed_2" / "train_top_k")


def test_trackio_names_its_project_and_a_missing_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: object())
    assert trainer_reporting(TrackingConfig(backend="trackio", project="p"), tmp_path, "train_base", "demo") == {
        "report_to": "trackio", "run_name": "demo/train_base", "project": "p"}
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"tracking.backend = 'trackio' needs the trackio package"):
        trainer_reporting(TrackingConfig(backend="trackio"), tmp_path, "train_base", "demo")


def test_tracking_is_in_no_training_fingerprint():
    from playpen_attribution.config import parse_config

    plain, tracked = parse_config({}), parse_config({"tracking": {"backend": "tensorboard"}})
    assert plain.model_dump(mode="json")["tracking"]["backend"] == "none"  # in experiment.yaml, at its default
    assert tracked.model_dump(mode="json")["tracking"]["backend"] == "tensorboard"
    assert plain.train == tracked.train and plain.arm_train == tracked.arm_train
