"""Error measures of force vectors: RMSE, MAE, angles, cosine similarity, the per-type table.

Every function here takes reference forces ``y_true`` and predictions ``y_pred``
as arrays of shape (n_atoms, 3) in eV/Å, one row per atom, and refuses anything
else with a ``ValueError`` that names the argument (and the row, for a
non-finite value or an undefined direction).

Conventions
-----------
- **Vector errors.** :func:`force_rmse` and :func:`force_mae` measure the error
  of each atom as the length of its error vector, ``|F_pred − F_ref|``, the
  convention of machine-learned potentials that report "force RMSE" per atom.
  Codes that average over the 3n Cartesian components instead report
  ``force_rmse / √3``; see each function's Notes.
- **Norms.** :func:`force_norm_rmse` compares only the lengths ``|F|``: the
  quantity an EMLM norm model predicts (paper IV, fig. 3).
- **Directions.** :func:`weighted_average_angle` weighs each atom's angle by
  ``|F_ref|²`` (paper IV, fig. 4); :func:`cosine_similarity` is the unweighted
  cosine of the same angle.
- **Tables.** :func:`force_table` collects all of them per atom type in a
  :class:`ForceTable`, which prints as an aligned text table and converts to a
  dict of columns (``pandas.DataFrame(table.to_dict())`` if pandas is at hand;
  mlmlearn does not need it).

The scorers (``*_scorer``) serve ``GridSearchCV(scoring=...)`` and
``cross_validate``: the force scorers with any estimator whose ``predict``
returns (n, 3) force vectors, or a potential's ``predict_forces``
(:class:`~mlmlearn.forcefield.EMLMPotential`, scored against the forces stored
in ``X``); :func:`energy_rmse_scorer` with a potential's energies. Errors are
negated (greater is better).
"""

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_consistent_length

__all__ = [
    "force_rmse",
    "force_mae",
    "force_norm_rmse",
    "cosine_similarity",
    "weighted_average_angle",
    "force_table",
    "ForceTable",
    "force_rmse_scorer",
    "force_mae_scorer",
    "cosine_similarity_scorer",
    "angle_scorer",
    "energy_rmse",
    "energy_rmse_scorer",
]


# ------------------------------------------------------------------ validation
def _check_vectors(value, name):
    """``value`` as a float array (n, 3) of finite numbers, or a ValueError naming ``name``."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric force vectors of shape (n_atoms, 3): {exc}"
        ) from exc
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape (n_atoms, 3) (one force vector in eV/Å per atom); "
            f"got shape {array.shape}"
        )
    if len(array) == 0:
        raise ValueError(f"{name} holds no atoms (shape {array.shape})")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has a non-finite value in row {row}: {array[row].tolist()} "
            f"({int(bad.sum())} such row(s))"
        )
    return array


def _check_lengths(**named):
    """One row per atom in every argument, via scikit-learn's check, naming them on failure."""
    try:
        check_consistent_length(*named.values())
    except ValueError as exc:
        lengths = ", ".join(f"{name}: {len(value)}" for name, value in named.items())
        names = " and ".join(named)
        raise ValueError(f"{names} must have one row per atom; got {lengths}") from exc


def _check_forces(y_true, y_pred):
    y_true = _check_vectors(y_true, "y_true")
    y_pred = _check_vectors(y_pred, "y_pred")
    _check_lengths(y_true=y_true, y_pred=y_pred)
    return y_true, y_pred


def _require_nonzero(norms, name, what):
    zero = norms == 0
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise ValueError(
            f"{name} row {row} is the zero vector: {what} is undefined there "
            f"({int(zero.sum())} zero row(s))"
        )


def _angles(y_true, y_pred):
    """Angle (radians) between the rows of two validated arrays; 0 where either is zero.

    ``atan2(|a × b|, a · b)`` is accurate to a few ulps at every angle, where
    ``arccos`` of the cosine loses half the digits near 0 and π (an angle of
    1e-9 rad has a cosine that rounds to 1).
    """
    cross = np.linalg.norm(np.cross(y_true, y_pred), axis=1)
    dot = np.einsum("ij,ij->i", y_true, y_pred)
    return np.arctan2(cross, dot)


