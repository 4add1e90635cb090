"""SOAP power spectra of atomic environments (thesis section 2.2, paper IV eqs. 1–4)."""

import copy
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._optional import import_optional
from ._descriptor import COMMON_CONSTRAINTS, DescriptorTransformer
from ._environments import AtomicEnvironments, _rows_by_structure

__all__ = ["SOAP"]


class SOAP(DescriptorTransformer):
    """Smooth Overlap of Atomic Positions, one row per atomic environment.

    A clonable scikit-learn transformer around :class:`dscribe.descriptors.SOAP`:
    every parameter can be swept by :class:`~sklearn.model_selection.GridSearchCV`
    (``soap__r_cut=[4.0, 5.0]``), the species are fixed at :meth:`fit`, and
    descriptors can be cached across search candidates with ``memory``.

    Parameters
    ----------
    species : sequence of str, default=None
        Elements the descriptor knows. ``None`` takes every element present in
        the structures seen by :meth:`fit`.
    r_cut : float, default=4.0
        Cutoff radius in Å.
    n_max : int, default=7
        Number of radial basis functions.
    l_max : int, default=4
        Maximum degree of spherical harmonics.
    sigma : float, default=0.25
        Width in Å of the Gaussians of the atom density, σ_SOAP of paper IV eq. (1).
    rbf : {"gto", "polynomial"}, default="gto"
        Radial basis.
    weighting : dict, default=None
        dscribe's radial weighting (copied, never modified).
    periodic : bool, default=False
        Use the cell's periodic images.
    dtype : {"float64", "float32"}, default="float64"
    n_jobs : int, default=None
        Parallel jobs over structures (joblib's meaning: ``None`` is 1, ``-1``
        all cores).
    memory : str or joblib.Memory, default=None
        Cache the descriptors of the environments a transform call derives
        from (its caching root: what was built or :meth:`~AtomicEnvironments.select`-ed,
        before any splitting) on disk, so cross-validation folds and search
        candidates that share SOAP parameters compute them once.

    Attributes
    ----------
    species_ : list of str
    center_species_ : list of str
        Elements of the centres seen at fit. Transforming a centre of another
        element raises a ``ValueError`` naming its structure and atom: the models
        downstream learnt from these centres only, so e.g. a carbon model handed
        whole structures would otherwise predict for their hydrogens silently.
    descriptor_ : dscribe.descriptors.SOAP
    n_features_out_ : int

    Examples
    --------
    >>> from ase.build import molecule
    >>> from mlmlearn.atoms import AtomicEnvironments
    >>> env = AtomicEnvironments([molecule("CH4"), molecule("C2H6")], species="H")
    >>> soap = SOAP(r_cut=3.0, n_max=2, l_max=1).fit(env)
    >>> soap.species_  # ordered by atomic number
    ['H', 'C']
    >>> soap.transform(env).shape
    (10, 20)
    """

    _feature_prefix = "soap"
    _parameter_constraints: dict = {
        **COMMON_CONSTRAINTS,
        "r_cut": [Interval(Real, 0, None, closed="neither")],
        "n_max": [Interval(Integral, 1, None, closed="left")],
        "l_max": [Interval(Integral, 0, None, closed="left")],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "rbf": [StrOptions({"gto", "polynomial"})],
        "weighting": [dict, None],
    }

    def __init__(
        self,
        *,
        species=None,
        r_cut=4.0,
        n_max=7,
        l_max=4,
        sigma=0.25,
        rbf="gto",
        weighting=None,
        periodic=False,
        dtype="float64",
        n_jobs=None,
        memory=None,
    ):
        self.species = species
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.rbf = rbf
        self.weighting = weighting
        self.periodic = periodic
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.memory = memory

    @staticmethod
    def _dscribe_class():
        return import_optional("dscribe.descriptors", purpose="SOAP").SOAP

    def _dscribe_kwargs(self, species):
        return dict(
            species=list(species),
            r_cut=float(self.r_cut),
            n_max=int(self.n_max),
            l_max=int(self.l_max),
            sigma=float(self.sigma),
            rbf=self.rbf,
            weighting=copy.deepcopy(self.weighting),
            periodic=bool(self.periodic),
            sparse=False,
            dtype=self.dtype,
        )

    @staticmethod
    def _as_environments(X):
        Atoms = import_optional("ase", purpose="SOAP").Atoms
        if isinstance(X, AtomicEnvironments):
            return X
        if isinstance(X, Atoms) or (
            isinstance(X, (list, tuple)) and all(isinstance(a, Atoms) for a in X)
        ):
            return AtomicEnvironments(X)
        raise TypeError(f"SOAP takes AtomicEnvironments (or ase.Atoms), got {type(X).__name__}")

    def _structures(self, X):
        return self._as_environments(X).structures

    def fit(self, X, y=None):
        """Fix the species and the centres' elements, and build the descriptor.

        Parameters
        ----------
        X : AtomicEnvironments or ase.Atoms or list of ase.Atoms
            A list of structures means every atom of every structure.
        y : ignored

        Returns
        -------
        self
        """
        super().fit(X, y)
        numbers = np.unique(self._as_environments(X).numbers)  # ordered by atomic number
        chemical_symbols = import_optional("ase.data", purpose="SOAP").chemical_symbols
        self.center_species_ = [chemical_symbols[z] for z in numbers]
        return self

    def _check_centers(self, env):
        """Raise naming the first centre whose element was not a centre at fit."""
        symbols = env.symbols
        bad = np.flatnonzero(~np.isin(symbols, self.center_species_))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"atom {int(env.atom_index[i])} of structure {int(env.structure_index[i])} is "
                f"{symbols[i]}, but this SOAP was fitted on {self.center_species_} centres only; "
                "select the centres the model was trained on, e.g. "
                f"AtomicEnvironments(structures, species={self.center_species_!r})"
            )

    def transform(self, X):
        """SOAP vector of every environment.

        Parameters
        ----------
        X : AtomicEnvironments or ase.Atoms or list of ase.Atoms
            A list of structures means every atom of every structure.

        Returns
        -------
        X_new : ndarray of shape (n_environments, n_features_out_)
        """
        check_is_fitted(self, "descriptor_")
        env = self._as_environments(X)
        self._check_species(env.structures, np.unique(env.structure_index))
        self._check_centers(env)
        memory = self._memory()
        if memory.location is None:
            return _soap_rows(
                self.descriptor_,
                env.structures,
                env.structure_index,
                env.atom_index,
                self._n_jobs(),
            )
        fingerprint, structure, atom = env._cache_payload()
        cached = memory.cache(_cached_soap_rows, ignore=["structures", "n_jobs"])
        rows = cached(
            self._dscribe_kwargs(self.species_),
            fingerprint,
            structure,
            atom,
            structures=env.structures,
            n_jobs=self._n_jobs(),
        )
        return rows[env._root_rows]

    def derivatives(self, atoms):
        """SOAP of every atom of one structure and its analytic gradient in the positions.

        The gradient is dscribe's analytic one with ``attach=True``: each centre
        moves with its atom, which is what makes it the gradient of
        :meth:`transform` (with ``attach=False`` it differs from finite differences
        by 5–22 % for gold-thiolate rings). It is the input of a potential's
        forces, ``F = −∂E/∂r`` (:class:`~mlmlearn.forcefield.EMLMPotential`).

        Parameters
        ----------
        atoms : ase.Atoms
            One structure; positions in Å.

        Returns
        -------
        X : ndarray of shape (n_atoms, n_features_out_)
            The SOAP rows, as :meth:`transform` gives them for every atom.
        dX : ndarray of shape (n_atoms, n_atoms, 3, n_features_out_)
            ``dX[i, j, a] = ∂X[i] / ∂r[j, a]`` in Å⁻¹.

        Raises
        ------
        ValueError
            If ``atoms`` contains an element outside ``species_``.

        Notes
        -----
        The array is dense: 1.2 GB for 155 atoms at 2030 features. Most of it is
        zero (atom ``j`` outside the cutoff of centre ``i``);
        :meth:`sparse_derivatives` gives the nonzero pairs only, several times
        faster. This method stays as its oracle.
        """
        check_is_fitted(self, "descriptor_")
        self._check_species([atoms], [0])
        dX, X = self.descriptor_.derivatives(
            atoms, attach=True, method="analytical", return_descriptor=True
        )
        n = len(atoms)
        return (np.asarray(X).reshape(n, self.n_features_out_),
                np.asarray(dX).reshape(n, n, 3, self.n_features_out_))

    def sparse_derivatives(self, atoms):
        """SOAP of every atom of one structure and its gradient over the pairs within the cutoff.

        The same analytic gradient as :meth:`derivatives` (dscribe's GTO
        basis, each centre moving with its atom), for the (centre, atom) pairs
        where it can be nonzero only: the atom itself, and every atom with an
        image within ``r_cut + padding`` of the centre, where dscribe's padding
        ``σ √(−2 ln 10⁻³)`` (0.93 Å at σ = 0.25 Å) extends the cutoff so that
        the Gaussians of the atom density have decayed to 10⁻³ at ``r_cut``.
        For Au25(SCH3)18 (115 atoms, 544 features) that is 19 % of the pairs,
        33 MB instead of 173 MB, and about a fifth of the time. It also works
        for periodic structures and with a radial ``weighting``, where dscribe
        has no analytic derivatives. The expansion and the power spectrum's
        derivative are computed by this package's compiled kernels
        (``mlmlearn.atoms._soap_gradient``) with dscribe's constants, neighbour
        test, weighting functions and feature order.

        Parameters
        ----------
        atoms : ase.Atoms
            One structure; positions in Å. With ``periodic=True`` its cell and
            ``pbc`` define the images (all of them within the cutoff, however
            small the cell).

        Returns
        -------
        X : ndarray of shape (n_atoms, n_features_out_)
            The SOAP rows, exactly as :meth:`transform` gives them for every
            atom (same dtype).
        centre, atom : ndarray of shape (n_pairs,), int64
            Every pair ``(i, j)`` whose derivative can be nonzero, sorted by
            centre, then atom; every ``(i, i)`` is among them.
        dX : ndarray of shape (n_pairs, 3, n_features_out_), float64
            ``dX[p, a] = ∂X[centre[p]] / ∂r[atom[p], a]`` in Å⁻¹. Pairs not
            listed have a zero derivative.

        Raises
        ------
        ValueError
            If ``atoms`` contains an element outside ``species_``, or the
            descriptor has ``rbf="polynomial"`` (no analytic derivatives).

        Notes
        -----
        Equal to :meth:`derivatives` up to rounding except where dscribe drops a
        term of the power spectrum's derivative whose two coefficients are both
        below 1e-8 in absolute value (atoms near the cutoff); this method keeps
        every term, so it is the exact gradient of :meth:`transform`'s rows
        (differences up to ~1e-9 of a centre's largest derivative on gold
        thiolates). The potential's force on atom ``j`` is
        ``−Σ_p [atom[p] = j] dX[p] · ∂E/∂X[centre[p]]`` (:meth:`pullback`
        computes it without ``dX``).

        Without a weighting, dscribe's features jump when an atom crosses
        ``r_cut + padding`` (its Gaussian tail there is cut off: ~5e-5 of
        features of norm ~0.7 for a dimer at the default σ), so an energy built
        on them jumps too (0.2–1 meV per crossing for a potential fitted on
        Au25(SCH3)18, up to 10 meV on a ring). ``weighting={"function": "poly",
        "r0": r0, "c": 1, "m": 2}`` with ``r0 ≤ r_cut + padding`` makes every
        contribution and its gradient vanish smoothly at ``r0``.

        Examples
        --------
        >>> from ase.build import molecule
        >>> soap = SOAP(r_cut=3.0, n_max=2, l_max=1).fit([molecule("C2H6")])
        >>> X, centre, atom, dX = soap.sparse_derivatives(molecule("C2H6"))
        >>> X.shape, dX.shape[1:], bool((centre == atom).sum() == 8)
        ((8, 20), (3, 20), True)
        """
        from . import _soap_gradient

        X, expansion, constants = self._expansion(atoms, "sparse_derivatives")
        centre, atom, dX = _soap_gradient.sparse_soap_derivatives(expansion, constants)
        return X, centre, atom, dX

    def pullback(self, atoms):
        """SOAP rows of one structure and the vector-Jacobian product of their gradient.

        ``pullback(G)`` returns ``Σ_i G[i] · ∂X[i]/∂r`` for every atom — with
        ``G[i] = ∂E/∂X[i]`` the gradient of an energy in the positions, minus
        the forces — contracted through the expansion coefficients without
        forming ``∂X/∂r``: the same numbers as contracting
        :meth:`sparse_derivatives` with ``G`` (up to rounding), at a fraction of
        the cost (for Au25(SCH3)18 with 544 features the contraction takes
        ~1 ms instead of the ~10 ms the derivative array takes to fill).

        Parameters
        ----------
        atoms : ase.Atoms
            One structure; positions in Å (periodic as in :meth:`sparse_derivatives`).

        Returns
        -------
        X : ndarray of shape (n_atoms, n_features_out_)
            The SOAP rows, exactly as :meth:`transform` gives them.
        pullback : callable
            ``pullback(G)`` with ``G`` of shape (n_atoms, n_features_out_)
            returns an ndarray of shape (n_atoms, 3): ``Σ_i G[i] · ∂X[i]/∂r[j]``
            in units of ``G`` per Å. It may be called any number of times.

        Raises
        ------
        ValueError
            As :meth:`sparse_derivatives`; ``pullback`` raises if ``G`` has
            the wrong shape.

        Examples
        --------
        >>> from ase.build import molecule
        >>> soap = SOAP(r_cut=3.0, n_max=2, l_max=1).fit([molecule("C2H6")])
        >>> X, pullback = soap.pullback(molecule("C2H6"))
        >>> pullback(np.ones_like(X)).shape  # ∂(Σ X)/∂r
        (8, 3)
        """
        from . import _soap_gradient

        X, expansion, constants = self._expansion(atoms, "pullback")

        def pullback(G):
            return _soap_gradient.soap_pullback(expansion, constants, G)

        return X, pullback

    def _expansion(self, atoms, method):
        """The rows of ``atoms`` (as transform), its expansion and the GTO constants."""
        from . import _soap_gradient

        check_is_fitted(self, "descriptor_")
        self._check_species([atoms], [0])
        if self.rbf != "gto":
            raise ValueError(f"{method} needs rbf='gto', got rbf={self.rbf!r}: dscribe "
                             "has no analytic derivatives of the polynomial basis")
        n = len(atoms)
        X = _soap_rows(self.descriptor_, [atoms], np.zeros(n, dtype=np.int64),
                       np.arange(n), 1)
        constants = _soap_gradient.gto_constants(
            float(self.r_cut), int(self.n_max), int(self.l_max), float(self.sigma))
        atomic_numbers = import_optional("ase.data", purpose="SOAP").atomic_numbers
        known = np.array(sorted(atomic_numbers[s] for s in self.species_))
        periodic = bool(self.periodic) and bool(np.any(atoms.pbc))
        expansion = _soap_gradient.soap_expansion(
            atoms.positions, np.searchsorted(known, atoms.numbers), len(known), constants,
            cell=np.asarray(atoms.cell) if periodic else None,
            pbc=np.asarray(atoms.pbc) if periodic else None, weighting=self.weighting)
        return X, expansion, constants


