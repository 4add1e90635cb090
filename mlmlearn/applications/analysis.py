"""Structure statistics of trajectories: bond lengths, bond angles, their smoothed
distributions and peaks, broken bonds (paper II's analysis of Monte Carlo runs).

Every function takes MC or MD frames alike (a sequence of ``ase.Atoms``). Bonds are pairs of
the named elements closer than a cutoff (:data:`BOND_CUTOFFS`, Å); an angle A–B–C is measured
at every B between each pair of its bonded A and C neighbours.
"""

import numpy as np

__all__ = [
    "BOND_CUTOFFS",
    "bond_angles",
    "bond_lengths",
    "broken_bonds",
    "descriptor_pca",
    "peak",
    "smoothed_distribution",
]

#: Bond cutoffs (Å) of the gold–methylthiolate pairs: Au–S and Au–Au as in the thiolate
#: staples and cores of the bundled data (Au–S 2.3–2.5 Å, Au–Au up to 3.2 Å), S–C and C–H
#: paper II's broken-bond limits.
BOND_CUTOFFS = {
    frozenset(("Au", "S")): 2.8,
    frozenset(("Au",)): 3.2,
    frozenset(("S", "C")): 2.2,
    frozenset(("C", "H")): 1.4,
}


def _cutoff(a, b, cutoffs):
    table = BOND_CUTOFFS if cutoffs is None else {frozenset(k): v for k, v in cutoffs.items()}
    key = frozenset((a, b))
    if key not in table:
        raise ValueError(f"no bond cutoff for {a}–{b}; pass cutoffs={{('{a}', '{b}'): ...}}")
    return table[key]


def _frames(frames):
    from ase import Atoms

    if isinstance(frames, Atoms):
        return [frames]
    frames = list(frames)
    if not frames:
        raise ValueError("frames is empty")
    return frames


def bond_lengths(frames, pair, *, cutoffs=None):
    """Lengths (Å) of every ``pair`` bond in every frame, concatenated.

    Parameters
    ----------
    frames : ase.Atoms or sequence of ase.Atoms
    pair : (str, str)
        Elements, e.g. ``("Au", "S")``.
    cutoffs : dict of (str, str) to float, default=None
        Bond cutoffs (Å); :data:`BOND_CUTOFFS` when None.

    Returns
    -------
    lengths : ndarray of shape (n_bonds,)

    Examples
    --------
    >>> from ase import Atoms
    >>> bond_lengths(Atoms("AuSAu", positions=[[0, 0, 0], [2.4, 0, 0], [4.8, 0, 0]]),
    ...              ("Au", "S")).tolist()
    [2.4, 2.4]
    """
    a, b = pair
    cut = _cutoff(a, b, cutoffs)
    out = []
    for atoms in _frames(frames):
        symbols = np.array(atoms.get_chemical_symbols())
        ia, ib = np.flatnonzero(symbols == a), np.flatnonzero(symbols == b)
        if not len(ia) or not len(ib):
            continue
        D = np.linalg.norm(atoms.positions[ia][:, None] - atoms.positions[ib][None], axis=-1)
        mask = D <= cut
        if a == b:
            mask &= np.triu(np.ones_like(mask), 1)
        out.append(D[mask])
    return np.concatenate(out) if out else np.zeros(0)


def bond_angles(frames, triple, *, cutoffs=None):
    """Angles (degrees) A–B–C at every B between its bonded A and C neighbours.

    Parameters
    ----------
    frames : ase.Atoms or sequence of ase.Atoms
    triple : (str, str, str)
        Elements, the vertex in the middle, e.g. ``("Au", "S", "Au")``.
    cutoffs : dict, default=None
        As in :func:`bond_lengths`.

    Returns
    -------
    angles : ndarray of shape (n_angles,)
        Each unordered pair of neighbours once.

    Examples
    --------
    >>> from ase import Atoms
    >>> bond_angles(Atoms("AuSAu", positions=[[0, 0, 0], [2.4, 0, 0], [2.4, 2.4, 0]]),
    ...             ("Au", "S", "Au")).round(6).tolist()
    [90.0]
    """
    a, b, c = triple
    cut_ab, cut_bc = _cutoff(a, b, cutoffs), _cutoff(b, c, cutoffs)
    out = []
    for atoms in _frames(frames):
        symbols = np.array(atoms.get_chemical_symbols())
        P = atoms.positions
        for v in np.flatnonzero(symbols == b):
            d = np.linalg.norm(P - P[v], axis=1)
            na = np.flatnonzero((symbols == a) & (d <= cut_ab) & (np.arange(len(P)) != v))
            nc = np.flatnonzero((symbols == c) & (d <= cut_bc) & (np.arange(len(P)) != v))
            for i in na:
                for k in nc:
                    if k == i or (a == c and k < i):
                        continue
                    u, w = P[i] - P[v], P[k] - P[v]
                    cos = u @ w / (np.linalg.norm(u) * np.linalg.norm(w))
                    out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.array(out)


