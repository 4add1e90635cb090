"""Start structures built from ideal geometry: linear alkanes and gold-thiolate rings."""

import numbers

import numpy as np

__all__ = ["linear_alkane", "gold_thiolate_ring"]

_TETRAHEDRAL = np.arccos(-1.0 / 3.0)  # 109.47°
_CC, _CH, _SC, _AUS = 1.54, 1.09, 1.82, 2.33  # bond lengths (Å)


def linear_alkane(n_carbons):
    """All-trans CₙH₂ₙ₊₂ with ideal tetrahedral angles, C–C 1.54 Å and C–H 1.09 Å.

    Parameters
    ----------
    n_carbons : int
        Number of carbon atoms, at least 1.

    Returns
    -------
    atoms : ase.Atoms
        Carbons first (backbone order), then hydrogens; positions in Å, centred
        at the origin, no cell.

    Examples
    --------
    >>> heptane = linear_alkane(7)
    >>> heptane.get_chemical_formula()
    'C7H16'
    >>> round(float(heptane.get_distance(0, 1)), 2)
    1.54
    """
    from .._optional import import_optional

    Atoms = import_optional("ase", purpose="linear_alkane").Atoms

    n = _check_count("n_carbons", n_carbons, 1)
    # zig-zag backbone in the xy plane; an extra carbon at each end marks where
    # the terminal hydrogen goes (the anti position)
    half = _TETRAHEDRAL / 2
    k = np.arange(-1, n + 1)
    chain = np.column_stack([k * _CC * np.sin(half), (k % 2) * _CC * np.cos(half), np.zeros(n + 2)])
    carbons = chain[1:-1]
    hydrogens = []
    for i in range(n):
        prev, here, nxt = chain[i], chain[i + 1], chain[i + 2]
        u1, u2 = _unit(prev - here), _unit(nxt - here)
        bisector = -_unit(u1 + u2)
        normal = _unit(np.cross(u1, u2))
        for sign in (1, -1):
            direction = bisector * np.cos(half) + sign * normal * np.sin(half)
            hydrogens.append(here + _CH * direction)
        if i == 0:
            hydrogens.append(here + _CH * u1)
        if i == n - 1:
            hydrogens.append(here + _CH * u2)
    positions = np.vstack([carbons, hydrogens])
    atoms = Atoms(f"C{n}H{2 * n + 2}", positions=positions)
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms


def gold_thiolate_ring(n_gold, *, displacement=1.0):
    """Au_n(SCH3)_n ring as paper IV builds it (section III D 1).

    Sulfur atoms sit at the corners of a regular n-gon in the xy plane,
    displaced ``displacement`` Å up and down in turns; each gold atom bridges
    two neighbouring sulfurs with Au–S 2.33 Å; each sulfur carries a methyl
    (S–C 1.82 Å, C–H 1.09 Å, tetrahedral angles) pointing outwards, on the side
    of its displacement. For odd n two neighbouring sulfurs are on the same
    side; their gold moves outwards to keep Au–S at 2.33 Å.

    Parameters
    ----------
    n_gold : int
        Number of gold atoms (and thiolates), at least 3.
    displacement : float, default=1.0
        Out-of-plane displacement of the sulfur atoms in Å.

    Returns
    -------
    atoms : ase.Atoms
        Order: Au₀…Auₙ₋₁, then S, C, H, H, H for each thiolate.

    Examples
    --------
    >>> ring = gold_thiolate_ring(4)
    >>> ring.get_chemical_formula()
    'C4H12Au4S4'
    >>> d = ring.get_all_distances()
    >>> round(float(d[0, 4]), 2), round(float(d[0, 9]), 2)
    (2.33, 2.33)
    """
    from .._optional import import_optional

    Atoms = import_optional("ase", purpose="gold_thiolate_ring").Atoms

    n = _check_count("n_gold", n_gold, 3)
    angles = 2 * np.pi * np.arange(n) / n
    radial = np.column_stack([np.cos(angles), np.sin(angles), np.zeros(n)])
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    # corner radius such that alternating neighbours are 2 x Au-S apart in 3-D
    edge = np.sqrt(max((2 * _AUS) ** 2 - (2 * displacement) ** 2, 0.0))
    radius = edge / (2 * np.sin(np.pi / n))
    sulfur = radius * radial + displacement * signs[:, None] * np.array([0.0, 0.0, 1.0])

    gold = []
    for i in range(n):
        a, b = sulfur[i], sulfur[(i + 1) % n]
        middle = (a + b) / 2
        half = np.linalg.norm(b - a) / 2
        outward = _unit(np.array([middle[0], middle[1], 0.0]))
        gold.append(middle + np.sqrt(max(_AUS**2 - half**2, 0.0)) * outward)

    symbols, positions = ["Au"] * n, list(gold)
    for i in range(n):
        methyl = _unit(radial[i] + signs[i] * np.array([0.0, 0.0, 1.0]))
        carbon = sulfur[i] + _SC * methyl
        symbols += ["S", "C", "H", "H", "H"]
        positions += [sulfur[i], carbon, *_methyl_hydrogens(carbon, methyl)]
    return Atoms(symbols, positions=np.array(positions))


def _methyl_hydrogens(carbon, axis):
    """Three H around ``carbon``, staggered, at the tetrahedral angle to ``-axis``."""
    p1 = _unit(np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0]))
    p2 = np.cross(axis, p1)
    tilt = np.pi - _TETRAHEDRAL
    return [
        carbon + _CH * (axis * np.cos(tilt) + np.sin(tilt) * (p1 * np.cos(phi) + p2 * np.sin(phi)))
        for phi in 2 * np.pi * np.arange(3) / 3
    ]


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _check_count(name, value, minimum):
    if not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)