def _soap_rows(soap, structures, structure_index, atom_index, n_jobs):
    """Rows of the dscribe ``soap`` in the order of ``(structure_index, atom_index)``.

    Row for row the numbers of dscribe's ``soap.create(structures[s], centers=...)``.
    Each structure's rows are written by dscribe's compiled SOAP straight into the
    output (:func:`_row_writer`), without dscribe's per-call list building, result
    stacking and copies; only rows of a structure that are not contiguous in the
    output, or a float32 output, pass through one float64 block. With
    ``n_jobs > 1`` contiguous chunks of the structures go to joblib workers.
    """
    n_features = soap.get_number_of_features()
    out = np.zeros((len(structure_index), n_features), dtype=soap.dtype)
    groups = list(_rows_by_structure(structure_index))
    n_jobs = min(n_jobs, len(groups))
    if n_jobs <= 1:
        _fill_rows(soap, structures, groups, atom_index, out)
        return out
    from joblib import Parallel, delayed

    bounds = np.linspace(0, len(groups), n_jobs + 1).astype(int)
    chunks = [groups[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_chunk_rows)(soap, {s: structures[s] for s, _ in chunk},
                             [(s, atom_index[rows]) for s, rows in chunk], n_features)
        for chunk in chunks
    )
    for chunk, part in zip(chunks, parts, strict=True):
        out[np.concatenate([rows for _, rows in chunk])] = part
    return out