def smoothed_distribution(values, grid, sigma):
    """Gaussian-smoothed density of ``values`` on ``grid`` (paper II: σ = 1.75° for angles).

    Parameters
    ----------
    values : array-like of shape (n,)
    grid : array-like of shape (m,)
    sigma : float
        In the units of ``values``, > 0.

    Returns
    -------
    density : ndarray of shape (m,)
        Integrates to 1 over a grid that covers the values (a sum of normalised Gaussians
        divided by n).

    Raises
    ------
    ValueError
        If ``values`` is empty or holds NaN/inf, or ``sigma`` ≤ 0.
    """
    values = np.asarray(values, dtype=float).ravel()
    grid = np.asarray(grid, dtype=float)
    if not len(values):
        raise ValueError("values is empty: no bond or angle was found")
    if not np.all(np.isfinite(values)):
        raise ValueError("values holds NaN or inf")
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be > 0")
    z = (grid[:, None] - values[None, :]) / sigma
    return np.exp(-0.5 * z * z).sum(axis=1) / (len(values) * sigma * np.sqrt(2 * np.pi))


def peak(grid, density):
    """Position and full width at half maximum of the highest peak of ``density``.

    The position is refined by a parabola through the highest grid point and its two
    neighbours; the width is measured between the half-maximum crossings (linear
    interpolation) on either side of the peak.

    Returns
    -------
    position, fwhm : float, float
    """
    grid, density = np.asarray(grid, dtype=float), np.asarray(density, dtype=float)
    k = int(np.argmax(density))
    position = grid[k]
    if 0 < k < len(grid) - 1:
        y0, y1, y2 = density[k - 1:k + 2]
        denominator = y0 - 2 * y1 + y2
        if denominator != 0:
            position = grid[k] + 0.5 * (y0 - y2) / denominator * (grid[k + 1] - grid[k])
    half = density[k] / 2
    left = k
    while left > 0 and density[left] > half:
        left -= 1
    right = k
    while right < len(grid) - 1 and density[right] > half:
        right += 1

    def crossing(i, j):
        if density[i] == density[j]:
            return grid[i]
        return grid[i] + (half - density[i]) * (grid[j] - grid[i]) / (density[j] - density[i])

    return float(position), float(crossing(right, right - 1) - crossing(left, left + 1))


def broken_bonds(atoms):
    """Paper II's unphysical geometry checks of a gold–methylthiolate frame.

    Returns
    -------
    problems : list of str
        One entry per problem: an S–C bond longer than 2.2 Å, a C–H bond longer than
        1.4 Å (each C's three nearest H), a sulfur with no gold within 3.0 Å. Empty for
        an intact frame.
    """
    symbols = np.array(atoms.get_chemical_symbols())
    P = atoms.positions
    problems = []
    gold, sulfur = np.flatnonzero(symbols == "Au"), np.flatnonzero(symbols == "S")
    carbon, hydrogen = np.flatnonzero(symbols == "C"), np.flatnonzero(symbols == "H")
    for s in sulfur:
        if len(carbon):
            dc = np.linalg.norm(P[carbon] - P[s], axis=1)
            if dc.min() > 2.2:
                problems.append(f"S {s}: nearest C {carbon[dc.argmin()]} at {dc.min():.2f} Å")
        if len(gold) and np.linalg.norm(P[gold] - P[s], axis=1).min() > 3.0:
            problems.append(f"S {s}: no Au within 3.0 Å")
    for c in carbon:
        if len(hydrogen) >= 3:
            dh = np.sort(np.linalg.norm(P[hydrogen] - P[c], axis=1))[:3]
            if dh[-1] > 1.4:
                problems.append(f"C {c}: third nearest H at {dh[-1]:.2f} Å")
    return problems


def descriptor_pca(descriptor, reference, *others, n_components=2):
    """Principal components of descriptor rows: training frames against others (paper II, fig. 2).

    The PCA is fitted on the rows of ``reference`` (e.g. a model's training structures)
    and every other set is projected on its components, so Monte Carlo frames that left
    the training data show up outside its cloud.

    Parameters
    ----------
    descriptor : transformer
        Fitted; its ``transform`` takes a list of structures, e.g. ``model[:-1]`` of
        :func:`~mlmlearn.forcefield.default_energy_model` (MBTR and scaling).
    reference : sequence of ase.Atoms
    *others : sequence of ase.Atoms
    n_components : int, default=2

    Returns
    -------
    coordinates : list of ndarray of shape (n_frames, n_components)
        ``reference``'s first, then each of ``others``.
    pca : sklearn.decomposition.PCA
        Fitted (``explained_variance_ratio_``).
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components).fit(descriptor.transform(list(reference)))
    return ([pca.transform(descriptor.transform(list(frames)))
             for frames in (reference, *others)], pca)
