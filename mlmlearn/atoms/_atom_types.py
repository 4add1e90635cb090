"""Gold-thiolate atom types (paper IV, section II C).

Gold atoms are classified by their sulfur and gold neighbours within
``bond_cutoff`` (3.0 Å):

* **unit** gold — two or more S within the cutoff (Au in an S–Au–S staple);
* **half-unit** gold — exactly one S and no other Au within the cutoff (a
  staple caught breaking or forming);
* **core** gold — one S and at least one Au within the cutoff (a surface core
  atom bound to a staple), or no S and at least one Au within
  ``core_cutoff`` (5.0 Å, the neighbour radius of the core alignment rule);
* anything else (an isolated gold atom) matches no rule and raises
  :class:`AtomTypingError`.

Other elements keep their symbol: ``"S"``, ``"C"``, ``"H"``.
"""

import numpy as np

__all__ = ["GOLD_THIOLATE_TYPES", "AtomTypingError", "gold_thiolate_types"]

#: Every label :func:`gold_thiolate_types` can return.
GOLD_THIOLATE_TYPES = ("Au_core", "Au_unit", "Au_half_unit", "S", "C", "H")


class AtomTypingError(ValueError):
    """An atom matches none of the typing rules (the message names its index)."""


def gold_thiolate_types(atoms, *, bond_cutoff=3.0, core_cutoff=5.0):
    """Atom types of a gold-thiolate structure as paper IV defines them.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure with Au, S, C and H only (positions in Å; periodic cells are
        handled with the minimum-image convention).
    bond_cutoff : float, default=3.0
        Au–S and Au–Au bond cutoff in Å.
    core_cutoff : float, default=5.0
        Radius in Å within which a gold atom without sulfur must have another
        gold atom to count as core gold.

    Returns
    -------
    types : ndarray of str, shape (n_atoms,)
        One of :data:`GOLD_THIOLATE_TYPES` per atom.

    Raises
    ------
    AtomTypingError
        For an element other than Au, S, C, H, or a gold atom matching no rule;
        the message names the atom index.

    Examples
    --------
    >>> from mlmlearn.datasets import gold_thiolate_ring
    >>> types = gold_thiolate_types(gold_thiolate_ring(4))
    >>> sorted(set(types[:4].tolist()))
    ['Au_unit']
    """
    symbols = np.array(atoms.get_chemical_symbols())
    unknown = np.flatnonzero(~np.isin(symbols, ["Au", "S", "C", "H"]))
    if unknown.size:
        i = int(unknown[0])
        raise AtomTypingError(
            f"atom {i} is {symbols[i]}; gold-thiolate typing knows Au, S, C and H only"
        )
    types = symbols.astype(object)
    gold = np.flatnonzero(symbols == "Au")
    if gold.size == 0:
        return types.astype(str)
    sulfur = np.flatnonzero(symbols == "S")
    distances = atoms.get_all_distances(mic=bool(np.any(atoms.pbc)))
    d_gold = distances[np.ix_(gold, gold)]
    d_sulfur = distances[np.ix_(gold, sulfur)]
    np.fill_diagonal(d_gold, np.inf)
    n_sulfur = (d_sulfur < bond_cutoff).sum(axis=1)
    bonded_gold = (d_gold < bond_cutoff).any(axis=1)
    near_gold = (d_gold < core_cutoff).any(axis=1)

    labels = np.full(gold.size, "", dtype=object)
    labels[n_sulfur >= 2] = "Au_unit"
    labels[(n_sulfur == 1) & ~bonded_gold] = "Au_half_unit"
    labels[(n_sulfur == 1) & bonded_gold] = "Au_core"
    labels[(n_sulfur == 0) & near_gold] = "Au_core"
    unmatched = np.flatnonzero(labels == "")
    if unmatched.size:
        i = int(gold[unmatched[0]])
        raise AtomTypingError(
            f"gold atom {i} has no S within {bond_cutoff} Å and no Au within {core_cutoff} Å, "
            "so it is neither core, unit nor half-unit gold"
        )
    types[gold] = labels
    return types.astype(str)
