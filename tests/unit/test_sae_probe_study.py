"""The probe study's statistics: length-residualised and partial Spearman, and the study's table rows."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from playpen_attribution.sae.probe_study import cross_fit, partial_spearman, residualise, study_rows


def _rows(n=400, seed=0):
    rng = np.random.default_rng(seed)
    length = rng.integers(20, 400, n).astype(float)
    signal = rng.normal(size=n)                         # what attribution sees beyond length
    score = 0.02 * length + signal + 0.3 * rng.normal(size=n)
    return rng, length, signal, score


def test_a_predictor_that_sees_only_length_has_no_length_residualised_spearman():
    rng, length, _, score = _rows()
    for sees_length in (length, np.log(length), length + 0.5 * rng.normal(size=len(length))):
        assert abs(spearmanr(sees_length, score).statistic) > 0.5        # length drives the score ...
        assert partial_spearman(sees_length, score, length) == pytest.approx(0.0, abs=0.1)  # ... and nothing else
    assert partial_spearman(length, score, length) == 0.0  # a monotone function of length: nothing left at all


def test_a_predictor_that_sees_beyond_length_keeps_its_partial_spearman():
    _, length, signal, score = _rows()
    assert partial_spearman(signal, score, length) > 0.6
    assert partial_spearman(-signal, score, length) < -0.6


def test_residualise_fits_the_line_on_the_training_rows_only():
    length = np.arange(10.0)
    values = 2 * length + 1
    assert np.allclose(residualise(values, length), 0)
    bent = values.copy()
    bent[8:] += 100  # held-out rows off the line do not move it
    train = np.arange(10) < 8
    assert np.allclose(residualise(bent, length, train)[:8], 0) and np.allclose(residualise(bent, length, train)[8:], 100)


def test_residualised_probe_on_length_only_features_predicts_nothing():
    _, length, _, score = _rows()
    folds = np.arange(len(length)) % 4
    raw = cross_fit(length[:, None], score, length, folds, [1.0], residualised=False)
    assert spearmanr(raw, score).statistic > 0.5
    resid = cross_fit(length[:, None], score, length, folds, [1.0], residualised=True)
    assert abs(spearmanr(resid, residualise(score, length)).statistic) < 0.15


def test_study_rows_give_each_layer_and_pooling_raw_and_residualised_plus_length():
    rng, length, signal, score = _rows()
    noise = rng.normal(size=(len(length), 3))
    features = {(1, "mean"): np.column_stack([signal, noise]), (1, "last_token"): np.column_stack([length, noise]),
                (0, "mean"): noise}
    rows = study_rows(features, score, length, np.arange(len(length)) % 4, [0.1, 1.0, 10.0])
    keys = [(r["layer"], r["pooling"], r["length_residualised"]) for r in rows]
    assert keys == [(0, "mean", False), (0, "mean", True), (1, "last_token", False), (1, "last_token", True),
                    (1, "mean", False), (1, "mean", True), (None, "length", False)]
    by = {k: r for k, r in zip(keys, rows, strict=True)}
    assert by[(1, "mean", True)]["spearman"] > 0.6 and by[(1, "mean", True)]["partial_spearman"] > 0.6
    assert by[(1, "last_token", False)]["spearman"] > 0.5                      # length alone looks predictive ...
    assert abs(by[(1, "last_token", True)]["spearman"]) < 0.2                  # ... until length is regressed out
    assert abs(by[(None, "length", False)]["partial_spearman"]) < 0.1
    assert abs(by[(0, "mean", False)]["spearman"]) < 0.2
    assert set(rows[0]) == {"layer", "pooling", "length_residualised", "spearman", "r2", "partial_spearman"}


def test_the_report_table_and_plot_of_the_study(tmp_path):
    from playpen_attribution.report.probe_study import plot_probe_study, study_table

    rows = [{"layer": 2, "pooling": "mean", "length_residualised": False, "spearman": 0.5, "r2": 0.2, "partial_spearman": 0.1},
            {"layer": 2, "pooling": "mean", "length_residualised": True, "spearman": 0.05, "r2": 0.0, "partial_spearman": 0.04},
            {"layer": 1, "pooling": "mean", "length_residualised": False, "spearman": 0.4, "r2": 0.1, "partial_spearman": 0.0},
            {"layer": None, "pooling": "length", "length_residualised": False, "spearman": 0.45, "r2": 0.2,
             "partial_spearman": 0.0}]
    lines = study_table(rows)
    assert lines[2] == "| 1 | mean | +0.400 | +0.100 | n/a | n/a | +0.000 |"
    assert lines[3] == "| 2 | mean | +0.500 | +0.200 | +0.050 | +0.000 | +0.100 |"
    assert lines[4] == "| - | length | +0.450 | +0.200 | n/a | n/a | +0.000 |" and len(lines) == 5
    plot_probe_study(rows, tmp_path / "probe_study.png")
    assert (tmp_path / "probe_study.png").stat().st_size > 1000


def test_pooled_residuals_read_the_last_pooled_the_mean_and_the_first_response_token():
    import torch

    from playpen_attribution.sae.probe_residuals import pooled_residuals

    resid = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)  # position p of row b: [8b + 2p, 8b + 2p + 1]
    pool = torch.tensor([[True, True, True, False], [True, True, True, True]])       # row 0 padded at the end
    response = torch.tensor([[False, True, True, False], [False, False, False, False]])  # row 1: no response token
    out = pooled_residuals(resid, pool, response)
    assert out["last_token"].tolist() == [[4.0, 5.0], [14.0, 15.0]]
    assert out["mean"].tolist() == [[2.0, 3.0], [11.0, 12.0]]
    assert out["first_response_token"].tolist() == [[2.0, 3.0], [0.0, 0.0]]  # zeros for a row without one


def test_the_report_section_names_the_study_and_shows_table_and_plot():
    from playpen_attribution.report.probe_study import probe_study_lines

    rows = [{"layer": 0, "pooling": "mean", "length_residualised": False, "spearman": 0.5, "r2": 0.2, "partial_spearman": 0.1}]
    study = {"layers": [0], "folds": 3, "group_key": "group_id", "rows_fitted": 90, "target": "rank",
             "length": "tokens fed to the model", "rows": rows}
    lines = probe_study_lines(study)
    assert lines[0] == "## Probe study: does a predictor see anything beyond length?"
    assert "| 0 | mean | +0.500 | +0.200 | n/a | n/a | +0.100 |" in lines and "![probe study](probe_study.png)" in lines
    assert probe_study_lines(None) == []
