"""Training params are checked against the model kind when the config loads: a param the
kind does not take, or of a type it does not accept, is bad input naming it, before any
data is read (and `doctor` says the same)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcycle.errors import SpecError
from mlcycle.train.config import kind_params, load_train_config


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_a_param_of_another_kind_is_named_with_the_ones_it_takes(tmp_path: Path) -> None:
    path = _config(tmp_path, "model:\n  kind: random_forest\n  params: {C: 1.0, solver: lbfgs}\n")
    with pytest.raises(SpecError, match="random_forest has no param 'C'") as err:
        load_train_config(path)
    assert "n_estimators" in str(err.value) and err.value.exit_code == 2


def test_an_ill_typed_param_and_an_unknown_grid_key_are_refused(tmp_path: Path) -> None:
    typed = _config(tmp_path, "model:\n  kind: random_forest\n  params: {n_estimators: many}\n")
    with pytest.raises(SpecError, match="'n_estimators' parameter"):
        load_train_config(typed)
    grid = _config(
        tmp_path,
        "model: {kind: hist_gradient_boosting}\nsearch: {grid: {C: [0.1, 1.0]}}\n",
    )
    with pytest.raises(SpecError, match=r"search\.grid: hist_gradient_boosting has no param 'C'"):
        load_train_config(grid)


def test_every_kind_accepts_its_own_params(tmp_path: Path) -> None:
    ok = _config(
        tmp_path,
        "model:\n  kind: hist_gradient_boosting\n  params: {max_iter: 50, learning_rate: 0.1}\n"
        "search: {grid: {max_depth: [3, 5]}}\n",
    )
    assert load_train_config(ok).model.params["max_iter"] == 50
    assert "C" in kind_params("logistic_regression") and "random_state" not in kind_params(
        "random_forest"
    )


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ("{num_leaves: 1}", r"num_leaves\) > \(1\)"),
        ("{colsample_bytree: 2.0}", r"feature_fraction\) <= \(1.0\)"),
        ("{max_leaves: 7}", "lightgbm has no param 'max_leaves'"),
    ],
)
def test_lightgbm_params_are_checked_by_lightgbm_itself(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], params: str, said: str
) -> None:
    """LightGBM has no scikit-learn constraint table: its own parser refuses the values,
    and its native log line stays out of the one-line error."""
    path = _config(tmp_path, f"model:\n  kind: lightgbm\n  params: {params}\n")
    with pytest.raises(SpecError, match=said) as err:
        load_train_config(path)
    assert err.value.exit_code == 2 and " at /" not in str(err.value)
    assert "[LightGBM]" not in capfd.readouterr().err
    good = _config(tmp_path, "model:\n  kind: lightgbm\n  params: {n_estimators: 50}\n")
    assert load_train_config(good).model.params == {"n_estimators": 50}
