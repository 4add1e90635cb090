"""Trial moves of Metropolis Monte Carlo: the moving parts of a structure and their proposals.

A move set turns a structure into *parts*, each a group of atoms that moves together
(:meth:`MoveSet.parts`); a part proposes new positions for its atoms from the current
ones, one step size and a random generator (:meth:`Part.propose`). Every proposal here
is symmetric (the reverse move is proposed with the same probability density) and
volume-preserving, so the Metropolis rule (thesis eq. 2.34) samples the Boltzmann
distribution over the coordinates the parts move.

Paper II's set for gold-thiolate clusters (thesis section 2.5, fig. 2.4) is
:class:`GoldThiolateMoves`; :class:`AtomMoves` displaces every atom on its own.
"""

import numpy as np

__all__ = [
    "AtomMoves",
    "Displacement",
    "GoldThiolateMoves",
    "MethylMove",
    "MoveSet",
    "Part",
    "StructureNotRecognizedError",
    "SulfurMove",
]

#: Paper II's broken-bond limits (Å), used to find the thiolates' bonds.
S_C_MAX = 2.2
C_H_MAX = 1.4


class StructureNotRecognizedError(ValueError):
    """A move set cannot split the structure into its moving parts (the message names the
    atom and what is missing)."""


def random_displacement(step_size, rng):
    """A displacement uniform in the ball of radius ``step_size`` (Å), shape (3,)."""
    while True:  # rejection from the cube: the ball fills 52 % of it
        d = rng.uniform(-1.0, 1.0, size=3)
        if d @ d <= 1.0:
            return step_size * d


def rotation_between(u, v):
    """The rotation matrix of least angle that turns unit vector ``u`` into unit vector ``v``.

    Rodrigues' formula about ``u × v``; its inverse is ``rotation_between(v, u)``.
    """
    axis = np.cross(u, v)
    s = np.linalg.norm(axis)
    c = float(u @ v)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        # antiparallel: half a turn about any axis perpendicular to u
        p = np.eye(3)[np.argmin(np.abs(u))]
        k = np.cross(u, p)
        k /= np.linalg.norm(k)
        return 2.0 * np.outer(k, k) - np.eye(3)
    k = axis / s
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


def rotation_about(axis, angle):
    """The rotation matrix by ``angle`` (rad) about unit vector ``axis``."""
    K = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


class Part:
    """A group of atoms that moves together.

    Attributes
    ----------
    indices : ndarray of int
        The atoms it moves; :meth:`propose` returns their new positions in this order.
    label : str
        What it is (``"Au 3"``, ``"S 27"``, ``"CH3 45"``), for messages and logs.
    """

    indices: np.ndarray
    label: str

    def propose(self, positions, step_size, rng):
        """New positions of ``indices``, shape (len(indices), 3), Å.

        Parameters
        ----------
        positions : ndarray of shape (n_atoms, 3)
            Current positions (not changed).
        step_size : float
            Å.
        rng : numpy.random.Generator
        """
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.label})"


class Displacement(Part):
    """One atom displaced uniformly within a ball of radius ``step_size``."""

    def __init__(self, index, label=None):
        self.indices = np.array([index])
        self.label = label or f"atom {index}"

    def propose(self, positions, step_size, rng):
        return positions[self.indices] + random_displacement(step_size, rng)


class SulfurMove(Part):
    """A thiolate sulfur displaced, its methyl turned about C to keep facing it.

    The S atom moves uniformly within a ball of radius ``step_size``; C stays and
    the hydrogens turn about C by the rotation of least angle that takes the old
    S→C direction to the new one, so the methyl's orientation relative to its
    S–C bond is kept (thesis fig. 2.4a) and C–H lengths and H–C–H angles with it.
    """

    def __init__(self, s, c, hydrogens):
        self.s, self.c = s, c
        self.hydrogens = np.asarray(hydrogens)
        self.indices = np.r_[s, self.hydrogens]
        self.label = f"S {s}"

    def propose(self, positions, step_size, rng):
        s, c = positions[self.s], positions[self.c]
        s_new = s + random_displacement(step_size, rng)
        u, v = c - s, c - s_new
        R = rotation_between(u / np.linalg.norm(u), v / np.linalg.norm(v))
        h = (positions[self.hydrogens] - c) @ R.T + c
        return np.vstack([s_new, h])


class MethylMove(Part):
    """A methyl group moved as a rigid block pivoting about its sulfur, and turned about S–C.

    C moves uniformly within a ball of radius ``step_size`` (the S–C length is free);
    the CH3 block follows rigidly, turned by the rotation of least angle that takes the
    old S→C direction to the new one, so the block keeps facing S (thesis fig. 2.4b).
    With ``rotate`` the block then turns about the new S–C axis by an angle uniform in
    ±``step_size``/ρ, ρ the hydrogens' mean distance from the axis, so that they move
    about ``step_size`` too. The composite move is symmetric: the reverse proposal
    (−δ, −angle) undoes it exactly.
    """

    def __init__(self, s, c, hydrogens, *, rotate=True, radius=None):
        self.s, self.c = s, c
        self.hydrogens = np.asarray(hydrogens)
        self.indices = np.r_[c, self.hydrogens]
        self.rotate = rotate
        self.radius = radius
        self.label = f"CH3 {c}"

    def propose(self, positions, step_size, rng):
        s, c = positions[self.s], positions[self.c]
        c_new = c + random_displacement(step_size, rng)
        u, v = c - s, c_new - s
        u /= np.linalg.norm(u)
        v /= np.linalg.norm(v)
        R = rotation_between(u, v)
        if self.rotate:
            radius = self.radius if self.radius is not None else _axis_radius(
                positions[self.hydrogens], s, c)
            angle = rng.uniform(-1.0, 1.0) * step_size / radius
            R = rotation_about(v, angle) @ R
        h = (positions[self.hydrogens] - c) @ R.T + c_new
        return np.vstack([c_new, h])


