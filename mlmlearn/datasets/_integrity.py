"""Broken bonds and detached fragments in MD frames: the check behind the loaders' ``intact`` mask.

Hot MD can break molecules: a hydrogen leaves its methyl, a methyl leaves its
sulfur, a fragment flies off. Such frames are valid xTB data, but of another
chemical system than the set describes, and the package's own models refuse
them (a hydrogen farther than ``partner_cutoff`` from every carbon has no
partner for :class:`~mlmlearn.oamlm.GoldThiolateAlignment`'s hydrogen rule).
"""

import numpy as np

from .._optional import import_optional

__all__ = ["BOND_FACTOR", "REQUIRED_PARTNERS", "frame_integrity"]

#: Two atoms are bonded while their distance is at most this many times the sum
#: of their covalent radii (``ase.data.covalent_radii``, Cordero et al. 2008):
#: C–H 1.60 Å, C–C 2.28 Å, C–S 2.72 Å, Au–S 3.62 Å, Au–Au 4.08 Å. The most
#: stretched bond of an intact bundled frame is a C–H at 1.26 (alkanes, 750 K),
#: 1.48 (rings, 900 K) and 1.46 (Au25, 1500 K) times the sum.
BOND_FACTOR = 1.5

#: Each atom of the key element must be bonded to an atom of one of the value's
#: elements, wherever the structure holds that element: every H to a C, and
#: every C to an S (a thiolate's methyl on its sulfur).
REQUIRED_PARTNERS = {"H": ("C",), "C": ("S",)}

# frames x atoms**2 distances held at once
_BLOCK = 4_000_000


def frame_integrity(frames, *, bond_factor=BOND_FACTOR, required_partners=None):
    """Which frames are whole molecules: no broken bond to a partner, no detached fragment.

    A bond joins atoms *i* and *j* when ``d_ij <= bond_factor * (r_i + r_j)``
    with covalent radii ``r``. A frame is intact when

    1. every atom of each key element of ``required_partners`` is bonded to an
       atom of one of its partner elements (skipped where the frame has none of
       them), and
    2. the bond graph is connected: no fragment is detached.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Non-periodic structures (positions in Å).
    bond_factor : float, default=1.5
        Bond length limit in units of the covalent radius sum (see ``BOND_FACTOR``).
    required_partners : dict of str to tuple of str, default=None
        ``{element: partner elements}``; defaults to ``REQUIRED_PARTNERS``
        (every H on a C, every C on an S).

    Returns
    -------
    intact : ndarray of bool, shape (n_frames,)
    problems : list of str, length n_frames
        ``""`` for an intact frame, else what is broken (atom indices are the
        frame's own), e.g. ``"H 12 is 1.72 Å from the nearest C (bond <= 1.60 Å)"``.

    Raises
    ------
    ValueError
        If a frame is periodic or ``bond_factor`` is not positive.
    ModuleNotFoundError
        Without ase (mlmlearn's ``atoms`` extra), naming the extra.

    Examples
    --------
    >>> from ase.build import molecule
    >>> methane, broken = molecule("CH4"), molecule("CH4")
    >>> broken.positions[1] *= 3.0
    >>> intact, problems = frame_integrity([methane, broken])
    >>> intact.tolist()
    [True, False]
    >>> problems[1]
    'H 1 is 3.27 Å from the nearest C (bond <= 1.60 Å); 2 fragments: CH3, H'
    """
    import_optional("ase.data", purpose="frame_integrity")  # covalent radii
    frames = list(frames)
    for k, atoms in enumerate(frames):
        if atoms.pbc.any():
            raise ValueError(
                f"frame {k} is periodic (pbc={atoms.pbc.tolist()}); frame_integrity checks "
                "molecules and clusters"
            )
    return _integrity(
        [a.numbers for a in frames],
        [a.positions for a in frames],
        bond_factor=bond_factor,
        required_partners=required_partners,
    )