# ------------------------------------------------------------------ vector errors
def force_rmse(y_true, y_pred):
    r"""Root mean square of the per-atom force error vector, in eV/Å.

    .. math:: \mathrm{RMSE} = \sqrt{\tfrac{1}{n} \textstyle\sum_i
              \lVert \mathbf F_i^{\mathrm{pred}} - \mathbf F_i^{\mathrm{ref}} \rVert^2}

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å.
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces, eV/Å.

    Returns
    -------
    rmse : float
        eV/Å.

    Raises
    ------
    ValueError
        If an argument is not (n_atoms, 3), holds a non-finite value (the row is
        named), or the two differ in length.

    Notes
    -----
    The mean is over atoms of the squared error *vector* length, the convention
    of machine-learned potentials. Codes that average over the 3n Cartesian
    components (ASE-style "per component" RMSE) report this value divided by
    √3.

    Examples
    --------
    >>> force_rmse([[1, 0, 0], [0, 0, 0]], [[1, 3, 4], [0, 0, 0]])  # errors 5 and 0
    3.5355339059327378
    """
    y_true, y_pred = _check_forces(y_true, y_pred)
    return float(np.sqrt(np.mean(((y_pred - y_true) ** 2).sum(axis=1))))


def force_mae(y_true, y_pred):
    r"""Mean length of the per-atom force error vector, in eV/Å.

    .. math:: \mathrm{MAE} = \tfrac{1}{n} \textstyle\sum_i
              \lVert \mathbf F_i^{\mathrm{pred}} - \mathbf F_i^{\mathrm{ref}} \rVert

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å.
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces, eV/Å.

    Returns
    -------
    mae : float
        eV/Å.

    Raises
    ------
    ValueError
        As :func:`force_rmse`.

    Notes
    -----
    Vector lengths, like :func:`force_rmse` (so ``force_mae ≤ force_rmse``).
    The per-component MAE, mean of ``|ΔF_x|``, ``|ΔF_y|``, ``|ΔF_z|`` over 3n
    components, has no fixed ratio to it: it lies between ``force_mae / 3`` and
    ``force_mae / √3``.

    Examples
    --------
    >>> force_mae([[1, 0, 0], [0, 0, 0]], [[1, 3, 4], [0, 0, 0]])
    2.5
    """
    y_true, y_pred = _check_forces(y_true, y_pred)
    return float(np.mean(np.linalg.norm(y_pred - y_true, axis=1)))


def force_norm_rmse(y_true, y_pred):
    r"""RMSE of the force lengths, ``sqrt(mean (|F_pred| − |F_ref|)²)``, in eV/Å.

    Paper IV's measure of norm models (EMLM; its fig. 3). Directions do not
    enter: a prediction of the right length pointing anywhere scores 0.

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å.
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces, eV/Å.

    Returns
    -------
    rmse : float
        eV/Å.

    Raises
    ------
    ValueError
        As :func:`force_rmse`.

    Examples
    --------
    >>> force_norm_rmse([[3, 4, 0], [1, 0, 0]], [[0, 0, -5], [0, 2, 0]])
    0.7071067811865476
    """
    y_true, y_pred = _check_forces(y_true, y_pred)
    diff = np.linalg.norm(y_pred, axis=1) - np.linalg.norm(y_true, axis=1)
    return float(np.sqrt(np.mean(diff**2)))


# ------------------------------------------------------------------ directions
def cosine_similarity(y_true, y_pred, *, per_atom=False):
    """Cosine of the angle between reference and predicted force of each atom.

    Row-wise, unlike :func:`sklearn.metrics.pairwise.cosine_similarity`, which
    compares every row with every other.

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å (any non-zero length).
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces or directions (any non-zero length).
    per_atom : bool, default=False
        Return the cosine of every atom instead of their mean.

    Returns
    -------
    cosine : float or ndarray of shape (n_atoms,)
        The unweighted mean over atoms in [-1, 1], or each atom's cosine.

    Raises
    ------
    ValueError
        As :func:`force_rmse`, and for a zero vector in either argument, whose
        direction is undefined (the argument and the row are named).

    See Also
    --------
    weighted_average_angle : the same angles, weighted by ``|F_ref|²``.

    Examples
    --------
    >>> cosine_similarity([[2, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 0, 0]], per_atom=True)
    array([1., 0.])
    >>> cosine_similarity([[2, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 0, 0]])
    0.5
    """
    y_true, y_pred = _check_forces(y_true, y_pred)
    norm_true = np.linalg.norm(y_true, axis=1)
    norm_pred = np.linalg.norm(y_pred, axis=1)
    _require_nonzero(norm_true, "y_true", "the cosine similarity")
    _require_nonzero(norm_pred, "y_pred", "the cosine similarity")
    # a · b / (|a| |b|) is accurate to a few ulps in absolute terms (unlike the angle
    # from its arccos); the clip only removes rounding beyond ±1
    dot = np.einsum("ij,ij->i", y_true, y_pred)
    cosine = np.clip(dot / (norm_true * norm_pred), -1.0, 1.0)
    return cosine if per_atom else float(cosine.mean())


