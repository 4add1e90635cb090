"""Atom-centred samples over a shared set of structures: the ``X`` of local models."""

import numbers
from collections import namedtuple

import numpy as np

from .._optional import import_optional
from . import _neighbors

__all__ = [
    "AtomicEnvironments",
    "InconsistentStructureError",
    "MissingForcesError",
    "MissingReferenceError",
    "Neighborhood",
    "StaleCalculatorError",
]

#: Neighbours of one centre, nearest first: structure-local ``indices`` (for a
#: periodic image, the atom it is an image of), atomic ``numbers``, ``distances``
#: (Å) and ``vectors`` from the centre to each neighbour (Å, periodic image included).
Neighborhood = namedtuple("Neighborhood", ["indices", "numbers", "distances", "vectors"])

#: Default cutoffs (Å) of the gold-thiolate typing, paper IV section II C.
BOND_CUTOFF, CORE_CUTOFF = 3.0, 5.0


class MissingReferenceError(ValueError):
    """A structure has no reference value (forces, energy) where one is needed."""


class MissingForcesError(MissingReferenceError):
    """A structure has no reference forces where forces are needed."""


class InconsistentStructureError(ValueError):
    """A per-structure array (forces, energy) does not fit the structure it belongs to.

    Raised for a wrong shape (e.g. force rows of a structure that has since
    lost an atom) or a non-finite value; the message names the structure index.
    """


class StaleCalculatorError(InconsistentStructureError):
    """A calculator's stored results were computed for another state of the structure.

    ASE's ``get_forces()`` refuses such a structure too: the calculator's
    ``check_state`` reports what changed (positions, numbers, cell, …).
    """


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
        self._force_errors = None
        self._energies = None
        self._energy_errors = None
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
        for s, rows in _rows_by_structure(self.structure_of[flat]):
            out[rows] = self.types_of(s, bond_cutoff, core_cutoff)[self.atom_of[flat[rows]]]
        return out

    def forces(self, flat):
        """Reference forces of the atoms ``flat``, every structure checked once, on first use.

        Raises the first failure (:class:`MissingForcesError`,
        :class:`StaleCalculatorError`, :class:`InconsistentStructureError`) among
        the structures of ``flat`` only: other structures may lack forces.
        """
        if self._forces is None:
            per_structure, self._force_errors = self._gather("forces")
            self._forces = _concatenate(per_structure)
        _raise_first(self._force_errors, self.structure_of[flat])
        return self._forces[flat]

    def energies(self):
        """Reference potential energy (eV) of every structure, shape (n_structures,)."""
        if self._energies is None:
            per_structure, self._energy_errors = self._gather("energy")
            self._energies = np.array(per_structure, dtype=float)
        _raise_first(self._energy_errors, np.arange(len(self.structures)))
        return self._energies

    def _gather(self, name):
        """Each structure's checked ``name`` result (NaN where absent) and its failures."""
        values, errors = [], {}
        for s, atoms in enumerate(self.structures):
            try:
                value = _reference(atoms, s, name)
            except InconsistentStructureError as exc:
                errors[s], value = exc, None
            if value is None:
                if s not in errors:
                    errors[s] = _missing(atoms, s, name)
                value = np.full(_SHAPES[name](len(atoms)), np.nan)
            values.append(value)
        return values, errors

    def fingerprint(self):
        """A hash of every structure's numbers, positions, cell and pbc."""
        if self._fingerprint is None:
            import joblib

            self._fingerprint = joblib.hash(
                [(a.numbers, a.positions, np.asarray(a.cell), a.pbc) for a in self.structures]
            )
        return self._fingerprint


def _rows_by_structure(structure):
    """Yield ``(s, rows)`` per distinct ``s`` of ``structure``, ascending (one sort in all)."""
    if structure.size == 0:
        return
    order = np.argsort(structure, kind="stable")
    which, starts = np.unique(structure[order], return_index=True)
    for s, rows in zip(which, np.split(order, starts[1:]), strict=True):
        yield int(s), rows


def _concatenate(arrays):
    return np.concatenate(arrays).astype(float) if arrays else np.empty((0, 3))


#: The shape of each per-structure reference array, given the structure's atom count.
_SHAPES = {"forces": lambda n: (n, 3), "energy": lambda n: ()}


