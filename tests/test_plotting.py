"""Figures: the drawn data is the input, one panel per atom type, resets where given.

A missing matplotlib is checked with the other optional packages in
tests/test_optional.py (a core install, matplotlib blocked before mlmlearn is imported).
"""

import re

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mlmlearn.metrics import force_norm_rmse, weighted_average_angle  # noqa: E402
from mlmlearn.plotting import (  # noqa: E402
    plot_angle_vs_norm,
    plot_energy_trace,
    plot_force_parity,
)

EPS = np.finfo(float).eps


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _lines(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


def _forces(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=(n, 3))
    y_pred = y_true + 0.4 * rng.normal(size=(n, 3))
    types = rng.choice(["Au_unit", "S", "C", "H"], size=n)
    return y_true, y_pred, types


# ------------------------------------------------------------------ energy traces
def test_one_energy_series_is_drawn_as_given():
    energies = [-3.0, -3.4, np.nan, -3.45]  # NaN: a failed single point, left as a gap
    fig = plot_energy_trace(energies)
    (ax,) = fig.axes
    (line,) = _lines(ax, "energy")
    np.testing.assert_array_equal(line.get_xdata(), np.arange(4))
    np.testing.assert_array_equal(line.get_ydata(), energies)
    assert ax.get_ylabel() == "energy (eV)" and _lines(ax, "reset") == []
    assert ax.get_legend() is None


def test_several_schemes_with_their_steps_resets_and_labels():
    bfgs = np.linspace(-1.0, -2.0, 10)
    reset = np.linspace(-1.0, -2.5, 7)
    steps = [np.arange(10), np.arange(0, 70, 10)]
    fig = plot_energy_trace(
        [bfgs, reset],
        steps=steps,
        resets=[[], [20, 60]],
        labels=["BFGS", "BFGS, resets"],
        reference_minimum=-3.0,
    )
    ax = fig.axes[0]
    energy = _lines(ax, "energy")
    assert [line.get_label() for line in energy] == ["BFGS", "BFGS, resets"]
    for line, x, y in zip(energy, steps, [bfgs, reset], strict=True):
        np.testing.assert_array_equal(line.get_xdata(), x)
        np.testing.assert_array_equal(line.get_ydata(), y + 3.0)  # relative to the minimum
    (crosses,) = _lines(ax, "reset")
    np.testing.assert_array_equal(crosses.get_xdata(), [20, 60])
    np.testing.assert_array_equal(crosses.get_ydata(), reset[[2, 6]] + 3.0)  # on the curve
    assert crosses.get_marker() == "x" and crosses.get_color() == energy[1].get_color()
    (zero,) = _lines(ax, "reference")
    np.testing.assert_array_equal(zero.get_ydata(), [0, 0])
    assert ax.get_ylabel() == "E − E_min (eV)"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["reference minimum", "BFGS", "BFGS, resets", "Hessian reset"]


def test_shared_steps_and_resets_apply_to_every_scheme_and_a_2d_array_is_one_scheme_per_row():
    energies = np.array([[0.0, -1, -2, -3], [0.0, -0.5, -1, -1.5]])
    fig = plot_energy_trace(energies, steps=[0, 5, 10, 15], resets=[10])
    ax = fig.axes[0]
    assert len(_lines(ax, "energy")) == 2
    crosses = _lines(ax, "reset")
    assert [c.get_xdata().tolist() for c in crosses] == [[10], [10]]
    assert [c.get_ydata().tolist() for c in crosses] == [[-2.0], [-1.0]]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["Hessian reset"]  # one entry for all crosses


def test_the_energy_trace_draws_into_given_axes():
    fig, (left, right) = plt.subplots(1, 2)
    assert plot_energy_trace([1.0, 0.5], ax=right) is fig
    assert len(_lines(right, "energy")) == 1 and len(left.lines) == 0


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"energies": [1.0, 0.5], "resets": [3]}, r"resets of scheme 0: step 3 is not among"),
        (
            {"energies": [[1.0, 0.5], [1.0]], "labels": ["a", "b"], "resets": [None, [1]]},
            r"resets of scheme 'b': step 1 is not among its steps \(0 … 0\)",
        ),
        ({"energies": [1.0, np.inf]}, r"energies of scheme 0: entry 1 is inf"),
        ({"energies": [1.0, 0.5], "steps": [0, 1, 2]}, r"steps of scheme 0 has 3 entries for 2"),
        ({"energies": [[1.0], [2.0]], "labels": ["a"]}, r"labels must name each of the 2"),
        ({"energies": [[1.0], [2.0]], "resets": [[0], [0], [0]]}, r"resets must give one"),
        ({"energies": [[1.0], []]}, r"energies of scheme 1 must be a non-empty 1-D"),
        ({"energies": [1.0], "reference_minimum": np.nan}, r"reference_minimum must be finite"),
    ],
)
def test_bad_energy_traces_raise_naming_scheme_and_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        plot_energy_trace(**kwargs)


