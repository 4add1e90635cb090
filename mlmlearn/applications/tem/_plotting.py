"""Figures of the TEM comparison, of the kinds in thesis figures 3.3–3.4 (needs matplotlib)."""

import numpy as np

__all__ = ["plot_similarities", "plot_scores", "plot_angles", "plot_directions"]


def _axes(ax, **kwargs):
    if ax is not None:
        return ax
    from ..._optional import import_optional

    plt = import_optional("matplotlib.pyplot", purpose="the TEM figures")
    return plt.figure().add_subplot(**kwargs)


def plot_similarities(similarity, groups, *, ax=None):
    """Best CW-SSIM of every simulated image (dots) with each group's average (lines).

    ``similarity`` is one experimental image's row (n_sim,) or the mean over
    experimental images; ``groups`` labels each simulated image (e.g. isomer).
    """
    ax = _axes(ax)
    similarity, groups = np.asarray(similarity, dtype=float), np.asarray(groups)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        line = ax.plot(np.arange(len(idx)), similarity[idx], ".", label=str(g))[0]
        ax.axhline(similarity[idx].mean(), color=line.get_color())
    ax.set_xlabel("simulated image")
    ax.set_ylabel("CW-SSIM")
    ax.legend()
    return ax


def plot_scores(scores, groups=None, *, ax=None):
    """Relative scores in descending order, with the line y = 1 − x/N of a systematic comparison."""
    ax = _axes(ax)
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    n = len(scores)
    if groups is None:
        ax.plot(np.arange(n), scores[order], ".")
    else:
        groups = np.asarray(groups)[order]
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            ax.plot(idx, scores[order][idx], ".", label=str(g))
        ax.legend()
    ax.plot([0, n], [1, 0], "k--", lw=0.8)
    ax.set_xlabel("rank")
    ax.set_ylabel("relative score")
    return ax


def plot_angles(angles, *, ax=None, bins=50):
    """Polar histogram of best rotation angles (degrees)."""
    ax = _axes(ax, projection="polar")
    ax.hist(np.radians(np.ravel(angles)), bins=bins)
    return ax


def plot_directions(directions, scores, *, n_top=20, ax=None):
    """Beam directions on the unit sphere, the ``n_top`` best-scoring highlighted."""
    ax = _axes(ax, projection="3d")
    directions, scores = np.asarray(directions, dtype=float), np.asarray(scores, dtype=float)
    top = np.argsort(-scores, kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(len(scores)), top)
    ax.scatter(*directions[rest].T, s=6, c="0.7")
    ax.scatter(*directions[top].T, s=30, c="tab:red")
    ax.set_box_aspect((1, 1, 1))
    return ax
