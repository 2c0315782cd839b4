"""The `launcher:` section and how it becomes submitit's SLURM parameters (no SLURM here: the sbatch text only)."""

import os

import pytest

from playpen_attribution.config import parse_config
from playpen_attribution.errors import UserError
from playpen_attribution.run.launcher import cpu_threads, slurm_executor, slurm_parameters

SLURM = {"kind": "slurm", "workers": 4, "slurm": {
    "partition": "gpu", "gpus_per_job": 2, "cpus_per_job": 8, "time_min": 90, "mem_gb": 64,
    "extra": {"account": "my_lab", "qos": "high"}, "setup": ["module load cuda/12.4"]}}


def test_default_launcher_is_inline_with_one_worker():
    cfg = parse_config({})
    assert cfg.launcher.kind == "inline" and cfg.launcher.workers == 1


@pytest.mark.parametrize("launcher, field", [({"kind": "ray"}, "launcher.kind"), ({"workers": 0}, "launcher.workers"),
                                             ({"slurm": {"gpus": 1}}, "launcher.slurm.gpus")])
def test_a_bad_launcher_field_is_named(launcher, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        parse_config({"launcher": launcher}, "exp.yaml")


def _fake_srun(tmp_path, monkeypatch):
    """An `srun` on PATH, so submitit believes it is on a cluster (nothing is submitted)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_slurm_settings_become_sbatch_options(tmp_path, monkeypatch):
    _fake_srun(tmp_path, monkeypatch)
    cfg = parse_config({"launcher": SLURM}).launcher
    assert slurm_parameters(cfg) == {
        "timeout_min": 90, "gpus_per_node": 2, "slurm_array_parallelism": 4, "name": "playpen-attribution",
        "slurm_partition": "gpu", "cpus_per_task": 8, "mem_gb": 64,
        "slurm_additional_parameters": {"account": "my_lab", "qos": "high"}, "slurm_setup": ["module load cuda/12.4"]}
    text = slurm_executor(cfg, tmp_path)._executor._make_submission_file_text("python -m job", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=90", "#SBATCH --mem=64GB", "#SBATCH --account=my_lab", "#SBATCH --qos=high",
                 "module load cuda/12.4"):
        assert line in text


def test_slurm_without_slurm_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="no SLURM"):
        slurm_executor(parse_config({"launcher": SLURM}).launcher, tmp_path)


def test_unset_slurm_options_are_left_to_the_cluster():
    params = slurm_parameters(parse_config({"launcher": {"kind": "slurm"}}).launcher)
    assert params == {"timeout_min": 120, "gpus_per_node": 1, "slurm_array_parallelism": 1, "name": "playpen-attribution"}


def test_each_local_job_gets_its_share_of_the_cores():
    assert cpu_threads(1) >= cpu_threads(2) >= 1
    assert cpu_threads(10_000) == 1


def test_cli_workers_means_local_processes():
    from playpen_attribution.cli import _with_workers

    cfg = _with_workers(parse_config({}), 3)
    assert cfg.launcher.kind == "local" and cfg.launcher.workers == 3
    with pytest.raises(UserError, match="--workers 0"):
        _with_workers(parse_config({}), 0)
