"""Alignment strategies of the OAMLM: which neighbours, which orderings, which accuracy.

A strategy turns atomic environments into neighborhood point sets (centre at
the origin) and aligns input neighborhoods with reference neighborhoods,
returning for every (input, reference) pair the rotation R (reference frame →
input frame) and the alignment accuracy g (thesis eqs. 2.24–2.26).

Neighbours come from the neighbour lists that
:class:`~mlmlearn.atoms.AtomicEnvironments` caches per structure (shared with the
atom typing), so periodic structures are aligned with the vectors to the
neighbouring periodic images.
"""

import itertools
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from ..atoms._neighbors import MissingNeighborsError, nearest_neighbors
from ._superpose import best_alignments

__all__ = ["Alignment", "PermutationAlignment", "MissingNeighborsError"]

ACCURACY_CONSTRAINT = [StrOptions({"mean", "rss"})]


class Alignment(BaseEstimator):
    """Base of the alignment strategies.

    A strategy answers two questions. :meth:`neighborhoods` turns atomic
    environments into point sets centred on each atom (row 0 is the atom
    itself, at the origin), and :meth:`align` superposes every reference
    neighborhood on every input neighborhood, returning the rotations
    R_ij (reference frame → input frame) and the alignment accuracies g_ij of
    eqs. (2.24)–(2.26).

    The default :meth:`align` tries the neighbour orderings of
    :meth:`orderings` (only the given order unless overridden) with the
    compiled QCP kernel and keeps the ordering of best accuracy; orderings that
    tie with it within rounding (a symmetric input or reference) count alike,
    R being the mean of their rotations. A custom
    strategy implements ``neighborhoods`` (returning an array of shape
    (n, 1 + M, 3), or any object with ``len`` and integer-array/slice
    indexing that its own ``align`` understands) and, if needed, ``align``;
    it declares ``_parameter_constraints`` for its parameters, which the
    public methods validate as scikit-learn estimators do in ``fit``.

    Parameters of subclasses are the strategy's hyperparameters, so
    ``OAMLM(alignment=...)`` clones and sweeps them like any estimator's
    (``alignment__n_neighbors``, ``alignment__accuracy``).
    """

    _parameter_constraints: dict = {}
    accuracy = "mean"

    def neighborhoods(self, environments):
        """Point sets (n, 1 + M, 3) of the environments, centre first at the origin (Å)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement neighborhoods")

    def orderings(self, n_neighbors):
        """Neighbour orderings tried for a reference (tuples over range(n_neighbors))."""
        return [tuple(range(n_neighbors))]

    def align(self, P, S):
        """Best rotation and accuracy of every (input, reference) pair.

        Parameters
        ----------
        P : ndarray of shape (n_inputs, 1 + M, 3)
        S : ndarray of shape (n_references, 1 + M, 3)

        Returns
        -------
        R : ndarray of shape (n_inputs, n_references, 3, 3)
            Rotations taking reference coordinates to the input's frame: the best
            ordering's, or, where several orderings fit equally well (their
            accuracies within twice the rounding bound of the best one's,
            :func:`~mlmlearn.oamlm._superpose.best_alignments`), the mean of their
            rotations. That mean is not a rotation (‖R‖₂ ≤ 1, ``R t̂`` shorter
            than t̂ unless the tied rotations agree on t̂); the OAMLM uses R only
            through R t̂, which is linear in R, so it is the mean of the tied
            orderings' rotated directions, and rotating the input rotates it
            exactly, whichever ordering rounding would have favoured. Without a
            tie (any structure without an exact symmetry) R is the best
            ordering's rotation, to the last bit.
        g : ndarray of shape (n_inputs, n_references)
            Alignment accuracy (Å) of the best ordering: eq. (2.25) for
            ``accuracy="mean"``, eq. (2.26) for ``"rss"``.

        Raises
        ------
        ValueError
            For point sets of different or wrong shapes, or an invalid parameter
            (:class:`~sklearn.utils._param_validation.InvalidParameterError`).
        """
        self._validate_params()
        _check_accuracy(self.accuracy)
        P, S = np.asarray(P, dtype=float), np.asarray(S, dtype=float)
        if P.ndim != 3 or S.ndim != 3 or P.shape[1:] != S.shape[1:] or P.shape[2] != 3:
            raise ValueError(
                f"P and S must be (n, 1 + M, 3) neighborhoods of one size; got {P.shape}, "
                f"{S.shape}"
            )
        m = P.shape[1] - 1
        orders = np.array([(0, *(1 + np.asarray(o, dtype=int))) for o in self.orderings(m)])
        R, g, _ = best_alignments(P, S, orders, rss=self.accuracy == "rss")
        return R, g

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # atomic environments, not arrays
        tags.requires_fit = False  # a strategy has parameters, nothing learnt
        return tags


def _check_accuracy(accuracy):
    # for custom strategies that keep the class default or set it without constraints
    if accuracy not in ("mean", "rss"):
        raise ValueError(f"accuracy={accuracy!r} must be 'mean' (eq. 2.25) or 'rss' (eq. 2.26)")


class PermutationAlignment(Alignment):
    """Paper III's scheme: the ``n_neighbors`` nearest atoms, every ordering tried.

    Parameters
    ----------
    n_neighbors : int, default=4
        Neighbours per environment (M ≥ 2); M! orderings are tried per pair.
    cutoff : float or None, default=5.0
        Neighbours are searched within this radius (Å); fewer than
        ``n_neighbors`` raises :class:`~mlmlearn.atoms.MissingNeighborsError`.
        ``None`` (or ``inf``): the nearest atoms at any distance.
    accuracy : {"mean", "rss"}, default="mean"
        Eq. (2.25) or eq. (2.26).

    Examples
    --------
    >>> from ase.build import molecule
    >>> from mlmlearn.atoms import AtomicEnvironments
    >>> env = AtomicEnvironments(molecule("CH4"), species="C")
    >>> P = PermutationAlignment(4).neighborhoods(env)
    >>> P.shape  # the carbon and its four hydrogens
    (1, 5, 3)
    >>> R, g = PermutationAlignment(4).align(P, P)
    >>> bool(g[0, 0] < 1e-9)
    True
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 2, None, closed="left")],
        "cutoff": [Interval(Real, 0, None, closed="neither"), None],
        "accuracy": ACCURACY_CONSTRAINT,
    }

    def __init__(self, n_neighbors=4, *, cutoff=5.0, accuracy="mean"):
        self.n_neighbors = n_neighbors
        self.cutoff = cutoff
        self.accuracy = accuracy

    def orderings(self, n_neighbors):
        """Every ordering of the ``n_neighbors`` neighbours."""
        return list(itertools.permutations(range(n_neighbors)))

    def neighborhoods(self, environments):
        """The centre and its ``n_neighbors`` nearest atoms, nearest first.

        Parameters
        ----------
        environments : AtomicEnvironments

        Returns
        -------
        P : ndarray of shape (n_environments, 1 + n_neighbors, 3)
            Å, centre at the origin (row 0).

        Raises
        ------
        MissingNeighborsError
            Naming the first atom (and structure) with too few neighbours.
        """
        self._validate_params()
        vectors = nearest_neighbors(
            environments,
            self.n_neighbors,
            self.cutoff,
            name=f"PermutationAlignment(n_neighbors={self.n_neighbors})",
        )
        return np.concatenate([np.zeros((len(vectors), 1, 3)), vectors], axis=1)