def _chunk_rows(soap, structures, centres, n_features):
    """One joblib task: the rows of ``centres`` (``(s, atom indices)`` pairs), stacked."""
    out = np.zeros((sum(len(c) for _, c in centres), n_features), dtype=soap.dtype)
    groups, start = [], 0
    for s, c in centres:
        groups.append((s, np.arange(start, start + len(c))))
        start += len(c)
    atom_index = np.concatenate([c for _, c in centres])
    _fill_rows(soap, structures, groups, atom_index, out)
    return out


def _fill_rows(soap, structures, groups, atom_index, out):
    """Write the rows ``rows`` of ``out`` for every ``(s, rows)`` of ``groups``."""
    write = _row_writer(soap)
    direct = out.dtype == np.float64
    for s, rows in groups:
        start, stop = int(rows[0]), int(rows[-1]) + 1
        centers = atom_index[rows]
        if direct and stop - start == rows.size:  # ascending rows: contiguous
            write(s, structures[s], centers, out[start:stop])
        else:
            block = np.zeros((rows.size, out.shape[1]))
            write(s, structures[s], centers, block)
            out[rows] = block  # float64 → dtype as dscribe's own conversion


def _row_writer(soap):
    """``write(s, atoms, centers, target)``: the float64 SOAP rows of ``atoms`` at the
    atom indices ``centers`` into ``target`` (a float64 array, possibly a view).

    dscribe's ``SOAP.create_single`` validates the structure, builds its compiled
    ``SOAPGTO`` or ``SOAPPolynomial`` object (the polynomial basis integrated
    anew) and fills a fresh array, for every structure. Here the compiled object
    is built once, the same way and from the same attributes, and fills
    ``target`` in place (its ``create`` takes any float64 array). That mirrors
    dscribe 2.1's internals, so it is used with dscribe 2.1 only (the tests
    compare it with ``create`` bit for bit); any other version goes through the
    public ``create_single``. dscribe's checks are kept: unknown elements are
    refused before (``_check_species``), a periodic descriptor needs a cell of
    nonzero volume (raised here naming the structure).
    """
    extension = _extension(soap)
    periodic = bool(soap.periodic)
    if extension is None:
        def write(s, atoms, centers, target):
            _check_cell(s, atoms, periodic)
            target[...] = soap.create_single(atoms, centers=centers)
        return write
    complete_cell = import_optional("ase.geometry", purpose="SOAP").complete_cell

    def write(s, atoms, centers, target):
        _check_cell(s, atoms, periodic)
        positions = atoms.positions
        extension.create(target, positions, atoms.numbers, complete_cell(atoms.cell),
                         np.asarray(atoms.pbc, dtype=bool), positions[centers])
    return write


