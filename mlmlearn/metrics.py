"""Error measures of the papers: the force-weighted average angle, and its scorer."""

import numpy as np
from sklearn.metrics import make_scorer

__all__ = ["weighted_average_angle", "angle_scorer"]


def weighted_average_angle(y_true, y_pred):
    """Mean angle (degrees) between true and predicted directions, weighted by ``|y_true|²``.

    Paper IV's measure of direction predictions: small forces, whose
    direction is ill-defined, count little.

    Parameters
    ----------
    y_true : array-like of shape (n_samples, 3)
        Reference forces (any norm; eV/Å).
    y_pred : array-like of shape (n_samples, 3)
        Predicted directions (normalised here).

    Returns
    -------
    angle : float
        Degrees.

    Examples
    --------
    >>> weighted_average_angle([[2, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 0, 0]])
    18.0
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.ndim != 2 or y_true.shape[1] != 3 or y_pred.shape != y_true.shape:
        raise ValueError(
            f"y_true and y_pred must both be (n_samples, 3); got {y_true.shape}, {y_pred.shape}"
        )
    weight = (y_true**2).sum(axis=1)
    norm_pred = np.linalg.norm(y_pred, axis=1)
    if np.any(norm_pred == 0) or weight.sum() == 0:
        raise ValueError("y_pred needs non-zero vectors and y_true at least one non-zero force")
    cos = (y_true * y_pred).sum(axis=1) / (np.sqrt(weight) * norm_pred + (weight == 0))
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return float((weight * angle).sum() / weight.sum())


#: ``scoring=angle_scorer`` in model selection (greater is better: minus the angle).
angle_scorer = make_scorer(weighted_average_angle, greater_is_better=False)
