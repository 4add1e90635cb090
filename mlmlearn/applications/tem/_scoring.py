"""Relative scoring of simulated images and orientation analysis (paper I, thesis 3.1)."""

import numpy as np
from scipy.stats import rankdata

__all__ = ["relative_scores", "top_directions"]


def relative_scores(similarity, groups=None):
    """Paper I's relative score of every simulated image, in [0, 1].

    Each experimental image ranks the N simulated images by similarity: the
    most similar gets N − 1 points, the least 0 (ties share the average).
    Each simulated image's points are summed over the experimental images and
    divided by n_exp · (N − 1). With ``groups`` (e.g. the isomer of each
    simulated image) the ranking is done within each group separately, N being
    the group size.

    When the comparison is systematic, the scores sorted in descending order
    fall close to the line y = 1 − x/N.

    Parameters
    ----------
    similarity : array-like of shape (n_exp, n_sim)
    groups : array-like of shape (n_sim,), default=None

    Returns
    -------
    scores : ndarray of shape (n_sim,)

    Examples
    --------
    >>> relative_scores([[0.9, 0.5, 0.7], [0.8, 0.6, 0.4]])
    array([1.  , 0.25, 0.25])
    """
    s = np.asarray(similarity, dtype=float)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] < 2:
        raise ValueError(f"similarity must be (n_exp, n_sim) with n_sim >= 2, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("similarity must be finite")
    if groups is None:
        points = rankdata(s, axis=1) - 1.0
        return points.sum(axis=0) / (s.shape[0] * (s.shape[1] - 1))
    groups = np.asarray(groups)
    if groups.shape != (s.shape[1],):
        raise ValueError(f"groups has shape {groups.shape}; expected ({s.shape[1]},)")
    scores = np.empty(s.shape[1])
    for g in np.unique(groups):
        columns = np.flatnonzero(groups == g)
        if columns.size < 2:
            raise ValueError(f"group {g!r} has one simulated image; ranking needs two")
        scores[columns] = relative_scores(s[:, columns])
    return scores


def top_directions(scores, directions, n_top=20):
    """Beam directions of the ``n_top`` highest-scoring simulated images, best first."""
    scores = np.asarray(scores, dtype=float)
    directions = np.asarray(directions, dtype=float)
    if directions.shape != (len(scores), 3):
        raise ValueError(f"directions has shape {directions.shape}; expected ({len(scores)}, 3)")
    order = np.argsort(-scores, kind="stable")[:n_top]
    return order, directions[order]
