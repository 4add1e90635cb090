"""Atom-centred samples over a shared set of structures: the ``X`` of local models."""

import numbers
from collections import namedtuple

import numpy as np

from .._optional import import_optional
from . import _neighbors

__all__ = ["AtomicEnvironments", "MissingForcesError", "Neighborhood"]

#: Neighbours of one centre, nearest first: structure-local ``indices`` (for a
#: periodic image, the atom it is an image of), atomic ``numbers``, ``distances``
#: (Å) and ``vectors`` from the centre to each neighbour (Å, periodic image included).
Neighborhood = namedtuple("Neighborhood", ["indices", "numbers", "distances", "vectors"])

#: Default cutoffs (Å) of the gold-thiolate typing, paper IV section II C.
BOND_CUTOFF, CORE_CUTOFF = 3.0, 5.0


class MissingForcesError(ValueError):
    """A structure has no reference forces where forces are needed."""


class _Store:
    """The structures and their concatenated per-atom arrays, shared by all subsets."""

    def __init__(self, structures, groups):
        self.structures = structures
        counts = np.array([len(a) for a in structures], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.structure_of = np.repeat(np.arange(len(structures)), counts)
        self.atom_of = np.arange(self.offsets[-1]) - self.offsets[self.structure_of]
        self.numbers = (
            np.concatenate([a.numbers for a in structures]) if structures else np.empty(0, int)
        )
        self.groups = groups
        self._types = {}  # (structure, bond_cutoff, core_cutoff) -> types of its atoms
        self._neighbors = {}  # structure -> NeighborList of the largest cutoff asked for
        self._positions = None
        self._forces = None
        self._missing = None
        self._fingerprint = None

    def positions(self, flat):
        if self._positions is None:
            self._positions = _concatenate([a.positions for a in self.structures])
        return self._positions[flat]

    def __getstate__(self):
        # neighbour lists and types are recomputed where needed, not shipped to workers
        state = self.__dict__.copy()
        state["_types"], state["_neighbors"] = {}, {}
        return state

    def neighbor_list(self, s, cutoff):
        """Structure ``s``'s neighbour list within ``cutoff`` Å, computed once and shared.

        One list per structure is kept, of the largest cutoff asked for; a smaller
        cutoff is read from it.
        """
        cutoff = _neighbors.check_cutoff(cutoff)
        cached = self._neighbors.get(s)
        if cached is not None and cached.cutoff >= cutoff:
            return cached.within(cutoff)
        try:
            built = _neighbors.neighbor_list(self.structures[s], cutoff)
        except ValueError as exc:
            raise ValueError(f"structure {s}: {exc}") from exc
        self._neighbors[s] = built
        return built

    def largest_cutoff(self, s):
        """The cutoff (Å) of structure ``s``'s cached neighbour list, 0 if none."""
        cached = self._neighbors.get(s)
        return 0.0 if cached is None else cached.cutoff

    def types_of(self, s, bond_cutoff, core_cutoff):
        """Gold-thiolate types of structure ``s``'s atoms, computed once per pair of cutoffs."""
        key = (s, float(bond_cutoff), float(core_cutoff))
        if key not in self._types:
            from ._atom_types import AtomTypingError, check_elements, types_from_neighbors

            symbols = np.asarray(self.structures[s].get_chemical_symbols(), dtype="<U2")
            try:
                check_elements(symbols)
                if np.any(symbols == "Au"):
                    nl = self.neighbor_list(s, max(key[1], key[2]))
                    types = types_from_neighbors(symbols, nl, key[1], key[2])
                else:
                    types = symbols.astype(str)
            except AtomTypingError as exc:
                raise AtomTypingError(f"structure {s}: {exc}") from None
            self._types[key] = types
        return self._types[key]

    def types(self, flat, bond_cutoff, core_cutoff):
        """Gold-thiolate types of the atoms ``flat`` (only their structures are typed)."""
        out = np.empty(len(flat), dtype="<U12")
        structure = self.structure_of[flat]
        for s in np.unique(structure):
            rows = np.flatnonzero(structure == s)
            out[rows] = self.types_of(int(s), bond_cutoff, core_cutoff)[
                self.atom_of[flat[rows]]
            ]
        return out

    def forces(self, flat):
        if self._forces is None:
            per_structure = [_reference_forces(a) for a in self.structures]
            self._missing = np.array([f is None for f in per_structure], dtype=bool)
            self._forces = _concatenate(
                [
                    np.full((len(a), 3), np.nan) if f is None else f
                    for a, f in zip(self.structures, per_structure, strict=True)
                ]
            )
        missing = np.flatnonzero(self._missing[np.unique(self.structure_of[flat])])
        if missing.size:
            s = int(np.unique(self.structure_of[flat])[missing[0]])
            raise MissingForcesError(
                f"structure {s} ({self.structures[s].get_chemical_formula()}) has no "
                "reference forces: attach a calculator result or an arrays['forces'] column"
            )
        return self._forces[flat]

    def fingerprint(self):
        """A hash of every structure's numbers, positions, cell and pbc."""
        if self._fingerprint is None:
            import joblib

            self._fingerprint = joblib.hash(
                [(a.numbers, a.positions, np.asarray(a.cell), a.pbc) for a in self.structures]
            )
        return self._fingerprint


def _concatenate(arrays):
    return np.concatenate(arrays).astype(float) if arrays else np.empty((0, 3))


def _reference_forces(atoms):
    calc = atoms.calc
    if calc is not None and "forces" in getattr(calc, "results", {}):
        return np.asarray(calc.results["forces"], dtype=float)
    if "forces" in atoms.arrays:
        return np.asarray(atoms.arrays["forces"], dtype=float)
    return None


class AtomicEnvironments:
    """Atom-centred samples — "atom *i* of structure *s*" — for local models.

    The structures are shared, not copied, by every subset, so indexing is
    cheap; treat them as read-only snapshots (positions and forces are gathered
    once, on first use). An instance works as ``X`` for scikit-learn's splitters,
    :func:`~sklearn.model_selection.cross_validate`, :class:`~sklearn.pipeline.Pipeline`
    and :class:`~sklearn.model_selection.GridSearchCV`: it has a length, a
    ``shape`` of ``(n_environments,)`` and integer/boolean indexing.

    Parameters
    ----------
    structures : ase.Atoms or sequence of ase.Atoms
        The structures (positions in Å). Reference forces (eV/Å) are taken
        from a calculator's results (e.g. an extxyz file read by ASE) or an
        ``arrays["forces"]`` column.
    species : str or sequence of str, default=None
        Keep only centres of these elements (e.g. ``"H"`` or ``["C", "H"]``).
    atom_types : str or sequence of str, default=None
        Keep only centres of these gold-thiolate types (see
        :func:`~mlmlearn.atoms.gold_thiolate_types`), e.g. ``"Au_core"``.
    bond_cutoff, core_cutoff : float, default=3.0, 5.0
        Cutoffs (Å) of the typing behind ``atom_types``. Give the ones of the
        :class:`~mlmlearn.oamlm.GoldThiolateAlignment` that will align these
        environments: both read the same cached typing, so they then agree.
    groups : array-like of shape (n_structures,), default=None
        A label per structure (e.g. the MD run it comes from), for
        :class:`~sklearn.model_selection.GroupKFold`. Defaults to the structure
        index.

    Attributes
    ----------
    structures : tuple of ase.Atoms
    structure_index, atom_index : ndarray of shape (n_environments,)
        Which structure, and which atom of it, each environment is centred on.

    Examples
    --------
    >>> from ase.build import molecule
    >>> env = AtomicEnvironments([molecule("CH4"), molecule("C2H6")], species="H")
    >>> len(env), env.shape
    (10, (10,))
    >>> env.structure_index
    array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    >>> env[[0, 4]].symbols
    array(['H', 'H'], dtype='<U2')
    >>> env.groups[:5]
    array([0, 0, 0, 0, 1])
    """

    def __init__(
        self,
        structures,
        *,
        species=None,
        atom_types=None,
        bond_cutoff=BOND_CUTOFF,
        core_cutoff=CORE_CUTOFF,
        groups=None,
    ):
        Atoms = import_optional("ase", purpose="AtomicEnvironments").Atoms

        if isinstance(structures, Atoms):
            structures = [structures]
        structures = tuple(structures)
        for s, atoms in enumerate(structures):
            if not isinstance(atoms, Atoms):
                raise TypeError(f"structures[{s}] is {type(atoms).__name__}, not ase.Atoms")
        if groups is None:
            groups = np.arange(len(structures))
        else:
            groups = np.asarray(groups)
            if groups.shape != (len(structures),):
                raise ValueError(
                    f"groups has shape {groups.shape}; expected one label per structure "
                    f"({len(structures)},)"
                )
        store = _Store(structures, groups)
        self._init(store, np.arange(store.offsets[-1]), root=None)
        selected = self.select(
            species=species, atom_types=atom_types, bond_cutoff=bond_cutoff, core_cutoff=core_cutoff
        )
        self._init(store, selected._flat, root=None)

    @classmethod
    def read(
        cls,
        filename,
        index=":",
        *,
        species=None,
        atom_types=None,
        bond_cutoff=BOND_CUTOFF,
        core_cutoff=CORE_CUTOFF,
        groups=None,
        **kwargs,
    ):
        """Read structures with ASE (e.g. an extxyz trajectory with energies and forces).

        ``index`` and ``kwargs`` go to :func:`ase.io.read`; the other arguments
        are the constructor's.
        """
        read = import_optional("ase.io", purpose="AtomicEnvironments.read").read

        structures = read(filename, index=index, **kwargs)
        return cls(
            structures,
            species=species,
            atom_types=atom_types,
            bond_cutoff=bond_cutoff,
            core_cutoff=core_cutoff,
            groups=groups,
        )

    def _init(self, store, flat, root):
        self._store = store
        self._flat = np.asarray(flat, dtype=np.int64)
        if root is None:  # a new caching root: descriptors are cached for these rows
            self._root_flat, self._root_rows = self._flat, np.arange(len(self._flat))
        else:
            self._root_flat, self._root_rows = root

    def _subset(self, rows, new_root=False):
        new = object.__new__(type(self))
        root = None if new_root else (self._root_flat, self._root_rows[rows])
        new._init(self._store, self._flat[rows], root)
        return new

    # -- sequence protocol used by scikit-learn ---------------------------------

    def __len__(self):
        return len(self._flat)

    @property
    def shape(self):
        """``(n_environments,)``, so that scikit-learn counts samples."""
        return (len(self._flat),)

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and key[1] is Ellipsis:
            key = key[0]  # scikit-learn's _safe_indexing passes (rows, ...)
        if isinstance(key, numbers.Integral):
            key = [key]
        rows = np.arange(len(self._flat))[key]
        return self._subset(rows)

    def __repr__(self):
        symbols, counts = np.unique(self.symbols, return_counts=True)
        content = ", ".join(f"{s}: {c}" for s, c in zip(symbols, counts, strict=True))
        return (
            f"AtomicEnvironments({len(self)} environments in "
            f"{len(np.unique(self.structure_index))} structures; {content})"
        )

    # -- what each environment is ---------------------------------------------

    @property
    def structures(self):
        return self._store.structures

    @property
    def structure_index(self):
        return self._store.structure_of[self._flat]

    @property
    def atom_index(self):
        return self._store.atom_of[self._flat]

    @property
    def numbers(self):
        """Atomic number of each centre."""
        return self._store.numbers[self._flat]

    @property
    def symbols(self):
        """Element symbol of each centre."""
        chemical_symbols = import_optional("ase.data").chemical_symbols
        return np.array(chemical_symbols, dtype="<U2")[self.numbers]

    @property
    def atom_types(self):
        """Gold-thiolate type of each centre (``"Au_core"``, ``"Au_unit"``, …, ``"H"``).

        With the default cutoffs; see :meth:`gold_thiolate_types` for others.
        """
        return self.gold_thiolate_types()

    def gold_thiolate_types(self, *, bond_cutoff=BOND_CUTOFF, core_cutoff=CORE_CUTOFF):
        """Gold-thiolate type of each centre under the given typing cutoffs (Å).

        The types of a structure are computed once per pair of cutoffs, from its
        cached neighbour list, and shared by every subset of these environments and
        by :class:`~mlmlearn.oamlm.GoldThiolateAlignment` (which asks with its own
        ``bond_cutoff`` and ``core_cutoff``). See
        :func:`~mlmlearn.atoms.gold_thiolate_types` for the rules.

        Returns
        -------
        types : ndarray of str of shape (n_environments,)

        Raises
        ------
        AtomTypingError
            Naming the structure and atom that match no rule.
        """
        bond_cutoff = _neighbors.check_cutoff(bond_cutoff, "bond_cutoff")
        core_cutoff = _neighbors.check_cutoff(core_cutoff, "core_cutoff")
        return self._store.types(self._flat, bond_cutoff, core_cutoff)

    @property
    def positions(self):
        """Cartesian position of each centre (Å), shape (n_environments, 3)."""
        return self._store.positions(self._flat)

    @property
    def forces(self):
        """Reference force on each centre (eV/Å), shape (n_environments, 3).

        Raises :class:`MissingForcesError` naming the first structure without forces.
        """
        return self._store.forces(self._flat)

    y = forces

    @property
    def groups(self):
        """The group label of each environment's structure (for ``GroupKFold``)."""
        return self._store.groups[self.structure_index]

    # -- selection and geometry -----------------------------------------------

    def select(
        self, *, species=None, atom_types=None, bond_cutoff=BOND_CUTOFF, core_cutoff=CORE_CUTOFF
    ):
        """The environments whose centre is one of ``species`` and/or ``atom_types``.

        ``atom_types`` are those of :meth:`gold_thiolate_types` with ``bond_cutoff``
        and ``core_cutoff`` (Å); pass a :class:`~mlmlearn.oamlm.GoldThiolateAlignment`'s
        cutoffs to select exactly the atoms it types so.

        The result is a new caching root for descriptor transformers with
        ``memory=``: its descriptors are computed (and cached) for its own rows only.
        """
        keep = np.ones(len(self), dtype=bool)
        if species is not None:
            wanted = _as_tuple(species)
            symbols = self.symbols
            chemical_symbols = import_optional("ase.data").chemical_symbols
            unknown = [s for s in wanted if s not in chemical_symbols[1:]]
            if unknown:
                raise ValueError(f"species={species!r}: {unknown[0]!r} is not an element")
            keep &= np.isin(symbols, wanted)
        if atom_types is not None:
            from ._atom_types import GOLD_THIOLATE_TYPES

            wanted = _as_tuple(atom_types)
            unknown = [t for t in wanted if t not in GOLD_THIOLATE_TYPES]
            if unknown:
                raise ValueError(
                    f"atom_types={atom_types!r}: {unknown[0]!r} is not one of {GOLD_THIOLATE_TYPES}"
                )
            types = self.gold_thiolate_types(bond_cutoff=bond_cutoff, core_cutoff=core_cutoff)
            keep &= np.isin(types, wanted)
        return self._subset(np.flatnonzero(keep), new_root=True)

    def neighbors(self, cutoff):
        """Neighbours of every centre within ``cutoff`` Å, nearest first.

        Each structure's full neighbour list is computed once per cutoff (read from
        a larger cached one when there is one) and shared with the atom typing and
        the OAMLM's alignment strategies.

        Parameters
        ----------
        cutoff : float
            Radius in Å; neighbours at distance d ≤ cutoff count.

        Returns
        -------
        neighborhoods : list of Neighborhood
            One ``(indices, numbers, distances, vectors)`` per environment;
            ``vectors`` point from the centre to each neighbour (Å). In periodic
            cells every image within the cutoff is a neighbour (images of the
            centre itself included), so cells smaller than twice the cutoff are
            handled.

        Examples
        --------
        >>> from ase.build import molecule
        >>> hood = AtomicEnvironments(molecule("C2H6"), species="C").neighbors(1.6)[0]
        >>> hood.numbers.tolist(), hood.distances.round(2).tolist()
        ([1, 1, 1, 6], [1.09, 1.09, 1.09, 1.52])
        """
        cutoff = _neighbors.check_cutoff(cutoff)
        out = [None] * len(self)
        atom = self.atom_index
        for s, rows in self.structure_rows():
            numbers = self.structures[s].numbers
            nl = self._store.neighbor_list(s, cutoff)
            for row in rows:
                index, distance, vector = nl.of(atom[row])
                out[row] = Neighborhood(index, numbers[index], distance, vector)
        return out

    def neighbor_list(self, structure, cutoff):
        """The full neighbour list of one structure within ``cutoff`` Å (cached, shared).

        Parameters
        ----------
        structure : int
            Index into :attr:`structures`.
        cutoff : float
            Radius in Å.

        Returns
        -------
        NeighborList
            Every atom's neighbours, nearest first, with distances and vectors
            (see :func:`~mlmlearn.atoms.neighbor_list`). Computed once per
            structure and cutoff; a smaller cutoff is read from a larger cached list.
        """
        return self._store.neighbor_list(int(structure), cutoff)

    def structure_rows(self):
        """Yield ``(structure, rows)``: each structure index and the rows centred in it."""
        structure = self.structure_index
        if structure.size == 0:
            return
        order = np.argsort(structure, kind="stable")
        which, starts = np.unique(structure[order], return_index=True)
        for s, rows in zip(which, np.split(order, starts[1:]), strict=True):
            yield int(s), rows

    def _cache_payload(self):
        """What a cached descriptor of this root depends on (structures and centres)."""
        flat = self._root_flat
        structure = self._store.structure_of[flat]
        return self._store.fingerprint(), structure, self._store.atom_of[flat]


def _as_tuple(value):
    return (value,) if isinstance(value, str) else tuple(value)