def _reference(atoms, s, name):
    """Structure ``s``'s stored ``name`` (``"forces"`` or ``"energy"``), checked; None if absent.

    Read as ``atoms.get_forces()`` would, but from stored results only (no
    calculator ever runs): a calculator's result first — refused if its
    ``check_state(atoms)`` reports a change since it was computed — then, for
    forces, an ``arrays["forces"]`` column. The value must have the shape of
    ``_SHAPES`` and be finite.
    """
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    if calc is not None and name in results:
        source = f"its {type(calc).__name__}'s stored {name!r} result"
        changes = _changes(calc, atoms)
        if changes is None or changes:
            why = (
                f"changed since: {', '.join(changes)}"
                if changes
                else "the calculator has no check_state to confirm it"
            )
            raise StaleCalculatorError(
                f"structure {s} ({atoms.get_chemical_formula()}, {len(atoms)} atoms): {source} "
                f"was computed for another state of the structure ({why}); recompute it or "
                "attach a result for the structure as it is"
            )
        value = results[name]
    elif name == "forces" and "forces" in atoms.arrays:
        value, source = atoms.arrays["forces"], "its arrays['forces'] column"
    else:
        return None

    def where():
        return f"structure {s} ({atoms.get_chemical_formula()}, {len(atoms)} atoms): {source}"

    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InconsistentStructureError(f"{where()} is not numeric ({exc})") from None
    expected = _SHAPES[name](len(atoms))
    if array.shape != expected:
        raise InconsistentStructureError(f"{where()} has shape {array.shape}, not {expected}")
    if not np.isfinite(array).all():
        bad = tuple(np.argwhere(~np.isfinite(array))[0])
        at = f" on atom {bad[0]}" if array.ndim else ""
        raise InconsistentStructureError(
            f"{where()} holds a non-finite value{at}: {float(array[bad])!r}"
        )
    return array


def _changes(calc, atoms):
    """``calc.check_state(atoms)`` as a list (None without one), exact copies short-cut.

    ASE's ``compare_atoms`` costs ~0.1 ms; a calculator with ``Calculator``'s
    rule (compare the remembered structure within 1e-15, ignoring
    ``ignored_changes``) whose remembered structure equals ``atoms`` exactly in
    every property of ``all_changes`` has no changes by that rule, so only
    other cases call it.
    """
    calculator = import_optional("ase.calculators.calculator", purpose="AtomicEnvironments")
    Calculator, all_changes = calculator.Calculator, calculator.all_changes
    check_state = getattr(calc, "check_state", None)
    if check_state is None:
        return None
    ref = getattr(calc, "atoms", None)
    if (
        type(calc).check_state is Calculator.check_state
        and ref is not None
        and len(ref) == len(atoms)
        and all(_same(ref, atoms, prop) for prop in all_changes)
    ):
        return []
    return list(check_state(atoms))


def _same(a, b, prop):
    """Whether property ``prop`` of ``a`` and ``b`` is bit for bit the same."""
    if prop in ("cell", "pbc"):
        x, y = np.asarray(getattr(a, prop)), np.asarray(getattr(b, prop))
    elif prop in a.arrays and prop in b.arrays:
        x, y = a.arrays[prop], b.arrays[prop]
    else:
        return (prop in a.arrays) == (prop in b.arrays)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _missing(atoms, s, name):
    what = (
        "reference forces: attach a calculator result or an arrays['forces'] column"
        if name == "forces"
        else f"reference {name}: attach a calculator result"
    )
    error = MissingForcesError if name == "forces" else MissingReferenceError
    return error(f"structure {s} ({atoms.get_chemical_formula()}) has no {what}")