def weighted_average_angle(y_true, y_pred):
    """Mean angle (degrees) between true and predicted directions, weighted by ``|y_true|²``.

    Paper IV's measure of direction predictions: small forces, whose
    direction is ill-defined, count little; a zero reference force counts
    nothing.

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces (any norm; eV/Å).
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces or directions (only their direction enters).

    Returns
    -------
    angle : float
        Degrees, in [0, 180].

    Raises
    ------
    ValueError
        As :func:`force_rmse`; for a zero row of ``y_pred`` (named), whose
        direction is undefined; and if every reference force is zero.

    Notes
    -----
    Each angle is ``atan2(|a × b|, a · b)``, accurate to a few ulps at every
    angle (``arccos`` of the cosine cannot resolve angles below ~1e-8 rad).

    Examples
    --------
    >>> weighted_average_angle([[2, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 0, 0]])
    18.0
    """
    y_true, y_pred = _check_forces(y_true, y_pred)
    _require_nonzero(np.linalg.norm(y_pred, axis=1), "y_pred", "the predicted direction")
    weight = (y_true**2).sum(axis=1)
    if weight.sum() == 0:
        raise ValueError("y_true: every reference force is zero, so no angle has a weight")
    angle = np.degrees(_angles(y_true, y_pred))
    return float((weight * angle).sum() / weight.sum())


# ------------------------------------------------------------------ the per-type table
def _type_rows(y_true, y_pred, types, labels):
    """Validated ``types`` as an array and the row labels, in order of first appearance."""
    types = np.asarray(types)
    if types.ndim != 1:
        raise ValueError(f"types must be one label per atom, shape (n_atoms,); got {types.shape}")
    _check_lengths(y_true=y_true, y_pred=y_pred, types=types)
    if labels is None:
        _, first = np.unique(types, return_index=True)
        labels = [types[i].item() for i in np.sort(first)]
    else:
        labels = [np.asarray(label).item() for label in labels]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels lists a type twice: {labels}")
    if "all" in labels:
        raise ValueError("'all' is the table's row of every atom and cannot be a type label")
    return types, labels


