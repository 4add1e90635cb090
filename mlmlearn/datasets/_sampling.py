"""Frame sampling of MD trajectories."""

import numbers

import numpy as np

__all__ = ["logarithmic_indices"]


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
