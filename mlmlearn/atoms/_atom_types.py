"""Gold-thiolate atom types (paper IV, section II C).

Gold atoms are classified by their sulfur and gold neighbours within
``bond_cutoff`` (3.0 Å; a neighbour at distance d ≤ cutoff counts):

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

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, validate_params

from ._neighbors import neighbor_list

__all__ = ["GOLD_THIOLATE_TYPES", "AtomTypingError", "gold_thiolate_types"]

#: Every label :func:`gold_thiolate_types` can return.
GOLD_THIOLATE_TYPES = ("Au_core", "Au_unit", "Au_half_unit", "S", "C", "H")

_ELEMENTS = np.array(["Au", "S", "C", "H"])


class AtomTypingError(ValueError):
    """An atom matches none of the typing rules (the message names its index)."""


@validate_params(
    {
        "atoms": [HasMethods(["get_chemical_symbols"])],
        "bond_cutoff": [Interval(Real, 0, None, closed="neither")],
        "core_cutoff": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def gold_thiolate_types(atoms, *, bond_cutoff=3.0, core_cutoff=5.0):
    """Atom types of a gold-thiolate structure as paper IV defines them.

    :class:`~mlmlearn.atoms.AtomicEnvironments` computes the same types once per
    structure and pair of cutoffs, from its cached neighbour lists
    (:meth:`~mlmlearn.atoms.AtomicEnvironments.gold_thiolate_types`), and
    :class:`~mlmlearn.oamlm.GoldThiolateAlignment` reads that cache, so selection
    and alignment agree whenever they use the same cutoffs.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure with Au, S, C and H only (positions in Å). Periodic cells are
        supported: neighbours are every periodic image within the cutoffs.
    bond_cutoff : float, default=3.0
        Au–S and Au–Au bond cutoff in Å (a neighbour at distance d ≤ cutoff counts).
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
    sklearn.utils._param_validation.InvalidParameterError
        For a cutoff that is not a positive number.

    Examples
    --------
    >>> from mlmlearn.datasets import gold_thiolate_ring
    >>> types = gold_thiolate_types(gold_thiolate_ring(4))
    >>> sorted(set(types[:4].tolist()))
    ['Au_unit']
    """
    symbols = np.array(atoms.get_chemical_symbols(), dtype="<U2")
    check_elements(symbols)
    if not np.any(symbols == "Au"):
        return symbols.astype(str)
    nl = neighbor_list(atoms, max(float(bond_cutoff), float(core_cutoff)))
    return types_from_neighbors(symbols, nl, float(bond_cutoff), float(core_cutoff))


def check_elements(symbols):
    """Raise :class:`AtomTypingError` at the first atom that is not Au, S, C or H."""
    unknown = np.flatnonzero(~np.isin(symbols, _ELEMENTS))
    if unknown.size:
        i = int(unknown[0])
        raise AtomTypingError(
            f"atom {i} is {symbols[i]}; gold-thiolate typing knows Au, S, C and H only"
        )


def types_from_neighbors(symbols, nl, bond_cutoff, core_cutoff):
    """The typing rules on a neighbour list whose cutoff is at least both cutoffs."""
    check_elements(symbols)
    types = symbols.astype(object)
    gold = np.flatnonzero(symbols == "Au")
    if gold.size == 0:
        return types.astype(str)
    center, other, d = nl.center, symbols[nl.index], nl.distance
    n = len(symbols)
    n_sulfur = np.bincount(center[(other == "S") & (d <= bond_cutoff)], minlength=n)[gold]
    bonded_gold = np.bincount(center[(other == "Au") & (d <= bond_cutoff)], minlength=n)[gold] > 0
    near_gold = np.bincount(center[(other == "Au") & (d <= core_cutoff)], minlength=n)[gold] > 0

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
