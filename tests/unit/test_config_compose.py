"""Config composition: `extends:`, arm_train inheriting train, `--set` overrides, every mistake at once.

`tests/fixtures/resolved_configs.json` holds every shipped config's resolved dict as it was before the
configs were shrunk to what differs (captured at 49d271f): composition must resolve them exactly as
before, so no stage fingerprint changes. After a deliberate change to a shipped config, regenerate it
with `uv run python tests/unit/test_config_compose.py`.
"""

import json
import sys

import pytest
import yaml
from helpers import REPO

from playpen_attribution.config import load_config, parse_config
from playpen_attribution.core.yaml_config import apply_overrides, read_composed
from playpen_attribution.errors import UserError

FIXTURE = REPO / "tests" / "fixtures" / "resolved_configs.json"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def resolved_configs() -> dict:
    return {p.name: load_config(p).model_dump(mode="json") for p in CONFIGS}


def test_every_shipped_config_resolves_exactly_as_before_composition():
    before = json.loads(FIXTURE.read_text())
    now = resolved_configs()
    assert sorted(now) == sorted(before)
    for name in now:
        assert now[name] == before[name], name


@pytest.mark.parametrize("name", ["demo_aa.yaml", "taboo_nearest.yaml", "taboo_clembench_gemma3_chat.yaml"])
def test_variants_extend_and_hold_only_what_differs(name):
    text = (REPO / "configs" / name).read_text()
    assert len(text.splitlines()) <= 15
    assert "extends" in yaml.safe_load(text)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_arm_train_section_repeats_a_value_of_train(path):
    data = read_composed(path)
    train, arm = data.get("train", {}), data.get("arm_train", {})
    assert not [key for key in arm if key in train and arm[key] == train[key]]


def _write(folder, name, data):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_extends_chains_relative_to_each_file(tmp_path):
    _write(tmp_path, "base/root.yaml", {"name": "root", "select": {"k": 50, "length_bins": 3}, "train": {"epochs": 2}})
    _write(tmp_path, "base/mid.yaml", {"extends": "root.yaml", "select": {"k": 60}})
    leaf = _write(tmp_path, "leaf.yaml", {"extends": "base/mid.yaml", "name": "leaf"})
    cfg = load_config(leaf)
    assert (cfg.name, cfg.select.k, cfg.select.length_bins, cfg.train.epochs) == ("leaf", 60, 3, 2)


def test_extends_cycle_is_refused_in_one_line(tmp_path):
    _write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(UserError, match=r"a.yaml: `extends` makes a cycle: a.yaml -> b.yaml -> a.yaml$"):
        load_config(tmp_path / "a.yaml")


def test_extends_of_a_missing_file_names_it(tmp_path):
    path = _write(tmp_path, "c.yaml", {"extends": "nope.yaml"})
    with pytest.raises(UserError, match=r"c.yaml: extends = 'nope.yaml': no such file"):
        load_config(path)


def test_a_source_of_another_kind_replaces_the_parent_source(tmp_path):
    _write(tmp_path, "p.yaml", {"data": {"source": {"kind": "demo", "n_train": 100}}})
    child = _write(tmp_path, "c.yaml", {"extends": "p.yaml", "data": {"source": {"kind": "instruct_demo"}}})
    assert load_config(child).data.source.kind == "instruct_demo"
    patch = _write(tmp_path, "d.yaml", {"extends": "p.yaml", "data": {"source": {"n_query": 7}}})
    assert (load_config(patch).data.source.n_train, load_config(patch).data.source.n_query) == (100, 7)


def test_arm_train_inherits_every_key_it_does_not_set():
    cfg = parse_config({"train": {"learning_rate": 3e-3, "epochs": 2, "lora": {"r": 4, "alpha": 8}, "seed": 5},
                        "arm_train": {"epochs": 6, "lora": {"r": 2}}})
    arm = cfg.arm_train
    assert (arm.learning_rate, arm.epochs, arm.lora.r, arm.lora.alpha, arm.seed, arm.init) == (3e-3, 6, 2, 8, 5, "base")
    assert parse_config({"train": {"epochs": 2}}).arm_train.epochs == 2


def test_a_mistake_in_an_inherited_value_is_named_once_under_train():
    with pytest.raises(UserError) as err:
        parse_config({"train": {"epochs": "3"}}, "c.yaml")
    assert str(err.value) == "c.yaml: field 'train.epochs' = '3': Input should be a valid number"


def test_overrides_are_parsed_as_yaml_and_typed_by_the_schema(tmp_path):
    path = _write(tmp_path, "c.yaml", {"select": {"k": 50}, "sae": None})
    cfg = load_config(path, ["select.k=200", "sweep.seeds=[1, 2]", "train.learning_rate=1e-3", "name=x"])
    assert (cfg.select.k, cfg.sweep.seeds, cfg.train.learning_rate, cfg.name) == (200, [1, 2], 1e-3, "x")
    assert cfg.arm_train.learning_rate == 1e-3  # an override of train reaches arm_train like the file's value
    assert apply_overrides({"sae": {"layer": 1}}, ["sae=null"]) == {"sae": None}


@pytest.mark.parametrize(("item", "message"), [
    ("selct.k=200", r"c.yaml with --set selct.k=200: unknown field 'selct'"),
    ("select.kk=2", r"unknown field 'select.kk'"),
    ("select.k=many", r"field 'select.k' = 'many': Input should be a valid integer"),
    ("select.k", r"--set 'select.k': expected KEY=VALUE"),
    ("select..k=1", r"expected KEY=VALUE with a dotted key"),
    ("select.k=[1", r"--set 'select.k=\[1': the value is not valid YAML"),
])
def test_a_wrong_override_names_the_field(tmp_path, item, message):
    path = _write(tmp_path, "c.yaml", {"select": {"k": 50}})
    with pytest.raises(UserError, match=message):
        load_config(path, [item])


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path):
    path = _write(tmp_path, "c.yaml", {"train": {"epoch": 3, "learning_rate": "fast"}, "select": {"k": 2.5},
                                       "sweep": {"retrain_base": 1}, "attribute": {"token_batch_size": "big"}})
    with pytest.raises(UserError) as err:
        load_config(path)
    problems = str(err.value).removeprefix(f"{path}: ").split("; ")
    assert problems == [
        "field 'train.learning_rate' = 'fast': Input should be a valid number",
        "unknown field 'train.epoch'",
        "field 'attribute.token_batch_size' = 'big': Input should be a valid integer, or Input should be 'auto'",
        "field 'select.k' = 2.5: Input should be a valid integer",
        "field 'sweep.retrain_base' = 1: Input should be a valid boolean",
    ]


def test_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n")
    assert load_config(path).train.learning_rate == 1e-4
    assert load_config(path, ["arm_train.learning_rate=2E-3"]).arm_train.learning_rate == 2e-3


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nselect:\n  k: [1, 2\ntrain: {}\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:4:")
    assert "not valid YAML" in message


def test_a_custom_arm_is_named_by_its_own_field_not_the_union():
    with pytest.raises(UserError) as err:
        parse_config({"select": {"arms": ["top_k", {"name": "w", "kind": "window", "ranks": [1, "5"]}]}}, "c.yaml")
    assert str(err.value) == "c.yaml: field 'select.arms.1.ranks.1' = '5': Input should be a valid integer"


if __name__ == "__main__":  # regenerate the fixture after a deliberate change to a shipped config
    FIXTURE.write_text(json.dumps(resolved_configs(), indent=1, sort_keys=True) + "\n")
    sys.exit(0)