@dataclass(frozen=True, eq=False)
class ForceTable:
    """Force errors per atom type and for all atoms, as paper IV's figures 3–4 report them.

    Made by :func:`force_table`. Each field is one column; row ``k`` is
    ``types[k]``, the last row is ``"all"``. A type listed in ``labels`` but
    absent from the data has count 0 and NaN errors.

    Attributes
    ----------
    types : tuple of str
        Row labels, the last one ``"all"``.
    count : ndarray of int, shape (n_rows,)
        Atoms of the type.
    norm_rmse : ndarray of shape (n_rows,)
        :func:`force_norm_rmse`, eV/Å.
    weighted_angle : ndarray of shape (n_rows,)
        :func:`weighted_average_angle`, degrees (NaN if every reference force of
        the type is zero).
    rmse : ndarray of shape (n_rows,)
        :func:`force_rmse` (vector errors), eV/Å.
    mae : ndarray of shape (n_rows,)
        :func:`force_mae` (vector errors), eV/Å.

    Notes
    -----
    ``print(table)`` shows an aligned text table; ``table.to_dict()`` is a dict
    of columns (``pandas.DataFrame(table.to_dict())``), ``table.as_rows()`` a
    list of tuples in :attr:`columns` order, ``table.row("S")`` one row as a
    dict.
    """

    #: Column names, in the order of :meth:`as_rows` and the printed table.
    columns = ("type", "count", "norm_rmse", "weighted_angle", "rmse", "mae")
    _headers = ("type", "n", "|F| RMSE (eV/Å)", "angle (°)", "RMSE (eV/Å)", "MAE (eV/Å)")

    types: tuple
    count: np.ndarray
    norm_rmse: np.ndarray
    weighted_angle: np.ndarray
    rmse: np.ndarray
    mae: np.ndarray

    def to_dict(self):
        """Columns as ``{name: list}`` (plain Python numbers), in :attr:`columns` order."""
        columns = zip(self.columns, self._columns(), strict=True)
        return {name: list(column) for name, column in columns}

    def as_rows(self):
        """Rows as tuples ``(type, count, norm_rmse, weighted_angle, rmse, mae)``."""
        return list(zip(*self._columns(), strict=True))

    def row(self, label):
        """One row as a dict of :attr:`columns`; ``label`` a type or ``"all"``.

        Raises
        ------
        KeyError
            If ``label`` is not a row, naming the rows there are.
        """
        if label not in self.types:
            raise KeyError(f"no row {label!r}; the rows are {list(self.types)}")
        return dict(zip(self.columns, self.as_rows()[self.types.index(label)], strict=True))

    def _columns(self):
        numbers = [self.norm_rmse, self.weighted_angle, self.rmse, self.mae]
        return [list(self.types), [int(c) for c in self.count]] + [
            [float(v) for v in column] for column in numbers
        ]

    def __str__(self):
        types, count, *numbers = self._columns()
        formats = (".3f", ".1f", ".3f", ".3f")  # eV/Å to meV/Å, degrees to 0.1°
        cells = [[str(t) for t in types], [str(c) for c in count]]
        for spec, column in zip(formats, numbers, strict=True):
            cells.append([format(v, spec) for v in column])
        widths = [
            max(len(h), *(len(c) for c in column))
            for h, column in zip(self._headers, cells, strict=True)
        ]

        def line(values):
            padded = [v.rjust(w) for v, w in zip(values, widths, strict=True)]
            return "  ".join([values[0].ljust(widths[0]), *padded[1:]])

        rows = [line(self._headers), line(["-" * w for w in widths])]
        rows += [line([col[k] for col in cells]) for k in range(len(types))]
        return "\n".join(rows)

    def _repr_pretty_(self, printer, cycle):  # IPython/Jupyter show the text table
        printer.text(str(self))


def force_table(y_true, y_pred, types, *, labels=None):
    """Per-type error table of force predictions: paper IV's figures 3–4 in numbers.

    Parameters
    ----------
    y_true : array-like of shape (n_atoms, 3)
        Reference forces, eV/Å.
    y_pred : array-like of shape (n_atoms, 3)
        Predicted forces, eV/Å (``|F| · v̂`` of a norm and a direction model).
    types : array-like of shape (n_atoms,)
        Atom type of each row (e.g. from
        :meth:`mlmlearn.atoms.AtomicEnvironments.gold_thiolate_types`, or elements).
    labels : sequence, default=None
        The types to report, in this order; by default every type present, in
        order of first appearance. The ``"all"`` row always covers every atom.

    Returns
    -------
    table : ForceTable
        Per type and for all atoms: count, norm RMSE (eV/Å), force-weighted
        average angle (degrees), vector RMSE and MAE (eV/Å).

    Raises
    ------
    ValueError
        As :func:`force_rmse`; for a zero row of ``y_pred`` (named), whose angle
        is undefined; for ``types`` of the wrong shape or length, a repeated
        label, or a type called ``"all"``.

    Examples
    --------
    >>> table = force_table([[1, 0, 0], [0, 2, 0], [0, 0, 1]],
    ...                     [[1, 0, 0], [0, 1, 0], [1, 0, 0]], ["S", "H", "H"])
    >>> print(table)
    type  n  |F| RMSE (eV/Å)  angle (°)  RMSE (eV/Å)  MAE (eV/Å)
    ----  -  ---------------  ---------  -----------  ----------
    S     1            0.000        0.0        0.000       0.000
    H     2            0.707       18.0        1.225       1.207
    all   3            0.577       15.0        1.000       0.805
    >>> table.row("H")["weighted_angle"]
    18.0
    """
    y_true, y_pred = _check_forces(y_true, y_pred)
    types, labels = _type_rows(y_true, y_pred, types, labels)
    _require_nonzero(np.linalg.norm(y_pred, axis=1), "y_pred", "the predicted direction")

    def errors(mask):
        t, p = y_true[mask], y_pred[mask]
        if len(t) == 0:
            return 0, np.nan, np.nan, np.nan, np.nan
        angle = weighted_average_angle(t, p) if (t**2).sum() > 0 else np.nan
        return len(t), force_norm_rmse(t, p), angle, force_rmse(t, p), force_mae(t, p)

    rows = [errors(types == label) for label in labels] + [errors(slice(None))]
    count, *numbers = (np.array(column) for column in zip(*rows, strict=True))
    return ForceTable(tuple(labels) + ("all",), count.astype(int), *numbers)


