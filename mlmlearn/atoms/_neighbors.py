"""One neighbour list per structure and cutoff, shared by atom typing and alignment.

Every neighbour search in mlmlearn goes through :func:`neighbor_list`:
:class:`~mlmlearn.atoms.AtomicEnvironments` caches one list per structure (the
largest cutoff asked for; smaller cutoffs are read from it), and the gold-thiolate
typing, the alignment strategies of the OAMLM and
:meth:`AtomicEnvironments.neighbors <mlmlearn.atoms.AtomicEnvironments.neighbors>`
all read that cache, so they see the same neighbours. (SOAP and MBTR are computed
by dscribe, which searches neighbours itself.)

A neighbour of atom *i* within the cutoff *r* is every atom *j* — or periodic
image of *j*, including images of *i* itself — with ``|r_j + S·cell − r_i| ≤ r``.
Periodic cells use ASE's :func:`ase.neighborlist.neighbor_list`, which finds
every image within the cutoff (not only the minimum image, so cells smaller than
twice the cutoff are right); structures without periodic directions use a k-d
tree (:class:`scipy.spatial.cKDTree`), an order of magnitude faster than ASE's
cell-list for the molecules and clusters of the bundled data. Both paths compute
distances the same way, as the norm of the vector, and keep ``d ≤ cutoff``.
"""

import numpy as np

from .._optional import import_optional

__all__ = ["MissingNeighborsError", "NeighborList", "neighbor_list", "nearest_neighbors"]

#: relative widening of the cutoff handed to the search back ends, so that the final
#: ``d ≤ cutoff`` test on our own distances decides every pair near the boundary
_SLACK = 1e-9


class MissingNeighborsError(ValueError):
    """An environment lacks the neighbours a rule needs (the message names the atom)."""


class NeighborList:
    """Every atom's neighbours within ``cutoff`` Å, nearest first (a full list: i→j and j→i).

    Parameters
    ----------
    cutoff : float
        Radius (Å).
    start : ndarray of int of shape (n_atoms + 1,)
        Neighbours of atom ``i`` are the entries ``start[i]:start[i + 1]``.
    index : ndarray of int of shape (n_pairs,)
        Neighbour atom index (for a periodic image, the atom it is an image of).
    distance : ndarray of shape (n_pairs,)
        Distance (Å), non-decreasing within each atom's entries (ties by index).
    vector : ndarray of shape (n_pairs, 3)
        From the centre to the neighbour (Å), periodic image included.
    """

    __slots__ = ("cutoff", "start", "index", "distance", "vector")

    def __init__(self, cutoff, start, index, distance, vector):
        self.cutoff = float(cutoff)
        self.start, self.index, self.distance, self.vector = start, index, distance, vector

    def __len__(self):
        return len(self.start) - 1

    @property
    def counts(self):
        """Number of neighbours of each atom, shape (n_atoms,)."""
        return np.diff(self.start)

    @property
    def center(self):
        """The centre atom of each entry (the ``i`` of ``i → index``), shape (n_pairs,)."""
        return np.repeat(np.arange(len(self)), self.counts)

    def of(self, i):
        """``(index, distance, vector)`` of atom ``i``'s neighbours, nearest first."""
        a, b = self.start[i], self.start[i + 1]
        return self.index[a:b], self.distance[a:b], self.vector[a:b]

    def within(self, cutoff):
        """The same list restricted to ``cutoff ≤ self.cutoff`` (order kept)."""
        cutoff = float(cutoff)
        if cutoff > self.cutoff:
            raise ValueError(f"cutoff={cutoff} exceeds this list's cutoff {self.cutoff}")
        if cutoff == self.cutoff:
            return self
        keep = self.distance <= cutoff
        counts = np.bincount(self.center[keep], minlength=len(self))
        start = np.concatenate([[0], np.cumsum(counts)])
        return NeighborList(cutoff, start, self.index[keep], self.distance[keep], self.vector[keep])


def check_cutoff(cutoff, name="cutoff"):
    """``cutoff`` as a float, or ``ValueError`` naming it unless it is a positive finite number."""
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        value = np.nan
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}={cutoff!r} must be a positive, finite number of Å")
    return value


