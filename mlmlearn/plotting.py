"""Figures of force-field results of the kinds paper IV shows (needs the ``plot`` extra).

Every function takes plain arrays — energies from any optimizer, forces from any
model — and returns the matplotlib :class:`~matplotlib.figure.Figure` it drew
on. Pass ``ax=`` to draw into axes of your own (one per atom type for the
per-type figures); otherwise a new figure is made with :mod:`matplotlib.pyplot`.
matplotlib is imported when a function is called, so ``import mlmlearn.plotting``
works on a core install.

- :func:`plot_energy_trace`: energy along an optimization per scheme, Hessian
  resets marked with crosses (paper IV fig. 10; fig. 6 (a)–(c)).
- :func:`plot_force_parity`: predicted against reference ``|F|`` per atom type,
  with the norm RMSE (paper IV fig. 3).
- :func:`plot_angle_vs_norm`: angle between predicted and reference force
  against reference ``|F|`` per atom type, with the force-weighted average angle
  (paper IV fig. 4).

- :func:`plot_distributions`: Gaussian-smoothed bond-length or angle distributions of
  several runs, peaks marked (paper II, figs. 3–4 and S1–S2).
- :func:`plot_pca`: principal components of descriptors, one scatter per set of frames
  (paper II fig. 2).

The drawn artists carry ids (``Artist.get_gid()``) for scripts that restyle
them: ``"energy"``, ``"reset"`` and ``"reference"`` lines in the energy trace;
``"atoms"`` (the scatter) and ``"diagonal"`` in the per-type panels.
"""

import math

import numpy as np

from ._optional import import_optional
from .metrics import _angles, _check_forces, _require_nonzero, _type_rows, force_norm_rmse

__all__ = ["plot_energy_trace", "plot_force_parity", "plot_angle_vs_norm", "plot_distributions",
           "plot_pca"]

_PURPOSE = "the force-field figures of mlmlearn.plotting"


def _pyplot():
    return import_optional("matplotlib.pyplot", "plot", purpose=_PURPOSE)


# ------------------------------------------------------------------ energy traces
def _is_single(value):
    """True for one series of numbers (a 1-D array or a flat sequence)."""
    if isinstance(value, np.ndarray):
        return value.ndim <= 1
    value = list(value)
    return all(item is not None and np.ndim(item) == 0 for item in value)


