
import pytest
from helpers import REPO

from playpen_attribution.config import load_config, parse_config
from playpen_attribution.errors import UserError

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"demo", "taboo_wordguesser", "taboo_clembench"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_every_real_config_sweeps_at_least_three_seeds():
    """A real model needs the replication the across-seed test reads (one seed cannot decide)."""
    for name in ("taboo_wordguesser", "smoltalk_magpie", "taboo_clembench_gemma3", "taboo_clembench_gemma3_chat"):
        assert len(load_config(REPO / "configs" / f"{name}.yaml").seeds) >= 3, name


def test_published_setup_is_in_taboo_wordguesser():
    cfg = load_config(REPO / "configs" / "taboo_wordguesser.yaml")
    assert cfg.model.base == "google/gemma-3-1b-it"
    assert (cfg.train.lora.r, cfg.train.lora.alpha, cfg.train.lora.dropout) == (16, 32, 0.05)
    assert set(cfg.train.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (cfg.train.learning_rate, cfg.train.epochs, cfg.train.batch_size, cfg.train.grad_accum) == (1e-4, 3, 1, 16)
    assert (cfg.train.warmup_ratio, cfg.train.weight_decay, cfg.train.scheduler) == (0.03, 0.01, "cosine")
    assert cfg.tokenize.max_length == 1024
    assert (cfg.attribute.mode, cfg.attribute.preconditioning, cfg.attribute.projection_dim) == ("mean", "query", 32)
    assert cfg.attribute.unit_normalize and cfg.select.k == 500 and cfg.train.seed == 42
    assert (cfg.evaluate.max_new_tokens, cfg.evaluate.batch_size) == (16, 64)  # batch size: speed only (tested)
    src = cfg.data.source
    assert (src.kind, src.dataset, src.config_name, src.game, src.game_role, src.query_fraction) == (
        "playpen_data", "colab-potsdam/playpen-data", "interactions", "taboo", "WordGuesser", 0.4)


def test_unknown_field_is_named():
    with pytest.raises(UserError, match=r"my.yaml: unknown field 'train.learning_rat'"):
        parse_config({"train": {"learning_rat": 1e-4}}, "my.yaml")


def test_bad_value_names_field_value_and_expectation():
    with pytest.raises(UserError, match=r"field 'select.k' = -3: Input should be greater than 0"):
        parse_config({"select": {"k": -3}}, "my.yaml")


def test_unknown_source_kind_is_rejected():
    with pytest.raises(UserError, match=r"data.source"):
        parse_config({"data": {"source": {"kind": "nope"}}})


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_building_a_config_touches_no_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"data": {"source": {"kind": "clembench", "path": "does/not/exist"}}})
    assert str(cfg.data.source.path).endswith("exist")
    assert list(tmp_path.iterdir()) == []