def _axis_radius(hydrogens, s, c):
    """Mean distance of the hydrogens from the S–C axis (invariant under the moves)."""
    axis = (c - s) / np.linalg.norm(c - s)
    rel = hydrogens - c
    return float(np.mean(np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)))


class MoveSet:
    """How a structure splits into moving parts (subclass and implement :meth:`parts`)."""

    def parts(self, atoms):
        """The moving parts of ``atoms``: a list of :class:`Part`."""
        raise NotImplementedError


class AtomMoves(MoveSet):
    """Every atom is a part, displaced on its own (any structure).

    Parameters
    ----------
    indices : sequence of int, default=None
        Only these atoms move; None moves all.
    """

    def __init__(self, indices=None):
        self.indices = indices

    def parts(self, atoms):
        indices = range(len(atoms)) if self.indices is None else self.indices
        return [Displacement(int(i), f"{atoms[int(i)].symbol} {int(i)}") for i in indices]

    def __repr__(self):
        return "AtomMoves()" if self.indices is None else f"AtomMoves({list(self.indices)})"


class GoldThiolateMoves(MoveSet):
    """Paper II's moving parts of a gold–methylthiolate cluster, found from the structure.

    Every gold atom is a :class:`Displacement`; every sulfur a :class:`SulfurMove`; every
    methyl a :class:`MethylMove` (pivot about S, and with ``rotate`` a turn about S–C).
    One MC step moves each part once: 25 + 18 + 18 = 61 trial moves for Au25(SCH3)18,
    86 for Au38(SCH3)24 (thesis section 2.5; paper II). C–H bonds are never changed, and
    no hydrogen can wander between S and C.

    Bonds are found by distance: each S needs exactly one C within 2.2 Å, each of those C
    exactly three H within 1.4 Å (paper II's broken-bond limits).

    Parameters
    ----------
    rotate : bool, default=True
        Methyl moves also turn the group about its S–C axis.

    Raises
    ------
    StructureNotRecognizedError
        From :meth:`parts`, naming the atom: an element other than Au, S, C, H; a sulfur
        without exactly one carbon within 2.2 Å; a carbon without exactly three hydrogens
        within 1.4 Å or not bonded to one sulfur; a hydrogen on no or on two carbons.

    Examples
    --------
    >>> from mlmlearn.datasets import gold_thiolate_ring
    >>> parts = GoldThiolateMoves().parts(gold_thiolate_ring(4))
    >>> len(parts), parts[0], parts[4], parts[8]
    (12, Displacement(Au 0), SulfurMove(S 4), MethylMove(CH3 5))
    """

    def __init__(self, *, rotate=True):
        self.rotate = rotate

    def parts(self, atoms):
        symbols = np.array(atoms.get_chemical_symbols())
        unknown = np.flatnonzero(~np.isin(symbols, ["Au", "S", "C", "H"]))
        if len(unknown):
            i = int(unknown[0])
            raise StructureNotRecognizedError(
                f"atom {i} is {symbols[i]}: GoldThiolateMoves knows Au, S and methyl groups "
                "(C, H) only; pass moves=AtomMoves() or your own MoveSet")
        D = atoms.get_all_distances()
        sulfur = np.flatnonzero(symbols == "S")
        carbon = np.flatnonzero(symbols == "C")
        hydrogen = np.flatnonzero(symbols == "H")
        c_of_s, h_of_c = {}, {}
        for s in sulfur:
            cs = carbon[D[s, carbon] <= S_C_MAX]
            if len(cs) != 1:
                raise StructureNotRecognizedError(
                    f"sulfur atom {s} has {len(cs)} carbon atoms within {S_C_MAX} Å "
                    f"(indices {cs.tolist()}); a methylthiolate sulfur has one")
            c_of_s[int(s)] = int(cs[0])
        bonded_c = list(c_of_s.values())
        for c in carbon:
            if bonded_c.count(int(c)) != 1:
                raise StructureNotRecognizedError(
                    f"carbon atom {c} is bonded to {bonded_c.count(int(c))} sulfur atoms; "
                    "GoldThiolateMoves moves methyl groups on one sulfur each")
            hs = hydrogen[D[c, hydrogen] <= C_H_MAX]
            if len(hs) != 3:
                raise StructureNotRecognizedError(
                    f"carbon atom {c} has {len(hs)} hydrogen atoms within {C_H_MAX} Å "
                    f"(indices {hs.tolist()}); a methyl group has three")
            h_of_c[int(c)] = hs
        owners = np.zeros(len(atoms), dtype=int)
        for hs in h_of_c.values():
            owners[hs] += 1
        for h in hydrogen:
            if owners[h] != 1:
                raise StructureNotRecognizedError(
                    f"hydrogen atom {h} is within {C_H_MAX} Å of {owners[h]} methyl carbons; "
                    "it must belong to exactly one")
        parts = [Displacement(int(i), f"Au {i}") for i in np.flatnonzero(symbols == "Au")]
        parts += [SulfurMove(s, c, h_of_c[c]) for s, c in c_of_s.items()]
        parts += [MethylMove(s, c, h_of_c[c], rotate=self.rotate) for s, c in c_of_s.items()]
        return parts

    def __repr__(self):
        return "GoldThiolateMoves()" if self.rotate else "GoldThiolateMoves(rotate=False)"
