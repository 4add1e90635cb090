"""Alignment strategies of the OAMLM: which neighbours, which orderings, which accuracy.

A strategy turns atomic environments into neighbourhood point sets (centre at
the origin) and aligns input neighbourhoods with reference neighbourhoods,
returning for every (input, reference) pair the rotation R (reference frame →
input frame) and the alignment accuracy g (thesis eqs. 2.24–2.26).
"""

import itertools

import numpy as np
from sklearn.base import BaseEstimator

from ._superpose import qcp

__all__ = ["Alignment", "PermutationAlignment", "MissingNeighboursError"]


class MissingNeighboursError(ValueError):
    """An environment lacks the neighbours its alignment rule needs."""


def _accuracy(P, S, R, form):
    """g of eq. (2.25) ("mean") or g' of eq. (2.26) ("rss") for each pair."""
    residual = P - np.einsum("bij,bkj->bki", R, S)
    n_points = P.shape[1]
    if form == "mean":
        return np.linalg.norm(residual, axis=2).sum(axis=1) / n_points
    return np.sqrt((residual**2).sum(axis=(1, 2))) / n_points


class Alignment(BaseEstimator):
    """Base of the alignment strategies.

    Subclasses implement ``neighbourhoods(environments)`` → array (n, 1 + M, 3)
    of neighbour positions relative to each centre (row 0 is the centre, all
    zeros) and may override ``orderings(M)`` (the neighbour permutations tried,
    default: the given order only). :meth:`align` then aligns every input with
    every reference under each ordering of the reference and keeps the best.
    """

    accuracy = "mean"

    def orderings(self, n_neighbours):
        return [tuple(range(n_neighbours))]

    def align(self, P, S, *, chunk_pairs=2_000_000):
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
            Alignment accuracy (Å) of the best ordering.
        """
        if self.accuracy not in ("mean", "rss"):
            raise ValueError(f"accuracy={self.accuracy!r} must be 'mean' (2.25) or 'rss' (2.26)")
        n, k = len(P), len(S)
        m = P.shape[1] - 1
        R_best = np.empty((n, k, 3, 3))
        g_best = np.full((n, k), np.inf)
        orders = [(0, *(1 + np.array(o))) for o in self.orderings(m)]
        rows = max(1, chunk_pairs // max(k * len(orders), 1))
        for start in range(0, n, rows):
            p = P[start : start + rows]
            b = len(p)
            pp = np.broadcast_to(p[:, None], (b, k, m + 1, 3)).reshape(b * k, m + 1, 3)
            for order in orders:
                ss = np.broadcast_to(S[None, :, order], (b, k, m + 1, 3)).reshape(b * k, m + 1, 3)
                R, _ = qcp(ss, pp)
                g = _accuracy(pp, ss, R, self.accuracy).reshape(b, k)
                better = g < g_best[start : start + b]
                g_best[start : start + b][better] = g[better]
                R_best[start : start + b][better] = R.reshape(b, k, 3, 3)[better]
        return R_best, g_best


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
        m = int(self.n_neighbors)
        if m < 2:
            raise ValueError(f"n_neighbors={self.n_neighbors!r} must be at least 2")
        out = np.zeros((len(environments), m + 1, 3))
        structure, atom = environments.structure_index, environments.atom_index
        for s in np.unique(structure):
            atoms = environments.structures[s]
            if np.any(atoms.pbc):
                raise ValueError(
                    f"structure {s} is periodic; PermutationAlignment handles clusters and "
                    "molecules (no periodic images)"
                )
            rows = np.flatnonzero(structure == s)
            centres = atom[rows]
            vectors = atoms.positions[None, :, :] - atoms.positions[centres][:, None, :]
            dist = np.linalg.norm(vectors, axis=2)
            dist[np.arange(len(rows)), centres] = np.inf
            order = np.argsort(dist, axis=1, kind="stable")[:, :m]
            nearest = np.take_along_axis(dist, order, axis=1)
            lacking = np.flatnonzero(nearest[:, -1] > self.cutoff)
            if lacking.size:
                i = int(centres[lacking[0]])
                found = int((nearest[lacking[0]] <= self.cutoff).sum())
                raise MissingNeighboursError(
                    f"atom {i} of structure {s} has {found} neighbours within "
                    f"{self.cutoff} Å; PermutationAlignment(n_neighbors={m}) needs {m}"
                )
            out[rows, 1:] = np.take_along_axis(vectors, order[:, :, None], axis=1)
        return out
