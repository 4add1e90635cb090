"""Removal of the net force and net torque that per-atom force predictions carry."""

import numpy as np

__all__ = ["remove_net_force"]


def remove_net_force(forces, positions=None):
    """Project out the rigid-body part of a structure's forces.

    Forces predicted atom by atom are not the gradient of one energy: summed over
    an isolated structure they leave a spurious net force and, about its centre,
    a net torque, which push a whole optimization or MD run adrift. This removes
    them by the orthogonal (least-squares) projection of the 3n-vector of forces
    onto the complement of the rigid motions:

    * net force: F_i ← F_i − (1/n) Σ_k F_k;
    * net torque (when ``positions`` are given): with r_i the positions relative to
      their centroid, τ = Σ r_i × F_i and the unit-mass inertia tensor
      I = Σ (‖r_i‖² 1 − r_i r_iᵀ), F_i ← F_i − (I⁺ τ) × r_i. Translations and
      rotations about the centroid are orthogonal, so the two steps are one
      projection: the result has zero net force and zero net torque, and it is the
      closest such force set to the input (Σ ‖ΔF_i‖² minimal).

    Parameters
    ----------
    forces : array-like of shape (n_atoms, 3)
        Forces of one structure (eV/Å).
    positions : array-like of shape (n_atoms, 3), default=None
        Positions (Å) for the torque; ``None`` removes the net force only (what a
        periodic cell allows).

    Returns
    -------
    forces : ndarray of shape (n_atoms, 3)
        A new array.

    Raises
    ------
    ValueError
        For arrays that are not of shape (n_atoms, 3), of different lengths, or
        not finite.

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 0]])
    >>> R = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    >>> G = remove_net_force(F, R)
    >>> bool(np.allclose(G.sum(axis=0), 0)), bool(np.allclose(np.cross(R - R.mean(0), G).sum(0), 0))
    (True, True)
    """
    F = _as_vectors(forces, "forces")
    out = F - F.mean(axis=0) if len(F) else F.copy()
    if positions is None:
        return out
    R = _as_vectors(positions, "positions")
    if len(R) != len(F):
        raise ValueError(f"positions has {len(R)} rows, forces {len(F)}; they must match")
    if len(F) < 2:
        return out
    r = R - R.mean(axis=0)
    torque = np.cross(r, out).sum(axis=0)
    inertia = np.eye(3) * np.einsum("ij,ij->", r, r) - r.T @ r
    # pinv: a linear structure has no torque about its axis (a zero eigenvalue)
    omega = np.linalg.pinv(inertia, rcond=1e-10, hermitian=True) @ torque
    return out - np.cross(omega, r)


def _as_vectors(array, name):
    array = np.asarray(array, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n_atoms, 3); got {array.shape}")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"{name} must be finite; row {row} is {array[row]}")
    return array
