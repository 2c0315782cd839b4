"""Every user-caused error the CLI can meet is one line naming the file, with exit status 2."""

import json
import os

import pytest
import yaml
from helpers import small_demo_dict

from playpen_attribution.cli import main
from playpen_attribution.log import logger


@pytest.fixture
def cli_log(caplog):
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _generic(tmp_path, rows_file):
    cfg = small_demo_dict()
    cfg["data"] = {"source": {"kind": "generic", "path": str(rows_file)}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["data", "--config", str(path), "--run-dir", str(tmp_path / "run")]


def _rows(n=10):
    return "".join(json.dumps({"prompt": f"p {i}", "completion": f"c {i}"}) + "\n" for i in range(n))


def non_utf8_jsonl(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_bytes(_rows().encode() + b'{"prompt": "\xff", "completion": "x"}\n')
    return _generic(tmp_path, f), "rows.jsonl:11: not UTF-8"


def truncated_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in _rows().splitlines()]), f)
    f.write_bytes(f.read_bytes()[:-40])
    return _generic(tmp_path, f), "rows.parquet: not a readable Parquet file"


def jsonl_is_a_folder(tmp_path):
    (tmp_path / "rows.jsonl").mkdir()
    return _generic(tmp_path, tmp_path / "rows.jsonl"), "rows.jsonl: is a folder"


def empty_outcome(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(_rows() + json.dumps({"prompt": "p", "completion": "c", "outcome": ""}) + "\n")
    return _generic(tmp_path, f), "rows.jsonl line 11: outcome ''"


def empty_config(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    return ["run", str(tmp_path / "empty.yaml"), "--run-dir", str(tmp_path / "r")], "empty.yaml: the config file is empty"


def string_count(tmp_path):
    cfg = small_demo_dict()
    cfg["select"]["k"] = "300"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return ["data", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "r")], "c.yaml: field 'select.k'"


def k_beyond_the_pool(tmp_path):
    cfg = small_demo_dict()
    cfg["select"]["k"] = 100_000
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return ["data", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "r")], "is larger than the pool"


def real_model_without_data(tmp_path):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"model": {"base": "google/gemma-3-1b-it"}}))
    return ["run", str(tmp_path / "g.yaml"), "--run-dir", str(tmp_path / "r")], "g.yaml: model.base"


def report_missing_folder(tmp_path):
    return ["report", "--run-dir", str(tmp_path / "nope")], "nope: no such folder"


def run_dir_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(small_demo_dict()))
    return ["data", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "afile")], "afile: is a file"


def unknown_model(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(small_demo_dict()))
    return (["evaluate", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "r"), "--arm", "nope",
             "--seed", "1"], "--arm 'nope' is not known: expected base, base_adapter, top_k, matched_random_k")


def yaml_syntax_error(tmp_path):
    (tmp_path / "c.yaml").write_text("name: x\nselect:\n  k: [1, 2\ntrain: {}\n")
    return ["plan", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "r")], "c.yaml:4:6: not valid YAML: expected ',' or ']'"


def extends_cycle(tmp_path):
    (tmp_path / "c.yaml").write_text("extends: c.yaml\n")
    return ["run", "--config", str(tmp_path / "c.yaml")], "c.yaml: `extends` makes a cycle: c.yaml -> c.yaml"


def wrong_override(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(small_demo_dict()))
    return (["plan", str(tmp_path / "c.yaml"), "--set", "select.kk=3"],
            "c.yaml with --set select.kk=3: unknown field 'select.kk'")


def two_configs(tmp_path):
    return ["run", "a.yaml", "--config", "b.yaml"], "two configs given (a.yaml and --config b.yaml); give one"


def unreadable_file(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(_rows())
    f.chmod(0)
    return _generic(tmp_path, f), "rows.jsonl: permission denied"


CASES = [non_utf8_jsonl, truncated_parquet, jsonl_is_a_folder, empty_outcome, empty_config, string_count,
         k_beyond_the_pool, real_model_without_data, report_missing_folder, run_dir_is_a_file, unknown_model,
         unreadable_file, yaml_syntax_error, extends_cycle, wrong_override, two_configs]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_user_error_is_one_line_exit_2_naming_the_file(case, tmp_path, cli_log):
    if case is unreadable_file and os.geteuid() == 0:
        pytest.skip("root reads files without permission")
    argv, message = case(tmp_path)
    assert main(argv) == 2
    errors = {r.getMessage() for r in cli_log.records if r.levelname == "ERROR"}  # (seen by two handlers)
    assert len(errors) == 1
    error = errors.pop()
    assert "\n" not in error and message in error