def _extension(soap):
    """dscribe's compiled object for ``soap``, built as ``create_single`` builds it;
    None unless dscribe is 2.1 and the output is plain (dense, not averaged)."""
    from importlib.metadata import version

    if not version("dscribe").startswith("2.1.") or soap.average != "off" or soap.sparse:
        return None
    ext = import_optional("dscribe.ext", purpose="SOAP")
    common = (soap._r_cut, soap._n_max, soap._l_max, soap._eta, soap._weighting, soap.average,
              soap.get_cutoff_padding(), soap._atomic_numbers, soap._species_weights,
              soap.periodic, soap.compression["mode"])
    if soap._rbf == "gto":
        return ext.SOAPGTO(*common, soap._alphas.flatten(), soap._betas.flatten())
    rx, gss = soap.get_basis_poly(soap._r_cut, soap._n_max)
    return ext.SOAPPolynomial(*common, rx, gss.flatten())


def _check_cell(s, atoms, periodic):
    """dscribe's refusal of a periodic descriptor on a flat cell, naming the structure."""
    if periodic:
        cell = np.asarray(atoms.cell)
        if np.cross(cell[0], cell[1]) @ cell[2] == 0:
            raise ValueError(
                f"structure {s} has a cell of zero volume ({cell.tolist()}), but this SOAP "
                "is periodic=True: give the structure its cell, or use periodic=False"
            )


def _cached_soap_rows(kwargs, fingerprint, structure_index, atom_index, *, structures, n_jobs):
    # cached on (kwargs, fingerprint, centres); the structures themselves are
    # represented by their fingerprint, and the descriptor is built on a miss only
    DscribeSOAP = import_optional("dscribe.descriptors", purpose="SOAP").SOAP
    return _soap_rows(DscribeSOAP(**kwargs), structures, structure_index, atom_index, n_jobs)
