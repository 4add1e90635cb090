"""A short-range repulsive baseline: ZBL screened nuclear repulsion, switched off at bond lengths.

A distance regression knows only the distances its training data visited. Where no
training structure has been, such as two atoms much closer than a bond, its energy can
fall without bound, and an optimizer or MD run that finds such a hole falls into it. The
baseline makes close contacts cost what physics says they cost: the universal ZBL
repulsion [1]_, the Coulomb repulsion of two nuclei screened by their electrons. It is
multiplied by a smooth switch that vanishes at and beyond the closest distance at which
the training data hold each pair of elements, so the learnt energy is not disturbed where
there are data, and every contact closer than the data pays the repulsion.

References
----------
.. [1] J. F. Ziegler, J. P. Biersack and U. Littmark, *The Stopping and Range of Ions
   in Solids* (Pergamon, 1985), eq. 2-59 and 2-60.
"""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval

from .._optional import import_optional

__all__ = ["ZBL"]

#: e²/(4πε₀) in eV·Å.
COULOMB = 14.399645
_ZBL_A = np.array([0.18175, 0.50986, 0.28022, 0.02817])
_ZBL_B = np.array([3.19980, 0.94229, 0.40290, 0.20162])


class ZBL(BaseEstimator):
    """ZBL screened nuclear repulsion, switched off at the closest distances of the data.

    ``E = ½ Σᵢ Σⱼ≠ᵢ V(rᵢⱼ) s(rᵢⱼ)`` with the universal ZBL potential

    ``V(r) = Zᵢ Zⱼ e² / (4πε₀ r) · Σₘ Aₘ exp(−bₘ r / a)``,
    ``a = 0.46850 Å / (Zᵢ^0.23 + Zⱼ^0.23)``

    and a quintic switch ``s`` that is 1 below ``inner·r_out``, 0 above ``r_out``
    and twice continuously differentiable. ``r_out`` of a pair of elements is the
    closest distance at which the structures given to :meth:`fit` hold that pair
    (a training set's contacts: bonded C–H near 0.9 Å, non-bonded H–H near 1.7 Å),
    so the baseline is zero on the training data and walls off every closer
    contact, where a distance regression has no data and may dig a hole. A pair
    of elements of the data that never comes within 4 Å (methyl carbons of
    different thiolates in the rings) gets 4 Å. Elements absent from the data,
    or an unfitted ZBL, use ``outer`` times the sum of the covalent radii
    (``ase.data.covalent_radii``). ``V`` and ``V·s`` fall
    monotonically with ``r``, so the baseline only ever pushes atoms apart.

    Parameters
    ----------
    inner : float, default=0.5
        The full ZBL repulsion acts below ``inner·r_out``.
    outer : float, default=0.6
        ``r_out`` of a pair without data, in units of the sum of covalent radii
        (bonded atoms sit at 0.8–1.1 of it).

    Attributes
    ----------
    r_out_ : dict of (int, int) to float
        After :meth:`fit`: the closest distance (Å) of each pair of atomic
        numbers (smaller number first) in the data, at most 4 Å.

    Examples
    --------
    >>> from ase import Atoms
    >>> zbl = ZBL()
    >>> e, f = zbl.energy_forces(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.15]]))
    >>> round(float(e.sum()), 2), bool(f[0, 2] < 0 < f[1, 2])
    (52.18, True)
    >>> e, f = zbl.energy_forces(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    >>> float(e.sum()), float(abs(f).max())
    (0.0, 0.0)
    >>> zbl = ZBL().fit([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
    >>> zbl.r_out_
    {(1, 1): 0.74}
    >>> water = Atoms("H2O", positions=[[0, 0, 0], [1.5, 0, 0], [0.75, 0.6, 0]])
    >>> {pair: round(r, 2) for pair, r in ZBL().fit([water]).r_out_.items()}
    {(1, 1): 1.5, (1, 8): 0.96, (8, 8): 4.0}
    """

    _parameter_constraints: dict = {
        "inner": [Interval(Real, 0, 1, closed="left")],
        "outer": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, inner=0.5, outer=0.6):
        self.inner = inner
        self.outer = outer

    def fit(self, X, y=None):
        """Record the closest distance of every pair of elements in the structures ``X``.

        Parameters
        ----------
        X : sequence of ase.Atoms
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        neighbor_list = import_optional("ase.neighborlist", purpose="ZBL").neighbor_list
        closest = {}
        for atoms in X:
            if len(atoms) < 2:
                continue
            i, j, r, _ = _pairs(atoms, _SEARCH, neighbor_list)
            if not len(r):
                continue
            zi, zj = np.minimum(atoms.numbers[i], atoms.numbers[j]), np.maximum(
                atoms.numbers[i], atoms.numbers[j])
            key = zi.astype(np.int64) * 1000 + zj
            order = np.lexsort((r, key))
            first = np.ones(len(order), dtype=bool)
            first[1:] = key[order][1:] != key[order][:-1]
            for k, d in zip(key[order][first], r[order][first], strict=True):
                pair = (int(k // 1000), int(k % 1000))
                closest[pair] = min(closest.get(pair, np.inf), float(d))
        # a pair of elements of the data that never comes within the search radius has
        # no contact in the data at all: every contact closer than that radius is new
        present = sorted({int(z) for atoms in X for z in np.unique(atoms.numbers)})
        for a_, za in enumerate(present):
            for zb in present[a_:]:
                closest.setdefault((za, zb), _SEARCH)
        self.r_out_ = {pair: min(d, _SEARCH) for pair, d in sorted(closest.items())}
        return self

    def _r_out(self, zi, zj):
        radii = import_optional("ase.data", purpose="ZBL").covalent_radii
        default = self.outer * (radii[zi] + radii[zj])
        table = getattr(self, "r_out_", None)
        if not table:
            return default
        lo, hi = np.minimum(zi, zj), np.maximum(zi, zj)
        return np.array([table.get((int(a), int(b)), d) for a, b, d in zip(lo, hi, default,
                                                                           strict=True)])

    def cutoff(self, numbers):
        """The largest distance (Å) at which two atoms of ``numbers`` can still repel."""
        radii = import_optional("ase.data", purpose="ZBL").covalent_radii
        reach = 2.0 * float(radii[np.unique(numbers)].max()) * self.outer
        table = getattr(self, "r_out_", None)
        if table:
            reach = max(reach, max(table.values()))
        return reach

    def energy_forces(self, atoms):
        """Per-atom repulsion energies and forces of one structure.

        Parameters
        ----------
        atoms : ase.Atoms
            Positions in Å; periodic boundaries as ``atoms.pbc`` says.

        Returns
        -------
        energies : ndarray of shape (n_atoms,)
            Per-atom energies in eV (each pair's energy split equally).
        forces : ndarray of shape (n_atoms, 3)
            ``−∂E/∂r`` in eV/Å.
        """
        self._validate_params()
        neighbor_list = import_optional("ase.neighborlist", purpose="ZBL").neighbor_list
        n = len(atoms)
        energies = np.zeros(n)
        forces = np.zeros((n, 3))
        if n < 2:
            return energies, forces
        i, j, r, D = _pairs(atoms, self.cutoff(atoms.numbers), neighbor_list)
        Z = atoms.numbers
        r_out = self._r_out(Z[i], Z[j])
        keep = r < r_out
        if not keep.any():
            return energies, forces
        i, j, r, D, r_out = i[keep], j[keep], r[keep], D[keep], r_out[keep]
        v, dv = pair_energy(Z[i], Z[j], r)
        s, ds = switch(r, self.inner * r_out, r_out)
        e = v * s
        de = dv * s + v * ds  # dE/dr of the pair
        np.add.at(energies, i, 0.5 * e)
        # each pair appears as (i, j) and (j, i); D = r_j − r_i, so −∂E/∂r_i = E'(r) D / r
        np.add.at(forces, i, (de / r)[:, None] * D)
        return energies, forces


#: How far :meth:`ZBL.fit` looks for the closest contact of each pair (Å).
_SEARCH = 4.0


def _pairs(atoms, cutoff, neighbor_list):
    """Ordered pairs (i, j) closer than ``cutoff``: indices, distances and vectors r_j − r_i.

    Clusters of up to a few hundred atoms take all pair distances at once (a 30-atom
    ring: 30 µs, against 4 ms for ASE's neighbour list); periodic cells take ASE's.
    """
    if atoms.pbc.any() or len(atoms) > 500:
        return neighbor_list("ijdD", atoms, cutoff)
    x = atoms.positions
    D = x[None, :, :] - x[:, None, :]
    r = np.sqrt(np.einsum("ijk,ijk->ij", D, D))
    np.fill_diagonal(r, np.inf)
    i, j = np.nonzero(r < cutoff)
    return i, j, r[i, j], D[i, j]


def pair_energy(zi, zj, r):
    """ZBL pair energy ``V(r)`` (eV) and ``dV/dr`` (eV/Å) for atomic numbers ``zi``, ``zj``."""
    a = 0.46850 / (np.power(zi, 0.23) + np.power(zj, 0.23))
    x = r / a
    terms = _ZBL_A * np.exp(-np.multiply.outer(x, _ZBL_B))
    phi = terms.sum(axis=-1)
    dphi = -(terms * _ZBL_B).sum(axis=-1) / a
    prefactor = COULOMB * zi * zj
    v = prefactor * phi / r
    dv = prefactor * (dphi / r - phi / r**2)
    return v, dv


def switch(r, r_in, r_out):
    """Quintic switch: 1 below ``r_in``, 0 above ``r_out``, C² between; and its derivative."""
    t = np.clip((r - r_in) / (r_out - r_in), 0.0, 1.0)
    s = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    ds = -30.0 * t**2 * (1.0 - t) ** 2 / (r_out - r_in)
    return s, ds