def neighbor_list(atoms, cutoff):
    """The full neighbour list of one structure within ``cutoff`` Å (not cached).

    Parameters
    ----------
    atoms : ase.Atoms
        Positions in Å; periodic directions follow ``atoms.pbc`` and ``atoms.cell``.
    cutoff : float
        Radius in Å (positive, finite).

    Returns
    -------
    NeighborList

    Raises
    ------
    ValueError
        For a cutoff that is not a positive finite number, or a periodic
        structure (``atoms.pbc`` true in some direction) whose periodic cell
        vectors are zero or linearly dependent (e.g. ``pbc=True`` with no cell
        set); the message names ``pbc`` and the cell vectors.
    ModuleNotFoundError
        For a periodic structure without ase (mlmlearn's ``atoms`` extra).

    Examples
    --------
    >>> from ase.build import molecule
    >>> nl = neighbor_list(molecule("CH4"), 1.2)
    >>> nl.counts.tolist()  # C has four H, each H its C
    [4, 1, 1, 1, 1]
    """
    cutoff = check_cutoff(cutoff)
    positions = np.asarray(atoms.positions, dtype=float)
    n = len(positions)
    reach = cutoff * (1.0 + _SLACK)
    if np.any(atoms.pbc):
        _check_cell(atoms)
        ase_neighborlist = import_optional(
            "ase.neighborlist", purpose="neighbor_list on a periodic structure"
        )
        i, j, vector = ase_neighborlist.neighbor_list("ijD", atoms, reach)
        vector = np.asarray(vector, dtype=float)
    elif n > 1:
        from scipy.spatial import cKDTree

        pairs = cKDTree(positions).query_pairs(reach, output_type="ndarray")
        i = np.concatenate([pairs[:, 0], pairs[:, 1]])
        j = np.concatenate([pairs[:, 1], pairs[:, 0]])
        vector = positions[j] - positions[i]
    else:
        i = j = np.empty(0, dtype=np.intp)
        vector = np.empty((0, 3))
    distance = np.sqrt(np.einsum("pk,pk->p", vector, vector))
    keep = distance <= cutoff
    i, j, distance, vector = i[keep], j[keep], distance[keep], vector[keep]
    order = np.lexsort((j, distance, i))
    i, j, distance, vector = i[order], j[order], distance[order], vector[order]
    start = np.searchsorted(i, np.arange(n + 1))
    return NeighborList(cutoff, start, j.astype(np.intp), distance, np.ascontiguousarray(vector))


def _check_cell(atoms):
    """Periodic directions need independent, non-zero cell vectors."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell, dtype=float)
    if np.linalg.matrix_rank(cell[pbc]) < pbc.sum():
        raise ValueError(
            f"pbc={pbc.tolist()} but the periodic cell vectors {cell[pbc].tolist()} are zero "
            "or linearly dependent; set the cell (Å) or switch pbc off"
        )


def nearest_neighbors(environments, n_neighbors, cutoff=None, *, name="the alignment"):
    """Vectors from each centre to its ``n_neighbors`` nearest atoms, nearest first.

    Reads the neighbour lists cached on ``environments`` (periodic images count
    as atoms).

    Parameters
    ----------
    environments : AtomicEnvironments
    n_neighbors : int
    cutoff : float or None, default=None
        Neighbours must lie within this radius (Å). ``None`` or ``inf``: no limit — the
        search radius grows until every centre has ``n_neighbors`` neighbours
        (or, without periodic directions, covers the whole structure).
    name : str
        What needs the neighbours, for the error message.

    Returns
    -------
    vectors : ndarray of shape (n_environments, n_neighbors, 3)
        Å.

    Raises
    ------
    MissingNeighborsError
        Naming the first atom (and its structure) with fewer neighbours.
    """
    m = int(n_neighbors)
    if cutoff is not None and np.isposinf(cutoff):
        cutoff = None
    out = np.zeros((len(environments), m, 3))
    atom = environments.atom_index
    for s, rows in environments.structure_rows():
        centres = atom[rows]
        if cutoff is None:
            nl = _growing_list(environments._store, s, centres, m)
        else:
            nl = environments.neighbor_list(s, cutoff)
        counts = nl.counts[centres]
        short = np.flatnonzero(counts < m)
        if short.size:
            bad = short[0]
            within = "in the structure" if cutoff is None else f"within {cutoff} Å"
            raise MissingNeighborsError(
                f"atom {int(centres[bad])} of structure {s} has {int(counts[bad])} neighbours "
                f"{within}; {name} needs {m}"
            )
        entries = nl.start[centres][:, None] + np.arange(m)
        out[rows] = nl.vector[entries]
    return out


def _growing_list(store, s, centres, m, first=4.0):
    """A cached list of structure ``s`` in which every centre has ``m`` neighbours if it can."""
    atoms = store.structures[s]
    periodic = bool(np.any(atoms.pbc))
    positions = np.asarray(atoms.positions, dtype=float)
    extent = float(np.linalg.norm(np.ptp(positions, axis=0))) if len(positions) else 0.0
    whole = extent * (1.0 + 1e-6) + 1e-6  # every pair of a non-periodic structure
    cutoff = max(first, store.largest_cutoff(s))
    if not periodic:
        cutoff = min(cutoff, whole)
    for _ in range(64):
        nl = store.neighbor_list(s, cutoff)
        if np.all(nl.counts[centres] >= m) or (not periodic and cutoff >= whole):
            return nl
        cutoff = 2.0 * cutoff if periodic else min(2.0 * cutoff, whole)
    return nl  # pragma: no cover - a periodic cell of zero volume
