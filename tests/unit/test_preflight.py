"""The preflight `run` makes before any stage: unknown SAE ids, benchmark tasks whose imports fail and dataset
config names the hub cache knows better are refused with one line, and nothing is built."""

from __future__ import annotations

import pytest
from helpers import REPO, small_demo_dict

from playpen_attribution.config import load_config, parse_config
from playpen_attribution.errors import UserError
from playpen_attribution.preflight import preflight

BROKEN_TASK = """task: needs_a_missing_module
custom_dataset: !function load.docs
test_split: test
output_type: multiple_choice
doc_to_text: "{{text}}"
doc_to_choice: "{{choices}}"
doc_to_target: label
"""


def _with(**sections) -> dict:
    data = small_demo_dict()
    for name, section in sections.items():
        data[name] = {**data.get(name, {}), **section}
    return data


@pytest.mark.integration  # loads the registry (SAELens, lm-eval): seconds
def test_an_sae_id_missing_from_saelens_registry_is_refused_before_any_stage(tmp_path):
    from playpen_attribution.pipeline import run_experiment

    cfg = parse_config(_with(sae={"release": "gemma-scope-2-1b-it-res", "sae_id": "layer_17_width_16k_l0_smal"}))
    with pytest.raises(UserError, match=r"sae_id 'layer_17_width_16k_l0_smal' is not in SAELens release "
                                        r"'gemma-scope-2-1b-it-res' \(that block has: .*layer_17_width_16k_l0_small"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder, let alone a stage


@pytest.mark.integration  # loads the registry (SAELens, lm-eval): seconds
def test_an_extra_sae_id_and_an_unknown_release_are_checked_too():
    good = {"release": "gemma-scope-2-1b-it-res", "sae_id": "layer_17_width_16k_l0_small"}
    preflight(parse_config(_with(sae=good)))
    with pytest.raises(UserError, match="layer_99_width_16k_l0_small"):
        preflight(parse_config(_with(sae=good | {"extra_sae_ids": ["layer_99_width_16k_l0_small"]})))
    with pytest.raises(UserError, match="not in SAELens' registry"):
        preflight(parse_config(_with(sae={"release": "gemma-scope-9-nonexistent", "sae_id": "layer_1"})))


@pytest.mark.integration  # loads lm-eval's task registry: seconds
def test_a_benchmark_task_whose_python_imports_fail_is_refused(tmp_path):
    task = tmp_path / "tasks" / "broken"
    task.mkdir(parents=True)
    (task / "needs_a_missing_module.yaml").write_text(BROKEN_TASK)
    (task / "load.py").write_text("import playpen_no_such_module_xyz\n\ndef docs(**kwargs):\n    return None\n")
    cfg = parse_config(_with(evaluate={"benchmarks": ["needs_a_missing_module"],
                                       "benchmark_include_path": str(tmp_path / "tasks")}))
    with pytest.raises(UserError, match=r"task 'needs_a_missing_module' cannot be loaded: ModuleNotFoundError: "
                                        r"No module named 'playpen_no_such_module_xyz'"):
        preflight(cfg)


@pytest.mark.integration  # loads the registry (SAELens, lm-eval): seconds
def test_an_unknown_benchmark_task_is_refused(tmp_path):
    cfg = parse_config(_with(evaluate={"benchmarks": ["no_such_task"],
                                       "benchmark_include_path": str(REPO / "configs" / "lm_eval_tasks")}))
    with pytest.raises(UserError, match="unknown lm-eval task"):
        preflight(cfg)


@pytest.mark.integration  # loads the registry (SAELens, lm-eval): seconds
def test_the_shipped_offline_configs_pass(tmp_path):
    for name in ("demo.yaml", "smoltalk_demo.yaml"):  # smoltalk_demo: a local lm-eval task with a Python loader
        preflight(load_config(REPO / "configs" / name))


def test_a_config_name_the_cached_dataset_card_does_not_list_is_refused(tmp_path, monkeypatch):
    import huggingface_hub

    card = tmp_path / "README.md"
    card.write_text("---\nconfigs:\n- config_name: all\n- config_name: smol-magpie-ultra\n---\n# SmolTalk\n")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name, repo_type=None: str(card) if repo == "HuggingFaceTB/smoltalk" else None)
    source = {"kind": "smoltalk", "dataset": "HuggingFaceTB/smoltalk", "pool_size": 10}
    preflight(parse_config(_with(data={"source": source | {"config_name": "smol-magpie-ultra"}})))
    with pytest.raises(UserError, match=r"data.source.config_name: config_name 'smol-magpie-ulta' is not a config of "
                                        r"HuggingFaceTB/smoltalk \(it has: all, smol-magpie-ultra\)"):
        preflight(parse_config(_with(data={"source": source | {"config_name": "smol-magpie-ulta"}})))
    other = source | {"dataset": "someone/never-fetched", "config_name": "anything"}
    preflight(parse_config(_with(data={"source": other})))  # not in the cache: not checkable offline
