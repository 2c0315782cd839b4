import pytest
import yaml

from playpen_attribution.config import load_config, parse_config
from playpen_attribution.errors import UserError


@pytest.mark.parametrize(("data", "message"), [
    ({"train": {"epochs": True}}, r"field 'train.epochs' = True: Input should be a valid number"),
    ({"train": {"learning_rate": "1e-4"}}, r"field 'train.learning_rate' = '1e-4': Input should be a valid number"),
    ({"tokenize": {"max_length": True}}, r"field 'tokenize.max_length' = True: Input should be a valid integer"),
    ({"select": {"k": "300"}}, r"field 'select.k' = '300': Input should be a valid integer"),
    ({"select": {"k": 2.5}}, r"field 'select.k' = 2.5"),
    ({"data": {"source": {"kind": "demo", "n_train": "100"}}}, r"field 'data.source.n_train' = '100'"),
    ({"sweep": {"seeds": [1, "2"]}}, r"field 'sweep.seeds.1' = '2'"),
    ({"sweep": {"retrain_base": 1}}, r"field 'sweep.retrain_base' = 1: Input should be a valid boolean"),
    ({"sweep": {"retrain_base": "yes"}}, r"field 'sweep.retrain_base' = 'yes'"),
])
def test_counts_and_flags_are_strict(data, message):
    with pytest.raises(UserError, match=message):
        parse_config(data, "c.yaml")


def test_ints_still_fill_floats_and_literals_still_work():
    cfg = parse_config({"train": {"learning_rate": 1, "epochs": 2}, "attribute": {"token_batch_size": "auto"}})
    assert cfg.train.learning_rate == 1.0 and cfg.train.epochs == 2


def test_empty_config_file_is_an_error(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(UserError, match=r"empty.yaml: the config file is empty"):
        load_config(path)


def test_a_real_model_needs_a_data_section():
    with pytest.raises(UserError, match=r"model.base = 'google/gemma-3-1b-it'.*needs a `data.source`"):
        parse_config({"model": {"base": "google/gemma-3-1b-it"}}, "g.yaml")
    with pytest.raises(UserError, match="needs a `data.source`"):
        parse_config({"model": {"base": "google/gemma-3-1b-it"}, "data": {"seed": 1}}, "g.yaml")
    parse_config({"model": {"base": "google/gemma-3-1b-it"}, "data": {"source": {"kind": "demo"}}})


def test_shipped_configs_are_still_accepted():
    from helpers import REPO
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)
    assert yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