# ------------------------------------------------------------------ energies
def energy_rmse(y_true, y_pred, *, n_atoms=None):
    """Root-mean-square energy error, per structure or per atom.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_structures,)
        Energies in eV.
    n_atoms : array-like of shape (n_structures,), default=None
        Atoms of each structure: the error of each structure is divided by it
        (eV/atom), the convention for comparing structures of different sizes.

    Returns
    -------
    rmse : float
        eV, or eV/atom with ``n_atoms``.

    Raises
    ------
    ValueError
        If the lengths differ or a value is not finite (naming the argument).
    """
    named = {"y_true": y_true, "y_pred": y_pred}
    if n_atoms is not None:
        named["n_atoms"] = n_atoms
    arrays = {}
    for name, value in named.items():
        a = np.asarray(value, dtype=float).reshape(-1)
        if not np.isfinite(a).all():
            i = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ValueError(f"{name}[{i}] is {a[i]}")
        arrays[name] = a
    _check_lengths(**arrays)
    err = arrays["y_pred"] - arrays["y_true"]
    if n_atoms is not None:
        if np.any(arrays["n_atoms"] <= 0):
            raise ValueError("n_atoms must be positive")
        err = err / arrays["n_atoms"]
    return float(np.sqrt(np.mean(err**2)))


# ------------------------------------------------------------------ scorers
def _reference_forces(X):
    from .atoms import AtomicEnvironments

    return (X if isinstance(X, AtomicEnvironments) else AtomicEnvironments(list(X))).forces


class _ForceScorer:
    """A force scorer for force models and potentials alike.

    An estimator with ``predict_forces`` (a potential, whose ``predict`` gives
    energies) is scored on ``predict_forces(X)`` against the forces stored in
    ``X``'s structures; any other on ``predict(X)`` against ``y`` (or, if
    ``y`` is None, the forces of ``X``).
    """

    def __init__(self, metric, sign):
        self._metric, self._sign = metric, sign

    def __call__(self, estimator, X, y=None, sample_weight=None):
        if hasattr(estimator, "predict_forces"):
            return self._sign * self._metric(_reference_forces(X), estimator.predict_forces(X))
        y_true = _reference_forces(X) if y is None else y
        return self._sign * self._metric(y_true, estimator.predict(X))

    def __repr__(self):
        sign = "" if self._sign > 0 else "-"
        return f"{sign}{self._metric.__name__} scorer"


def energy_rmse_scorer(estimator, X, y=None):
    """Minus the per-atom energy RMSE (eV/atom) of a potential on structures ``X``.

    ``scoring=energy_rmse_scorer`` (greater is better). The reference is ``y``,
    else the energies stored in ``X``'s structures.
    """
    from .atoms import AtomicEnvironments

    env = X if isinstance(X, AtomicEnvironments) else AtomicEnvironments(list(X))
    y_true = env.structure_energies if y is None else y
    n_atoms = [len(a) for a in env.structures]
    return -energy_rmse(y_true, estimator.predict(list(env.structures)), n_atoms=n_atoms)


#: ``scoring=force_rmse_scorer``: minus :func:`force_rmse` (greater is better). Scores
#: ``predict_forces`` of a potential, ``predict`` of a force model.
force_rmse_scorer = _ForceScorer(force_rmse, -1)

#: ``scoring=force_mae_scorer``: minus :func:`force_mae` (greater is better).
force_mae_scorer = _ForceScorer(force_mae, -1)

#: ``scoring=cosine_similarity_scorer``: the mean :func:`cosine_similarity`.
cosine_similarity_scorer = _ForceScorer(cosine_similarity, 1)

#: ``scoring=angle_scorer`` in model selection (greater is better: minus the angle).
angle_scorer = _ForceScorer(weighted_average_angle, -1)