def _integrity(numbers, positions, *, bond_factor=BOND_FACTOR, required_partners=None):
    """:func:`frame_integrity` on per-frame ``numbers`` and ``positions`` arrays."""
    if not (np.isfinite(bond_factor) and bond_factor > 0):
        raise ValueError(f"bond_factor={bond_factor!r} must be a positive number")
    partners = REQUIRED_PARTNERS if required_partners is None else dict(required_partners)
    n_frames = len(numbers)
    intact = np.ones(n_frames, dtype=bool)
    problems = [""] * n_frames
    start = 0
    while start < n_frames:  # runs of frames of one composition, checked as a batch
        z = np.asarray(numbers[start])
        stop = start + 1
        while (
            stop < n_frames
            and len(numbers[stop]) == len(z)
            and np.array_equal(numbers[stop], z)
            and (stop - start + 1) * len(z) ** 2 <= _BLOCK
        ):
            stop += 1
        block = np.stack([np.asarray(p, dtype=float) for p in positions[start:stop]])
        ok, text = _check_block(z, block, bond_factor, partners)
        intact[start:stop] = ok
        for k in np.flatnonzero(~ok):
            problems[start + k] = text(k)
        start = stop
    return intact, problems


def _check_block(z, positions, bond_factor, partners):
    """Integrity of frames ``positions`` (n_frames, n_atoms, 3) of one composition ``z``."""
    ase_data = import_optional("ase.data", purpose="frame_integrity")
    chemical_symbols, covalent_radii = ase_data.chemical_symbols, ase_data.covalent_radii
    if len(z) == 0:
        return np.ones(len(positions), dtype=bool), str
    symbols = np.array(chemical_symbols)[z]
    limit = bond_factor * (covalent_radii[z][:, None] + covalent_radii[z][None, :])
    x = positions - positions.mean(axis=1, keepdims=True)  # centred: no cancellation below
    square = np.einsum("fid,fid->fi", x, x)
    gram = np.matmul(x, x.transpose(0, 2, 1))
    distance = np.sqrt(np.maximum(square[:, :, None] + square[:, None, :] - 2 * gram, 0.0))
    bonded = distance <= limit
    n = len(z)
    bonded[:, np.arange(n), np.arange(n)] = False

    # 1. each atom of a key element has a partner; the worst offender per frame is reported
    checks = []
    for element, partner_elements in partners.items():
        centres = np.flatnonzero(symbols == element)
        mates = np.flatnonzero(np.isin(symbols, partner_elements))
        if centres.size == 0 or mates.size == 0:
            continue
        pairs = (slice(None), centres[:, None], mates[None, :])
        lonely = ~bonded[pairs].any(axis=2)  # (frames, centres)
        excess = distance[pairs].min(axis=2) / limit[np.ix_(centres, mates)].min(axis=1)
        checks.append((element, "/".join(partner_elements), centres, mates, lonely, excess))

    # 2. connectivity: grow the fragment of atom 0 along bonds until it stops growing
    reach = np.zeros((len(positions), n), dtype=bool)
    reach[:, 0] = True
    adjacency = bonded.astype(np.float32)
    while True:
        grown = reach | (np.matmul(adjacency, reach[:, :, None].astype(np.float32))[:, :, 0] > 0)
        if np.array_equal(grown, reach):
            break
        reach = grown
    connected = reach.all(axis=1)

    ok = connected.copy()
    for *_, lonely, _ in checks:
        ok &= ~lonely.any(axis=1)

    def text(k):
        parts = []
        for element, partner_name, centres, mates, lonely, excess in checks:
            if lonely[k].any():
                worst = int(np.argmax(np.where(lonely[k], excess[k], -np.inf)))
                i = int(centres[worst])
                d = distance[k, i, mates]
                parts.append(
                    f"{element} {i} is {d.min():.2f} Å from the nearest {partner_name} "
                    f"(bond <= {limit[i, mates].min():.2f} Å)"
                )
        if not connected[k]:
            parts.append(_fragments(bonded[k], symbols))
        return "; ".join(parts)

    return ok, text


def _fragments(bonded, symbols):
    Formula = import_optional("ase.formula", purpose="frame_integrity").Formula
    from scipy.sparse.csgraph import connected_components

    n_fragments, label = connected_components(bonded, directed=False)
    sizes = np.bincount(label, minlength=n_fragments)
    formulas = [
        Formula("".join(symbols[label == c])).format("hill")
        for c in np.argsort(-sizes, kind="stable")
    ]
    return f"{n_fragments} fragments: " + ", ".join(formulas)
