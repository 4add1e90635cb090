"""Frame sampling of MD trajectories and of the bundled data sets' training frames."""

import numbers

import numpy as np

__all__ = ["logarithmic_indices", "training_mask"]


def logarithmic_indices(n_frames, n_samples):
    """``n_samples`` distinct frame indices, logarithmically denser towards the end.

    Paper IV samples 1000 configurations "logarithmically" from heating runs so
    that the hot end, where the structure changes most, is sampled densely.
    Here the distance of the k-th sample from the last frame grows
    geometrically: offsets ``o_k ≈ geomspace(1, n_frames, n_samples)``,
    nudged up where rounding would repeat an index, and frame ``n_frames - o_k``
    is taken.

    Parameters
    ----------
    n_frames : int
        Number of frames in the trajectory.
    n_samples : int
        Number of frames to take, at most ``n_frames``.

    Returns
    -------
    indices : ndarray of int, shape (n_samples,)
        Sorted, distinct, in ``[0, n_frames)``; always contains the last frame
        and, for ``n_samples > 1``, the first.

    Examples
    --------
    >>> logarithmic_indices(100, 8)
    array([ 0, 48, 73, 86, 93, 96, 98, 99])
    """
    for name, value in (("n_frames", n_frames), ("n_samples", n_samples)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if n_samples > n_frames:
        raise ValueError(f"n_samples={n_samples} exceeds n_frames={n_frames}")
    offsets = np.rint(np.geomspace(1, n_frames, n_samples)).astype(np.int64)
    # force strictly increasing offsets; the geometric curve lies below the
    # chord, so the nudged values never pass n_frames
    offsets = np.maximum.accumulate(offsets - np.arange(n_samples)) + np.arange(n_samples)
    offsets = np.minimum(offsets, n_frames)
    return np.sort(n_frames - offsets)


def training_mask(data, exclude=None, *, stride=1):
    """The frames of a bundled data set a potential is trained on.

    Every ``stride``-th MD frame and every ``stride``-th relaxation step,
    counted within each kind (neighbouring frames differ little), plus the
    last step of every relaxation path (its minimum, the smallest forces the
    data hold) and every active-learning frame (each one is there because a
    potential was wrong on it). Relaxation paths that did not converge
    (``status`` ``"diverged"`` or ``"max_steps"``) are left out: GFN2-xTB pulls
    nearly relaxed Au6–Au8 rings into a collapse of their gold atoms (see the
    data README), and a potential trained on the onset of that collapse took
    held-out Au5 rings into it under BFGS (up to 11 eV above the GFN2-xTB
    minimum); without those paths it did not.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        As returned by :func:`load_gold_thiolate_rings` or :func:`load_au25`
        (any ``kind``): per-frame ``kind``, ``run`` and ``status``.
    exclude : array-like of bool, shape (n_frames,), default=None
        Frames never to train on, e.g. a held-out run or ring size.
    stride : int, default=1
        Keep every ``stride``-th frame of each kind.

    Returns
    -------
    mask : ndarray of bool, shape (n_frames,)

    Raises
    ------
    ValueError
        If ``stride`` is not a positive integer or ``exclude`` has the wrong length.

    Examples
    --------
    Training frames of a potential tested on the held-out Au5 600 K run:

    >>> from mlmlearn.datasets import load_gold_thiolate_rings
    >>> data = load_gold_thiolate_rings(kind="all")
    >>> held = data.source_run == "Au5(SCH3)5_600K"
    >>> train = training_mask(data, held, stride=4)
    >>> sorted(set(data.kind[train].tolist()))
    ['active', 'md', 'relaxation']
    >>> bool(np.any(train & held))
    False
    """
    if not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"stride={stride!r} must be a positive integer")
    kind, run = np.asarray(data.kind), np.asarray(data.run)
    n = len(kind)
    exclude = np.zeros(n, dtype=bool) if exclude is None else np.asarray(exclude, dtype=bool)
    if exclude.shape != (n,):
        raise ValueError(f"exclude has shape {exclude.shape}, the data have {n} frames")
    order = np.zeros(n, dtype=np.int64)  # each frame's position within its kind
    for k in np.unique(kind):
        order[kind == k] = np.arange(np.sum(kind == k))
    relax = kind == "relaxation"
    last = relax & np.r_[run[1:] != run[:-1], True]
    usable = np.isin(np.asarray(data.status), ["md", "converged", "active"])
    return ~exclude & usable & ((order % stride == 0) | last | (kind == "active"))