def _raise_first(errors, structures):
    """Raise (a fresh copy of) the failure of the lowest structure index in ``structures``."""
    if errors:
        for s in np.unique(structures):
            if int(s) in errors:
                error = errors[int(s)]
                raise type(error)(*error.args)


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
        The structures (positions in Å). Reference forces (eV/Å) and
        energies (eV) are taken from a calculator's stored results (e.g. an
        extxyz file read by ASE; no calculation is ever started) if the
        calculator's ``check_state`` confirms they belong to the structure as
        it is now — as ``atoms.get_forces()`` would — or else, for forces, from
        an ``arrays["forces"]`` column; each is checked for shape and finite
        values on first use (see :attr:`forces`).
    species : str or sequence of str, default=None
        Keep only centres of these elements (e.g. ``"H"`` or ``["C", "H"]``).
    atom_types : str or sequence of str, default=None
        Keep only centres of these gold-thiolate types (see
        :func:`~mlmlearn.atoms.gold_thiolate_types`), e.g. ``"Au_core"``.
    bond_cutoff, core_cutoff : float, default=3.0, 5.0
        Cutoffs (Å) of the typing behind ``atom_types``. Give the ones of the
        :class:`~mlmlearn.oamlm.GoldThiolateAlignment` that will align these
        environments: both read the same cached typing, so they then agree.
        With ``atom_types``, they are remembered as :attr:`typing_cutoffs`, and
        a ``GoldThiolateAlignment`` with other cutoffs refuses the environments.
    groups : array-like of shape (n_structures,), default=None
        A label per structure (e.g. the MD run it comes from), for
        :class:`~sklearn.model_selection.GroupKFold`. Defaults to the structure
        index.

    Attributes
    ----------
    structures : tuple of ase.Atoms
    structure_index, atom_index : ndarray of shape (n_environments,)
        Which structure, and which atom of it, each environment is centred on.
    typing_cutoffs : tuple of float or None
        ``(bond_cutoff, core_cutoff)`` (Å) of the ``atom_types`` selection these
        environments come from; ``None`` if they were not selected by type.

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
        if len(selected) == 0 and len(self) and (species is not None or atom_types is not None):
            present = sorted(set(self.symbols.tolist()))
            raise ValueError(
                f"species={species!r}, atom_types={atom_types!r} selects no atom of the "
                f"{len(structures)} structures, which contain {present}"
            )
        self._init(store, selected._flat, root=None, typing=selected._typing)

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

    def _init(self, store, flat, root, typing=None):
        self._store = store
        self._flat = np.asarray(flat, dtype=np.int64)
        self._typing = typing  # (bond_cutoff, core_cutoff) of an atom_types selection
        if root is None:  # a new caching root: descriptors are cached for these rows
            self._root_flat, self._root_rows = self._flat, np.arange(len(self._flat))
        else:
            self._root_flat, self._root_rows = root

    def _subset(self, rows, new_root=False, typing=None):
        """Rows ``rows`` of these environments; they keep this selection's typing cutoffs."""
        new = object.__new__(type(self))
        root = None if new_root else (self._root_flat, self._root_rows[rows])
        new._init(self._store, self._flat[rows], root, self._typing if typing is None else typing)
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
    def typing_cutoffs(self):
        """``(bond_cutoff, core_cutoff)`` (Å) of the ``atom_types`` selection, or None.

        Set by ``select(atom_types=...)`` (and the constructor's ``atom_types``)
        and kept by every subset (indexing, splitting, ``select(species=...)``);
        a later ``select(atom_types=...)`` replaces it with its own cutoffs.
        :class:`~mlmlearn.oamlm.GoldThiolateAlignment` refuses environments
        selected under cutoffs other than its own, whose typing could put the
        selected atoms under other rules.
        """
        return self._typing

    @property
    def atom_types(self):
        """Gold-thiolate type of each centre (``"Au_core"``, ``"Au_unit"``, …, ``"H"``).

        Under :attr:`typing_cutoffs` when these environments were selected by
        type, else the default cutoffs (3.0, 5.0 Å); see
        :meth:`gold_thiolate_types` for others.
        """
        bond_cutoff, core_cutoff = self._typing or (BOND_CUTOFF, CORE_CUTOFF)
        return self.gold_thiolate_types(bond_cutoff=bond_cutoff, core_cutoff=core_cutoff)

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

        Each structure's forces are read once, from stored results only (see
        the class description), and checked against the structure.

        Raises
        ------
        MissingForcesError
            A structure of these environments has no forces.
        StaleCalculatorError
            A structure changed (moved, lost or gained atoms, …) after its
            calculator's results were computed, as ``calc.check_state`` reports.
        InconsistentStructureError
            A structure's forces are not of shape (n_atoms, 3) or not finite.

        Each message names the first such structure (its index and formula).
        """
        return self._store.forces(self._flat)

    y = forces

    @property
    def structure_energies(self):
        """Reference potential energy (eV) of each of ``structures``, shape (n_structures,).

        Index it with ``structure_index`` for the energy of each environment's
        structure. Read and checked as :attr:`forces` are (a stored calculator
        result, current and finite); raises :class:`MissingReferenceError`,
        :class:`StaleCalculatorError` or :class:`InconsistentStructureError`
        naming the first structure that fails.
        """
        return self._store.energies()

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
        cutoffs to select exactly the atoms it types so. The result remembers them
        as :attr:`typing_cutoffs` (a selection by ``species`` alone keeps these
        environments' own), and that alignment with other cutoffs refuses it.

        The result is a new caching root for descriptor transformers with
        ``memory=``: its descriptors are computed (and cached) for its own rows only.
        """
        keep = np.ones(len(self), dtype=bool)
        typing = None  # keep this selection's, unless atom_types selects anew
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
            bond_cutoff = _neighbors.check_cutoff(bond_cutoff, "bond_cutoff")
            core_cutoff = _neighbors.check_cutoff(core_cutoff, "core_cutoff")
            types = self.gold_thiolate_types(bond_cutoff=bond_cutoff, core_cutoff=core_cutoff)
            keep &= np.isin(types, wanted)
            typing = (bond_cutoff, core_cutoff)
        return self._subset(np.flatnonzero(keep), new_root=True, typing=typing)

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
        return _rows_by_structure(self.structure_index)

    def _cache_payload(self):
        """What a cached descriptor of this root depends on (structures and centres)."""
        flat = self._root_flat
        structure = self._store.structure_of[flat]
        return self._store.fingerprint(), structure, self._store.atom_of[flat]


def _as_tuple(value):
    return (value,) if isinstance(value, str) else tuple(value)
