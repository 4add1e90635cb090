"""How a force field assigns each atom to the model that predicts its force."""

import numpy as np

__all__ = ["UnknownAtomTypeError", "atom_labels"]

#: Paper IV's model families of the gold-thiolate types: half-unit gold is aligned
#: (and so modelled) with unit gold, section II C.
GOLD_THIOLATE_FAMILIES = {
    "Au_core": "Au_core",
    "Au_unit": "Au_unit",
    "Au_half_unit": "Au_unit",
    "S": "S",
    "C": "C",
    "H": "H",
}


class UnknownAtomTypeError(ValueError):
    """An atom's type has no model (or a type asked for has no training data).

    The message names the type, the atom and its structure, and the types that
    have models.
    """


def atom_labels(typing, environments, cutoffs):
    """The model label of each environment under ``typing``.

    Parameters
    ----------
    typing : "gold_thiolate", "element" or callable
        ``"gold_thiolate"``: paper IV's families (core Au, unit Au with half-unit
        Au, S, C, H) under the typing ``cutoffs`` (bond, core; Å); ``"element"``:
        the chemical symbol; a callable ``typing(atoms) -> labels`` (one string per
        atom of an ``ase.Atoms``) for anything else.
    environments : AtomicEnvironments
    cutoffs : tuple of float

    Returns
    -------
    labels : ndarray of str of shape (n_environments,)
    """
    if typing == "element":
        return environments.symbols.astype(str)
    if typing == "gold_thiolate":
        bond, core = cutoffs
        types = environments.gold_thiolate_types(bond_cutoff=bond, core_cutoff=core)
        return np.vectorize(GOLD_THIOLATE_FAMILIES.__getitem__, otypes=[object])(types).astype(
            str
        ) if len(types) else np.empty(0, dtype=str)
    labels = np.empty(len(environments), dtype=object)
    for s, rows in environments.structure_rows():
        atoms = environments.structures[s]
        per_atom = np.asarray(typing(atoms))
        if per_atom.shape != (len(atoms),):
            raise ValueError(
                f"typing({atoms.get_chemical_formula()}) of structure {s} returned shape "
                f"{per_atom.shape}; it must give one label per atom, ({len(atoms)},)"
            )
        labels[rows] = per_atom[environments.atom_index[rows]]
    return labels.astype(str)