# ------------------------------------------------------------------ parity
def test_force_parity_has_one_panel_per_type_with_the_norms_and_rmse():
    y_true, y_pred, types = _forces()
    fig = plot_force_parity(y_true, y_pred, types)
    _, first = np.unique(types, return_index=True)
    order = list(types[np.sort(first)])
    assert len(fig.axes) == len(order) == 4
    for label, ax in zip(order, fig.axes, strict=True):
        mask = types == label
        (dots,) = [c for c in ax.collections if c.get_gid() == "atoms"]
        points = dots.get_offsets()
        np.testing.assert_array_equal(points[:, 0], np.linalg.norm(y_true[mask], axis=1))
        np.testing.assert_array_equal(points[:, 1], np.linalg.norm(y_pred[mask], axis=1))
        rmse = force_norm_rmse(y_true[mask], y_pred[mask])
        assert ax.get_title() == f"{label}: |F| RMSE {rmse:.3f} eV/Å (n = {mask.sum()})"
        (diagonal,) = _lines(ax, "diagonal")
        np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())


def test_force_parity_into_given_axes_in_the_labels_order_with_an_empty_type():
    y_true, y_pred, types = _forces()
    fig, axes = plt.subplots(2, 2)
    labels = ["H", "S", "Au_core", "C"]
    assert plot_force_parity(y_true, y_pred, types, labels=labels, ax=axes) is fig
    titles = [ax.get_title() for ax in axes.ravel()]
    assert [t.partition(":")[0] for t in titles] == labels
    assert titles[2] == "Au_core: no atoms"
    with pytest.raises(ValueError, match=r"ax: 4 atom type\(s\) .* need 4 axes; got 3"):
        plot_force_parity(y_true, y_pred, types, ax=axes.ravel()[:3])


# ------------------------------------------------------------------ angle against norm
def test_angle_vs_norm_plots_each_atoms_angle_and_the_weighted_average():
    y_true, y_pred, types = _forces(seed=1)
    y_true[0] = 0.0  # no direction: left out
    fig = plot_angle_vs_norm(y_true, y_pred, types)
    _, first = np.unique(types, return_index=True)
    order = list(types[np.sort(first)])
    assert len(fig.axes) == len(order)
    for label, ax in zip(order, fig.axes, strict=True):
        mask = (types == label) & (np.arange(len(types)) != 0)
        t, p = y_true[mask], y_pred[mask]
        (dots,) = [c for c in ax.collections if c.get_gid() == "atoms"]
        x, angle = dots.get_offsets().T
        np.testing.assert_array_equal(x, np.linalg.norm(t, axis=1))
        # oracle: arccos of the cosine, whose rounding (≤ 4 eps) costs 4 eps / sin θ rad
        cos = (t * p).sum(1) / (np.linalg.norm(t, axis=1) * np.linalg.norm(p, axis=1))
        oracle = np.arccos(np.clip(cos, -1, 1))
        bound = np.degrees(8 * EPS / np.sin(oracle) + 8 * EPS)
        assert (np.abs(angle - np.degrees(oracle)) <= bound).all()
        weighted = weighted_average_angle(t, p)
        assert ax.get_title() == f"{label}: w. a. {weighted:.1f}° (n = {mask.sum()})"
        assert ax.get_ylim() == (0, 180)


def test_angle_vs_norm_refuses_a_zero_prediction_naming_its_row():
    y_true, y_pred, types = _forces()
    y_pred[7] = 0
    with pytest.raises(ValueError, match=re.escape("y_pred row 7 is the zero vector")):
        plot_angle_vs_norm(y_true, y_pred, types)


@pytest.mark.parametrize("plot", [plot_force_parity, plot_angle_vs_norm])
def test_per_type_figures_validate_like_the_metrics(plot):
    y_true, y_pred, types = _forces()
    with pytest.raises(ValueError, match=r"y_pred must have shape \(n_atoms, 3\)"):
        plot(y_true, y_pred[:, :2], types)
    with pytest.raises(ValueError, match=r"one row per atom.*types: 59"):
        plot(y_true, y_pred, types[1:])


def test_distributions_are_drawn_with_their_peaks():
    from mlmlearn.plotting import plot_distributions

    rng = np.random.default_rng(0)
    grid = np.linspace(2.0, 2.8, 801)
    figure = plot_distributions({"MD": rng.normal(2.40, 0.05, 20000),
                                 "MC": rng.normal(2.33, 0.05, 20000)}, grid, 0.02,
                                xlabel="Au–S (Å)")
    (axes,) = figure.axes
    lines = [a for a in axes.get_lines() if a.get_gid() == "distribution"]
    peaks = [a for a in axes.get_lines() if a.get_gid() == "peak"]
    assert len(lines) == 2 and len(peaks) == 2
    assert peaks[0].get_xdata()[0] == pytest.approx(2.40, abs=0.01)
    assert np.trapezoid(lines[1].get_ydata(), grid) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="values\\['MD'\\]: values is empty"):
        plot_distributions({"MD": []}, grid, 0.01)


def test_pca_scatters_one_set_each():
    from mlmlearn.plotting import plot_pca

    figure = plot_pca({"training": np.zeros((5, 2)), "MC": np.ones((3, 3))})
    scatters = [c for c in figure.axes[0].collections if c.get_gid() == "frames"]
    assert [len(c.get_offsets()) for c in scatters] == [5, 3]
    with pytest.raises(ValueError, match="coordinates\\['MC'\\] has shape \\(3,\\)"):
        plot_pca({"MC": np.ones(3)})
