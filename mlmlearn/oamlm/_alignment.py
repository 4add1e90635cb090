"""Alignment strategies of the OAMLM: which neighbours, which orderings, which accuracy.

A strategy turns atomic environments into neighbourhood point sets (centre at
the origin) and aligns input neighbourhoods with reference neighbourhoods,
returning for every (input, reference) pair the rotation R (reference frame →
input frame) and the alignment accuracy g (thesis eqs. 2.24–2.26).
"""

import itertools

import numpy as np
from sklearn.base import BaseEstimator

from ._superpose import best_alignments

__all__ = ["Alignment", "PermutationAlignment", "MissingNeighboursError", "nearest_neighbours"]


class MissingNeighboursError(ValueError):
    """An environment lacks the neighbours its alignment rule needs."""


class Alignment(BaseEstimator):
    """Base of the alignment strategies.

    A strategy answers two questions. :meth:`neighbourhoods` turns atomic
    environments into point sets centred on each atom (row 0 is the atom
    itself, at the origin), and :meth:`align` superposes every reference
    neighbourhood on every input neighbourhood, returning the rotations
    R_ij (reference frame → input frame) and the alignment accuracies g_ij of
    eqs. (2.24)–(2.26).

    The default :meth:`align` tries the neighbour orderings of
    :meth:`orderings` (only the given order unless overridden) with the
    compiled QCP kernel and keeps the ordering of best accuracy. A custom
    strategy implements ``neighbourhoods`` (returning an array of shape
    (n, 1 + M, 3), or any object with ``len`` and integer-array/slice
    indexing that its own ``align`` understands) and, if needed, ``align``.

    Parameters of subclasses are the strategy's hyperparameters, so
    ``OAMLM(alignment=...)`` clones and sweeps them like any estimator's
    (``alignment__n_neighbors``, ``alignment__accuracy``).
    """

    accuracy = "mean"

    def orderings(self, n_neighbours):
        """Neighbour orderings tried for a reference (tuples over range(n_neighbours))."""
        return [tuple(range(n_neighbours))]

    def align(self, P, S):
        """Best rotation and accuracy of every (input, reference) pair.

        Parameters
        ----------
        P : ndarray of shape (n_inputs, 1 + M, 3)
        S : ndarray of shape (n_references, 1 + M, 3)

        Returns
        -------
        R : ndarray of shape (n_inputs, n_references, 3, 3)
            Rotations taking reference coordinates to the input's frame.
        g : ndarray of shape (n_inputs, n_references)
            Alignment accuracy (Å) of the best ordering: eq. (2.25) for
            ``accuracy="mean"``, eq. (2.26) for ``"rss"``.
        """
        _check_accuracy(self.accuracy)
        P, S = np.asarray(P, dtype=float), np.asarray(S, dtype=float)
        if P.ndim != 3 or S.ndim != 3 or P.shape[1:] != S.shape[1:] or P.shape[2] != 3:
            raise ValueError(
                f"P and S must be (n, 1 + M, 3) neighbourhoods of one size; got {P.shape}, "
                f"{S.shape}"
            )
        m = P.shape[1] - 1
        orders = np.array([(0, *(1 + np.asarray(o, dtype=int))) for o in self.orderings(m)])
        R, g, _ = best_alignments(P, S, orders, rss=self.accuracy == "rss")
        return R, g


def _check_accuracy(accuracy):
    if accuracy not in ("mean", "rss"):
        raise ValueError(f"accuracy={accuracy!r} must be 'mean' (eq. 2.25) or 'rss' (eq. 2.26)")


def clusters(environments, name):
    """``(index, ase.Atoms, rows)`` of each structure the environments come from.

    The alignment rules use neighbours within a cluster or molecule; a periodic
    structure raises, naming ``name`` (the strategy or rule).
    """
    structure = environments.structure_index
    for s in np.unique(structure):
        atoms = environments.structures[s]
        if np.any(atoms.pbc):
            raise ValueError(
                f"structure {s} is periodic; {name} handles clusters and molecules "
                "(no periodic images)"
            )
        yield s, atoms, np.flatnonzero(structure == s)


def nearest_neighbours(environments, n_neighbors, cutoff, *, name="the alignment"):
    """Vectors (n, n_neighbors, 3) from each centre to its nearest atoms, nearest first.

    Distances within each (non-periodic) structure are computed at once for
    all of its centres. An environment with fewer than ``n_neighbors`` atoms
    within ``cutoff`` raises :class:`MissingNeighboursError`.
    """
    m = int(n_neighbors)
    out = np.zeros((len(environments), m, 3))
    atom = environments.atom_index
    for s, atoms, rows in clusters(environments, name):
        centres = atom[rows]
        vectors = atoms.positions[None, :, :] - atoms.positions[centres][:, None, :]
        dist = np.linalg.norm(vectors, axis=2)
        dist[np.arange(len(rows)), centres] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :m]
        nearest = np.take_along_axis(dist, order, axis=1)
        if nearest.shape[1] < m or np.any(nearest[:, -1] > cutoff):
            bad = 0 if nearest.shape[1] < m else int(np.flatnonzero(nearest[:, -1] > cutoff)[0])
            found = int((nearest[bad] <= cutoff).sum())
            raise MissingNeighboursError(
                f"atom {int(centres[bad])} of structure {s} has {found} neighbours within "
                f"{cutoff} Å; {name} needs {m}"
            )
        out[rows] = np.take_along_axis(vectors, order[:, :, None], axis=1)
    return out


class PermutationAlignment(Alignment):
    """Paper III's scheme: the ``n_neighbors`` nearest atoms, every ordering tried.

    Parameters
    ----------
    n_neighbors : int, default=4
        Neighbours per environment (M); M! orderings are tried per pair.
    cutoff : float, default=5.0
        Neighbours are searched within this radius (Å); fewer than
        ``n_neighbors`` raises :class:`MissingNeighboursError`.
    accuracy : {"mean", "rss"}, default="mean"
        Eq. (2.25) or eq. (2.26).
    """

    def __init__(self, n_neighbors=4, *, cutoff=5.0, accuracy="mean"):
        self.n_neighbors = n_neighbors
        self.cutoff = cutoff
        self.accuracy = accuracy

    def orderings(self, n_neighbours):
        return list(itertools.permutations(range(n_neighbours)))

    def neighbourhoods(self, environments):
        if int(self.n_neighbors) < 2:
            raise ValueError(f"n_neighbors={self.n_neighbors!r} must be at least 2")
        _check_accuracy(self.accuracy)
        vectors = nearest_neighbours(
            environments,
            self.n_neighbors,
            self.cutoff,
            name=f"PermutationAlignment(n_neighbors={self.n_neighbors})",
        )
        return np.concatenate([np.zeros((len(vectors), 1, 3)), vectors], axis=1)