def _series(value, name, scheme):
    array = np.asarray(value, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(
            f"{name} of scheme {scheme} must be a non-empty 1-D sequence; got shape {array.shape}"
        )
    return array


def _per_scheme(value, name, n_schemes, single):
    """``value`` (None, one series shared by all schemes, or one per scheme) per scheme."""
    if value is None:
        return [None] * n_schemes
    if single or _is_single(value):
        return [value] * n_schemes
    value = list(value)
    if len(value) != n_schemes:
        raise ValueError(
            f"{name} must give one sequence per scheme: {n_schemes} schemes, got {len(value)}"
        )
    return value


def plot_energy_trace(
    energies, *, steps=None, resets=None, labels=None, reference_minimum=None, ax=None
):
    """Energy along an optimization, one curve per scheme, Hessian resets as crosses.

    Paper IV fig. 10: reference (DFT, here e.g. GFN-xTB) single points along ML
    optimizations run with and without Hessian resets.

    Parameters
    ----------
    energies : array-like of shape (n_steps,), or a sequence of them
        Energies in eV, one series (one scheme) or several (of any lengths; a 2-D
        array is one scheme per row). NaN leaves a gap (e.g. a failed single
        point).
    steps : array-like of shape (n_steps,), or one per scheme, default=None
        Optimization step of each energy; by default 0, 1, … (0 = the start
        structure). One series is shared by every scheme.
    resets : array-like of int, or one per scheme, default=None
        Steps (values of ``steps``) at which the Hessian approximation was
        reset; each is marked with a cross on its curve. One series is shared by
        every scheme; give ``None`` or ``[]`` for a scheme without resets.
    labels : str or sequence of str, default=None
        Name of each scheme, for the legend.
    reference_minimum : float, default=None
        Energy (eV) of the reference minimum; when given, the curves show
        ``E − reference_minimum`` and a dashed line marks 0.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw into; by default a new figure.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For an empty or non-1-D series, an infinite energy, ``steps`` of another
        length than its energies, a reset step that is not among the scheme's
        steps, or a number of ``labels`` other than of schemes (each naming the
        scheme and the value).
    ModuleNotFoundError
        Without matplotlib, naming the ``plot`` extra.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig = plot_energy_trace([[-3.0, -3.4, -3.5, -3.45], [-3.0, -3.3, -3.6, -3.7]],
    ...                         resets=[None, [2]], labels=["BFGS", "BFGS, resets"],
    ...                         reference_minimum=-3.8)
    >>> [line.get_gid() for line in fig.axes[0].lines]
    ['reference', 'energy', 'energy', 'reset']
    """
    single = _is_single(energies)
    rows = [energies] if single else list(energies)
    if len(rows) == 0:
        raise ValueError("energies holds no scheme")
    schemes = [_series(e, "energies", k) for k, e in enumerate(rows)]
    n = len(schemes)
    if labels is not None:
        labels = [labels] if isinstance(labels, str) else list(labels)
        if len(labels) != n:
            raise ValueError(f"labels must name each of the {n} schemes; got {len(labels)}")
    names = labels if labels is not None else list(range(n))
    all_steps = _per_scheme(steps, "steps", n, single)
    all_resets = _per_scheme(resets, "resets", n, single)
    shift = 0.0 if reference_minimum is None else float(reference_minimum)
    if not math.isfinite(shift):
        raise ValueError(f"reference_minimum must be finite; got {reference_minimum}")

    data = []
    for k, energy in enumerate(schemes):
        scheme = repr(names[k])
        infinite = np.isinf(energy)
        if infinite.any():
            i = int(np.flatnonzero(infinite)[0])
            raise ValueError(f"energies of scheme {scheme}: entry {i} is {energy[i]}")
        if all_steps[k] is None:
            x = np.arange(len(energy))
        else:
            x = _series(all_steps[k], "steps", scheme)
            if len(x) != len(energy):
                raise ValueError(
                    f"steps of scheme {scheme} has {len(x)} entries for {len(energy)} energies"
                )
        marks = np.asarray([] if all_resets[k] is None else all_resets[k], dtype=float).ravel()
        where = []
        for step in marks:
            hit = np.flatnonzero(x == step)
            if len(hit) == 0:
                raise ValueError(
                    f"resets of scheme {scheme}: step {step:g} is not among its "
                    f"steps ({x[0]:g} … {x[-1]:g})"
                )
            where.append(hit[0])
        data.append((x, energy - shift, np.asarray(where, dtype=int)))

    if ax is None:
        ax = _pyplot().figure().add_subplot()
    if reference_minimum is not None:
        ax.axhline(0.0, color="0.5", ls="--", lw=0.8, gid="reference", label="reference minimum")
    reset_label = "Hessian reset"
    for k, (x, y, where) in enumerate(data):
        (line,) = ax.plot(
            x, y, gid="energy", label=str(labels[k]) if labels is not None else f"_scheme{k}"
        )
        if len(where):
            ax.plot(
                x[where],
                y[where],
                ls="none",
                marker="x",
                ms=8,
                mew=1.5,
                color=line.get_color(),
                gid="reset",
                label=reset_label,
            )
            reset_label = "_reset"  # one legend entry for every scheme's crosses
    ax.set_xlabel("optimization step")
    ax.set_ylabel("energy (eV)" if reference_minimum is None else "E − E_min (eV)")
    if labels is not None or reference_minimum is not None or reset_label != "Hessian reset":
        ax.legend()
    return ax.figure


# ------------------------------------------------------------------ per-type panels
def _panels(labels, ax):
    """One axes per type: ``ax`` (checked) or a new grid with no spare axes."""
    n = len(labels)
    if ax is not None:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != n:
            raise ValueError(f"ax: {n} atom type(s) {labels} need {n} axes; got {len(axes)}")
        return axes[0].figure, axes
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    figure = _pyplot().figure(figsize=(3.6 * ncols, 3.4 * nrows), layout="constrained")
    axes = [figure.add_subplot(nrows, ncols, k + 1) for k in range(n)]
    return figure, axes


def _per_type(y_true, y_pred, types, labels):
    y_true, y_pred = _check_forces(y_true, y_pred)
    types, labels = _type_rows(y_true, y_pred, types, labels)
    return y_true, y_pred, types, labels


def plot_force_parity(y_true, y_pred, types, *, labels=None, ax=None):
    """Predicted against reference force length, one panel per atom type (paper IV fig. 3).

    Each panel shows one dot per atom, the diagonal ``|F_pred| = |F_ref|``, and
    the type's norm RMSE (:func:`mlmlearn.metrics.force_norm_rmse`) in its title.

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å.
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces, eV/Å (a zero prediction is a dot at ``|F_pred| = 0``).
    types : array-like of shape (n_atoms,)
        Atom type of each row.
    labels : sequence, default=None
        The types to draw, in this order; by default every type present, in order
        of first appearance (as :func:`mlmlearn.metrics.force_table`). A listed
        type without atoms gets an empty panel.
    ax : sequence of matplotlib.axes.Axes, default=None
        One axes per type; by default a new figure with a grid of up to three
        panels per row.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        As :func:`mlmlearn.metrics.force_table` for the arrays and types, and if
        ``ax`` holds another number of axes than there are types.
    ModuleNotFoundError
        Without matplotlib, naming the ``plot`` extra.
    """
    y_true, y_pred, types, labels = _per_type(y_true, y_pred, types, labels)
    figure, axes = _panels(labels, ax)
    x_all, y_all = np.linalg.norm(y_true, axis=1), np.linalg.norm(y_pred, axis=1)
    for label, panel in zip(labels, axes, strict=True):
        mask = types == label
        x, y = x_all[mask], y_all[mask]
        panel.scatter(x, y, s=6, alpha=0.5, linewidths=0, gid="atoms")
        top = 1.05 * max(x.max(initial=0.0), y.max(initial=0.0)) or 1.0
        panel.plot([0, top], [0, top], color="0.3", lw=0.8, gid="diagonal")
        panel.set_xlim(0, top)
        panel.set_ylim(0, top)
        panel.set_aspect("equal")
        if mask.any():
            rmse = force_norm_rmse(y_true[mask], y_pred[mask])
            panel.set_title(f"{label}: |F| RMSE {rmse:.3f} eV/Å (n = {mask.sum()})")
        else:
            panel.set_title(f"{label}: no atoms")
        panel.set_xlabel("reference |F| (eV/Å)")
        panel.set_ylabel("predicted |F| (eV/Å)")
    return figure


def plot_angle_vs_norm(y_true, y_pred, types, *, labels=None, ax=None):
    """Angle to the reference force against its length, one panel per atom type (paper IV fig. 4).

    Small forces have ill-defined directions, so their angles spread; the title
    gives the force-weighted average angle
    (:func:`mlmlearn.metrics.weighted_average_angle`, "w. a." in the paper).

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å. Atoms with a zero reference force have no angle
        and are left out (their weight in the average is zero too).
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces or directions; no row may be zero.
    types : array-like of shape (n_atoms,)
        Atom type of each row.
    labels : sequence, default=None
        As :func:`plot_force_parity`.
    ax : sequence of matplotlib.axes.Axes, default=None
        As :func:`plot_force_parity`.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        As :func:`plot_force_parity`, and for a zero row of ``y_pred`` (named).
    ModuleNotFoundError
        Without matplotlib, naming the ``plot`` extra.
    """
    y_true, y_pred, types, labels = _per_type(y_true, y_pred, types, labels)
    _require_nonzero(np.linalg.norm(y_pred, axis=1), "y_pred", "the predicted direction")
    figure, axes = _panels(labels, ax)
    weight_all = (y_true**2).sum(axis=1)  # |F_ref|², as weighted_average_angle
    norm_all = np.sqrt(weight_all)
    angle_all = np.degrees(_angles(y_true, y_pred))
    for label, panel in zip(labels, axes, strict=True):
        mask = (types == label) & (weight_all > 0)
        x, angle, weight = norm_all[mask], angle_all[mask], weight_all[mask]
        panel.scatter(x, angle, s=6, alpha=0.5, linewidths=0, gid="atoms")
        panel.set_xlim(0, 1.05 * x.max(initial=0.0) or 1.0)
        panel.set_ylim(0, 180)
        if mask.any():
            weighted = float((weight * angle).sum() / weight.sum())
            panel.set_title(f"{label}: w. a. {weighted:.1f}° (n = {mask.sum()})")
        else:
            panel.set_title(f"{label}: no atoms")
        panel.set_xlabel("reference |F| (eV/Å)")
        panel.set_ylabel("angle to reference (°)")
    return figure


# ------------------------------------------------------------------ Monte Carlo analysis
def _single_axes(ax):
    if ax is not None:
        return ax.figure, ax
    figure = _pyplot().figure(figsize=(5.0, 3.6), layout="constrained")
    return figure, figure.add_subplot()


def plot_distributions(values, grid, sigma, *, xlabel=None, ax=None):
    """Smoothed distributions of several runs on one axes, each peak marked (paper II).

    Parameters
    ----------
    values : dict of str to array-like
        Per run (its label), the bond lengths or angles
        (:func:`mlmlearn.applications.analysis.bond_lengths`, ``bond_angles``).
    grid : array-like of shape (m,)
    sigma : float
        Gaussian smoothing in the values' units (paper II: 1.75° for angles).
    xlabel : str, default=None
    ax : matplotlib.axes.Axes, default=None

    Returns
    -------
    figure : matplotlib.figure.Figure
        One line per run (gid ``"distribution"``) and a dotted line at its peak
        (gid ``"peak"``), labelled with the peak position and width.

    Raises
    ------
    ValueError
        As :func:`mlmlearn.applications.analysis.smoothed_distribution`, naming the run.
    """
    from .applications.analysis import peak, smoothed_distribution

    figure, axes = _single_axes(ax)
    grid = np.asarray(grid, dtype=float)
    for label, run in values.items():
        try:
            density = smoothed_distribution(run, grid, sigma)
        except ValueError as error:
            raise ValueError(f"values[{label!r}]: {error}") from None
        position, width = peak(grid, density)
        (line,) = axes.plot(grid, density, gid="distribution",
                            label=f"{label}: {position:.3g} (FWHM {width:.2g})")
        axes.axvline(position, color=line.get_color(), ls=":", lw=0.8, gid="peak")
    axes.set_xlabel(xlabel or "value")
    axes.set_ylabel("density")
    axes.legend(fontsize="small")
    return figure


def plot_pca(coordinates, *, ax=None):
    """Descriptor principal components of several sets of frames (paper II fig. 2).

    Parameters
    ----------
    coordinates : dict of str to array-like of shape (n_frames, >= 2)
        Per set (its label), its coordinates
        (:func:`mlmlearn.applications.analysis.descriptor_pca`); the first two
        components are drawn.
    ax : matplotlib.axes.Axes, default=None

    Returns
    -------
    figure : matplotlib.figure.Figure
        One scatter per set (gid ``"frames"``).

    Raises
    ------
    ValueError
        If a set is not 2-D with at least two columns (the set is named).
    """
    figure, axes = _single_axes(ax)
    for label, xy in coordinates.items():
        xy = np.asarray(xy, dtype=float)
        if xy.ndim != 2 or xy.shape[1] < 2:
            raise ValueError(f"coordinates[{label!r}] has shape {xy.shape}; it needs "
                             "(n_frames, 2) or more columns")
        axes.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.6, linewidths=0, label=label,
                     gid="frames")
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.legend(fontsize="small")
    return figure
