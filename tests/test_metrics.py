"""Force metrics: closed forms, the per-component conventions, rotation invariance, the
per-type table against the metrics by hand, the scorers in model selection, named errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation
from sklearn.metrics import mean_absolute_error, root_mean_squared_error
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.neighbors import KNeighborsRegressor

from mlmlearn.metrics import (
    ForceTable,
    angle_scorer,
    cosine_similarity,
    cosine_similarity_scorer,
    force_mae,
    force_mae_scorer,
    force_norm_rmse,
    force_rmse,
    force_rmse_scorer,
    force_table,
    weighted_average_angle,
)

EPS = np.finfo(float).eps
ERRORS = [force_rmse, force_mae, force_norm_rmse]
ALL = [*ERRORS, cosine_similarity, weighted_average_angle]


# ------------------------------------------------------------------ closed forms
def test_vector_errors_in_closed_form():
    # error vectors (0, 3, 4) and (1, -2, 2): lengths 5 and 3
    y_true = [[1.0, 0, 0], [0, 2, 0]]
    y_pred = [[1.0, 3, 4], [1, 0, 2]]
    assert force_rmse(y_true, y_pred) == pytest.approx(math.sqrt((25 + 9) / 2), rel=4 * EPS)
    assert force_mae(y_true, y_pred) == pytest.approx(4.0, rel=4 * EPS)
    # lengths 1 → √26 and 2 → √5
    expected = math.sqrt(((math.sqrt(26) - 1) ** 2 + (math.sqrt(5) - 2) ** 2) / 2)
    assert force_norm_rmse(y_true, y_pred) == pytest.approx(expected, rel=16 * EPS)


def test_perfect_prediction_scores_zero_and_right_length_wrong_direction_has_no_norm_error():
    forces = np.array([[1.0, -2, 0.5], [0, 0, 3]])
    for metric in ERRORS:
        assert metric(forces, forces) == 0.0
    assert weighted_average_angle(forces, forces) == 0.0
    assert cosine_similarity(forces, forces) == pytest.approx(1.0, abs=4 * EPS)
    assert force_norm_rmse(forces, -forces) == 0.0
    assert force_rmse(forces, -forces) == pytest.approx(2 * np.sqrt(np.mean((forces**2).sum(1))))


def test_the_per_component_conventions_are_the_documented_factors():
    """RMSE per component (3n numbers) is force_rmse / √3; MAE per component lies in
    [force_mae / 3, force_mae / √3] (ℓ1 against ℓ2 norm of each error vector)."""
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    per_component = root_mean_squared_error(y_true.ravel(), y_pred.ravel())
    assert force_rmse(y_true, y_pred) / math.sqrt(3) == pytest.approx(per_component, rel=1e-14)
    mae = force_mae(y_true, y_pred)
    assert mae / 3 <= mean_absolute_error(y_true.ravel(), y_pred.ravel()) <= mae / math.sqrt(3)
    assert force_mae(y_true, y_pred) <= force_rmse(y_true, y_pred)


def test_cosine_similarity_per_atom_and_mean():
    y_true = [[2.0, 0, 0], [0, 1, 0], [0, 0, 5], [1, 1, 0]]
    y_pred = [[1.0, 0, 0], [1, 0, 0], [0, 0, -1], [1, 0, 0]]
    expected = np.array([1.0, 0.0, -1.0, 1 / math.sqrt(2)])
    np.testing.assert_allclose(
        cosine_similarity(y_true, y_pred, per_atom=True), expected, atol=4 * EPS
    )
    assert cosine_similarity(y_true, y_pred) == pytest.approx(expected.mean(), abs=4 * EPS)


def test_weighted_average_angle_in_closed_form_and_at_tiny_and_straight_angles():
    # weights 4, 1, 9: angles 0°, 90°, 180°
    y_true = [[2.0, 0, 0], [0, 1, 0], [0, 0, 3]]
    y_pred = [[1.0, 0, 0], [1, 0, 0], [0, 0, -1]]
    assert weighted_average_angle(y_true, y_pred) == pytest.approx((90 + 9 * 180) / 14, rel=4 * EPS)
    # 1e-9 rad: arccos of the cosine (which rounds to 1) would say 0
    tiny = weighted_average_angle([[1.0, 0, 0]], [[1.0, 1e-9, 0]])
    assert tiny == pytest.approx(math.degrees(1e-9), rel=8 * EPS)
    # a zero reference force counts nothing (and is not an error)
    assert weighted_average_angle([[1.0, 0, 0], [0, 0, 0]], [[1.0, 0, 0], [0, 1, 0]]) == 0.0


# ------------------------------------------------------------------ named errors
@pytest.mark.parametrize("metric", ALL)
@pytest.mark.parametrize(
    "y_true, y_pred, pattern",
    [
        (np.ones((3, 2)), np.ones((3, 2)), r"y_true must have shape \(n_atoms, 3\).*\(3, 2\)"),
        (np.ones(3), np.ones(3), r"y_true must have shape \(n_atoms, 3\).*\(3,\)"),
        (np.ones((2, 3)), np.ones((2, 3, 1)), r"y_pred must have shape .*\(2, 3, 1\)"),
        (np.ones((0, 3)), np.ones((0, 3)), r"y_true holds no atoms"),
        (np.ones((2, 3)), [[1, 1, 1], [1, np.nan, 1]], r"y_pred has a non-finite value in row 1"),
        ([[np.inf, 1, 1], [1, 1, 1]], np.ones((2, 3)), r"y_true has a non-finite value in row 0"),
        (np.ones((2, 3)), np.ones((3, 3)), r"y_true and y_pred must have one row per atom.*2.*3"),
        ([["a", "b", "c"]], np.ones((1, 3)), r"y_true must be numeric force vectors"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_argument(metric, y_true, y_pred, pattern):
    with pytest.raises(ValueError, match=pattern):
        metric(y_true, y_pred)


@pytest.mark.parametrize("per_atom", [False, True])
def test_a_zero_vector_has_no_direction_and_its_row_is_named(per_atom):
    ok = np.ones((3, 3))
    zero_pred = ok.copy()
    zero_pred[2] = 0
    with pytest.raises(ValueError, match=r"y_pred row 2 is the zero vector"):
        cosine_similarity(ok, zero_pred, per_atom=per_atom)
    with pytest.raises(ValueError, match=r"y_true row 2 is the zero vector"):
        cosine_similarity(zero_pred, ok, per_atom=per_atom)
    with pytest.raises(ValueError, match=r"y_pred row 2 is the zero vector"):
        weighted_average_angle(ok, zero_pred)
    with pytest.raises(ValueError, match=r"y_pred row 2 is the zero vector"):
        force_table(ok, zero_pred, ["S", "S", "H"])
    with pytest.raises(ValueError, match=r"y_true: every reference force is zero"):
        weighted_average_angle(np.zeros((3, 3)), ok)


# ------------------------------------------------------------------ rotation invariance
def _tolerances(y_true, y_pred):
    """Bounds on how much rounding in a rotation moves each metric.

    scipy's matrix of a unit quaternion is orthogonal to a few ulps, and each
    rotated row carries an error |δv| ≤ c·eps·|v| (c = 16 covers the matrix and
    the three-term products). Every error metric is 1-Lipschitz in the rows'
    lengths (RMS or mean), so it moves by at most c·eps·(max|a| + max|b|), plus
    n·eps of its own summation; an angle moves by at most |δv|/|v| = c·eps rad per
    row, a weighted mean of angles in [0, π] by that plus π times the weights'
    relative change (2c·eps); a cosine by at most the angle.
    """
    n, c = len(y_true), 16
    scale = np.linalg.norm(y_true, axis=1).max() + np.linalg.norm(y_pred, axis=1).max()
    force = c * (n + 1) * EPS * scale
    radians = c * (n + 1) * EPS * (1 + 2 * math.pi)
    return {"force": force, "degrees": math.degrees(radians), "cosine": radians}


_component = st.floats(-10, 10, allow_subnormal=False).filter(lambda x: abs(x) > 1e-2)
_quaternion = hnp.arrays(float, 4, elements=st.floats(-1, 1)).filter(
    lambda q: np.linalg.norm(q) > 0.1
)


@st.composite
def _forces(draw):
    n = draw(st.integers(1, 12))
    y_true = draw(hnp.arrays(float, (n, 3), elements=_component))
    y_pred = draw(hnp.arrays(float, (n, 3), elements=_component))
    types = draw(st.lists(st.sampled_from(["Au", "S", "H"]), min_size=n, max_size=n))
    return y_true, y_pred, types


@settings(max_examples=60, deadline=None)
@given(_forces(), _quaternion)
def test_rotating_reference_and_prediction_together_changes_no_metric(data, quaternion):
    y_true, y_pred, types = data
    rotation = Rotation.from_quat(quaternion).as_matrix()
    t_rot, p_rot = y_true @ rotation.T, y_pred @ rotation.T
    tol = _tolerances(y_true, y_pred)
    for metric in ERRORS:
        assert abs(metric(t_rot, p_rot) - metric(y_true, y_pred)) <= tol["force"], metric
    angle = weighted_average_angle(t_rot, p_rot) - weighted_average_angle(y_true, y_pred)
    assert abs(angle) <= tol["degrees"]
    np.testing.assert_allclose(
        cosine_similarity(t_rot, p_rot, per_atom=True),
        cosine_similarity(y_true, y_pred, per_atom=True),
        rtol=0,
        atol=tol["cosine"],
    )
    before, after = force_table(y_true, y_pred, types), force_table(t_rot, p_rot, types)
    assert before.types == after.types
    np.testing.assert_array_equal(before.count, after.count)
    for column in ("norm_rmse", "rmse", "mae"):
        np.testing.assert_allclose(
            getattr(after, column), getattr(before, column), rtol=0, atol=tol["force"]
        )
    np.testing.assert_allclose(
        after.weighted_angle, before.weighted_angle, rtol=0, atol=tol["degrees"]
    )


# ------------------------------------------------------------------ the per-type table
def test_the_table_in_closed_form():
    """S: exact; H: lengths 2→1 and 1→1, angles 0° and 90° weighted 4 and 1, error
    vectors of lengths 1 and √2."""
    table = force_table(
        [[1.0, 0, 0], [0, 2, 0], [0, 0, 1]], [[1.0, 0, 0], [0, 1, 0], [1, 0, 0]], ["S", "H", "H"]
    )
    assert table.types == ("S", "H", "all")
    np.testing.assert_array_equal(table.count, [1, 2, 3])
    r2 = math.sqrt(2)
    expected = {
        "norm_rmse": [0, math.sqrt(1 / 2), math.sqrt(1 / 3)],
        "weighted_angle": [0, 18, 15],
        "rmse": [0, math.sqrt(3 / 2), 1],
        "mae": [0, (1 + r2) / 2, (1 + r2) / 3],
    }
    for column, values in expected.items():
        np.testing.assert_allclose(getattr(table, column), values, rtol=8 * EPS, atol=0)


def test_each_row_of_the_table_is_the_metrics_of_that_type_by_hand():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    types = rng.choice(["Au_core", "Au_unit", "S", "C", "H"], size=40)
    table = force_table(y_true, y_pred, types)
    _, first = np.unique(types, return_index=True)
    assert table.types == (*types[np.sort(first)], "all")  # order of first appearance
    for label in table.types:
        mask = np.ones(40, bool) if label == "all" else types == label
        t, p = y_true[mask], y_pred[mask]
        row = table.row(label)
        assert row["count"] == mask.sum()
        assert row["norm_rmse"] == force_norm_rmse(t, p)
        assert row["weighted_angle"] == weighted_average_angle(t, p)
        assert row["rmse"] == force_rmse(t, p)
        assert row["mae"] == force_mae(t, p)


def test_the_table_reports_the_labels_asked_for_and_the_all_row_covers_every_atom():
    y = np.eye(3)
    table = force_table(y, y, ["S", "H", "H"], labels=["H", "Au_core"])
    assert table.types == ("H", "Au_core", "all")
    np.testing.assert_array_equal(table.count, [2, 0, 3])
    assert np.isnan([table.norm_rmse[1], table.weighted_angle[1], table.rmse[1]]).all()
    # integer types work too
    assert force_table(y, y, [1, 2, 2]).types == (1, 2, "all")


def test_the_table_prints_aligned_and_converts_to_rows_and_columns():
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    table = force_table(y_true, y_pred, ["Au_unit"] * 4 + ["S"] * 6)
    lines = str(table).splitlines()
    assert len(lines) == 2 + 3 and len({len(line) for line in lines}) == 1
    assert lines[0].split()[:2] == ["type", "n"] and lines[-1].startswith("all ")
    assert f"{table.rmse[0]:.3f}" in lines[2]
    columns = table.to_dict()
    assert list(columns) == list(ForceTable.columns)
    assert columns["type"] == ["Au_unit", "S", "all"] and columns["count"] == [4, 6, 10]
    assert table.as_rows() == list(zip(*columns.values(), strict=True))
    assert all(type(v) in (str, int, float) for row in table.as_rows() for v in row)
    assert table.row("S") == dict(zip(ForceTable.columns, table.as_rows()[1], strict=True))
    with pytest.raises(KeyError, match=r"no row 'C'; the rows are \['Au_unit', 'S', 'all'\]"):
        table.row("C")
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(columns)
    assert frame.shape == (3, 6) and frame["weighted_angle"].tolist() == columns["weighted_angle"]


@pytest.mark.parametrize(
    "types, labels, pattern",
    [
        (["S", "S"], None, r"y_true and y_pred and types must have one row per atom.*types: 2"),
        ([["S"], ["S"], ["S"]], None, r"types must be one label per atom.*\(3, 1\)"),
        (["S", "all", "S"], None, r"'all' is the table's row of every atom"),
        (["S", "H", "S"], ["S", "S"], r"labels lists a type twice"),
    ],
)
def test_bad_types_raise_naming_them(types, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        force_table(np.ones((3, 3)), np.ones((3, 3)), types, labels=labels)


# ------------------------------------------------------------------ scorers
def _synthetic(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 4))
    y = np.column_stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2], X[:, 3] ** 2]) + 0.05
    return X, y


def test_the_scorers_are_minus_the_errors_on_each_fold_of_cross_validate():
    X, y = _synthetic()
    cv = KFold(4, shuffle=True, random_state=0)
    scoring = {
        "rmse": force_rmse_scorer,
        "mae": force_mae_scorer,
        "cosine": cosine_similarity_scorer,
        "angle": angle_scorer,
    }
    result = cross_validate(
        KNeighborsRegressor(3),
        X,
        y,
        cv=cv,
        scoring=scoring,
        return_estimator=True,
        return_indices=True,
    )
    by_hand = {"rmse": [], "mae": [], "cosine": [], "angle": []}
    for model, test in zip(result["estimator"], result["indices"]["test"], strict=True):
        pred = model.predict(X[test])
        by_hand["rmse"].append(-force_rmse(y[test], pred))
        by_hand["mae"].append(-force_mae(y[test], pred))
        by_hand["cosine"].append(cosine_similarity(y[test], pred))
        by_hand["angle"].append(-weighted_average_angle(y[test], pred))
    for name, values in by_hand.items():
        np.testing.assert_array_equal(result[f"test_{name}"], values)
    assert (result["test_rmse"] < 0).all() and (result["test_cosine"] > 0).all()


def test_grid_search_selects_by_force_rmse():
    X, y = _synthetic(80, seed=3)
    cv = KFold(4, shuffle=True, random_state=0)
    grid = {"n_neighbors": [1, 3, 9, 27]}
    search = GridSearchCV(KNeighborsRegressor(), grid, scoring=force_rmse_scorer, cv=cv).fit(X, y)
    mean_rmse = []
    for k in grid["n_neighbors"]:
        folds = []
        for train, test in cv.split(X):
            model = KNeighborsRegressor(k).fit(X[train], y[train])
            folds.append(force_rmse(y[test], model.predict(X[test])))
        mean_rmse.append(np.mean(folds))
    assert search.best_params_["n_neighbors"] == grid["n_neighbors"][int(np.argmin(mean_rmse))]
    np.testing.assert_allclose(-search.cv_results_["mean_test_score"], mean_rmse, rtol=1e-14)
