"""The divergence stop: a non-finite weight, loss or gradient norm, or an exploded loss, ends training with
one line naming the stage, seed and step; a healthy log passes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from playpen_attribution.core.divergence import Diverged, DivergenceStop
from playpen_attribution.core.interruption import working_on
from playpen_attribution.core.jsonl import dumps
from playpen_attribution.run import artifacts


def _log(stop: DivergenceStop, step: int, **logs) -> None:
    stop.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)


def test_a_healthy_log_passes():
    stop = DivergenceStop(seed=3)
    for step, loss in enumerate([4.0, 3.1, 2.0, 0.4], start=1):
        _log(stop, step, loss=loss, grad_norm=1.5, learning_rate=1e-3)


@pytest.mark.parametrize("logs, why", [
    ({"loss": 0.0, "grad_norm": math.nan}, "gradient norm nan"),
    ({"loss": math.inf, "grad_norm": 2.0}, "loss inf"),
    ({"loss": 41.0, "grad_norm": 2.0}, "loss 41, more than 10 times the first logged loss 4"),
    ({"loss": 6.5876, "grad_norm": 0.0}, "gradient norm 0 at loss 6.588: the weights no longer change the output"),
])
def test_a_diverging_log_stops_naming_stage_seed_and_step(logs, why):
    stop = DivergenceStop(seed=3)
    _log(stop, 4, loss=4.0, grad_norm=1.0)
    with working_on("stage runs/x/seed_3/train_top_k"), pytest.raises(Diverged) as caught:
        _log(stop, 8, **logs)
    message = str(caught.value)
    assert message.startswith("training diverged in stage runs/x/seed_3/train_top_k (seed 3) at step 8: " + why)
    assert "not finished" in message and "\n" not in message


def test_a_weight_that_is_not_finite_after_a_step_stops_training():
    model = torch.nn.Linear(2, 2)
    stop = DivergenceStop(seed=1)
    stop.on_step_end(None, SimpleNamespace(global_step=1), None, model=model)  # finite: passes
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    model.bias.requires_grad_(False)
    with pytest.raises(Diverged, match=r"at step 2: a trainable weight is not finite"):
        stop.on_step_end(None, SimpleNamespace(global_step=2), None, model=model)


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_json_the_package_writes_is_strict_with_null_for_non_finite_numbers(tmp_path):
    value = {"loss": math.nan, "rows": [1.0, -math.inf, {"x": math.inf}], "ok": 2.5, "n": 3}
    assert _strict(dumps(value)) == {"loss": None, "rows": [1.0, None, {"x": None}], "ok": 2.5, "n": 3}
    artifacts.write_train_log(tmp_path, [{"loss": math.nan, "grad_norm": math.inf, "step": 1}])
    assert _strict((tmp_path / artifacts.TRAIN_LOG).read_text()) == [{"loss": None, "grad_norm": None, "step": 1}]
    artifacts.write_manifest(tmp_path, {"stage": "s", "fingerprint": "f", "content_hash": "c", "x": math.nan})
    assert _strict((tmp_path / artifacts.MANIFEST_FILE).read_text())["x"] is None
