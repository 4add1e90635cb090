"""A conservative distance-based potential: per-atom EMLM energies, forces their exact gradient."""

import numbers
import warnings
from numbers import Integral, Real

import numpy as np
from scipy import linalg, sparse
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_random_state

from .._distances import euclidean_distances
from .._linalg import _cholesky_solve
from .._optional import import_optional
from .._progress import progress
from ..references import rs_maximin
from ._repulsion import ZBL
from ._typing import UnknownAtomTypeError

__all__ = ["EMLMPotential", "OffsetsNotIdentifiableError"]


class OffsetsNotIdentifiableError(ValueError):
    """Per-element energy offsets cannot be learnt from the training compositions.

    Raised by :meth:`EMLMPotential.fit` when the element counts of the training
    structures do not determine one energy per element, e.g. when every
    structure is (AuSCH₃)ₙ; pass ``atomic_energies``.
    """


def default_descriptor():
    """SOAP of the potential's default: r_cut 6 Å, n_max 4, l_max 3, σ 0.25 Å.

    Gives 544 features for H, C, S and Au. On the held-out Au5(SCH3)5 600 K ring
    run, r_cut 6 Å gave force RMSEs 15–25 % below r_cut 4 Å (gold and sulfur
    0.074–0.075 eV/Å against 0.09–0.10) and half the energy error: GFN2-xTB's
    forces reach beyond 4 Å. Larger n_max and l_max (6, 4; 1 500 features) did
    not help.
    """
    from ..atoms import SOAP

    return SOAP(r_cut=6.0, n_max=4, l_max=3, sigma=0.25)


class EMLMPotential(BaseEstimator):
    """Per-atom EMLM energies on SOAP whose forces are the exact negative gradient.

    The energy of a structure is a sum of atomic energies, each a distance
    regression (EMLM, thesis eq. 2.16–2.18) on the atom's scaled SOAP ``qᵢ``:

    ``E(S) = Σᵢ eₜ₍ᵢ₎(qᵢ) + E_rep(S)``,
    ``eₜ(q) = Σₖ wₜₖ φ(‖q − mₜₖ‖) + bₜ``,  ``φ(d) = √(d² + εₜ²)``

    with ``mₜₖ`` RS-maximin references among the training environments of
    element ``t``, ``bₜ`` the element's energy offset and ``E_rep`` a
    short-range repulsive baseline (:class:`ZBL`). The forces are
    ``F = −∂E/∂r`` through dscribe's analytic SOAP derivatives and the scaling:
    the exact gradient of the energy, so the field is conservative, optimizers
    converge to its minima and MD conserves its energy.

    Parameters
    ----------
    descriptor : SOAP, default=None
        A :class:`~mlmlearn.atoms.SOAP` (or any descriptor with ``transform``,
        ``sparse_derivatives`` and ``pullback`` of the same contract);
        :func:`default_descriptor` if None. Its species are fixed at fit to
        those of the training data unless given.
    scaling : {"global", "standard"}, default="global"
        How each element's SOAP rows are scaled before distances are taken:
        ``"global"`` centres them and divides all features by one scale (the
        root-mean-square standard deviation), keeping SOAP's own geometry;
        ``"standard"`` centres each feature and divides it by its standard
        deviation over the element's training rows, floored at
        ``SCALE_FLOOR`` (1 %) of the largest. Standardising magnifies features
        that barely vary in the data (tails of pair channels), so that a
        structure outside the data moves far in scaled space: in 300 K NVE on
        the held-out Au5 ring, a standardised potential met such a region after
        0.6 ps and its energy fell 20 eV; the global one did not. Held-out
        accuracy was the same.
    n_references : int, default=300
        References K per element (fewer if an element has fewer distinct
        environments).
    epsilon : float, default=10.0
        Smoothing ε of the multiquadric, as a multiple of the median distance
        from a reference to its nearest other reference (per element). On the
        held-out ring run, 5–10 gave the lowest force errors (2: 20–40 % higher;
        20: 10–20 % higher).
    beta : float, default=1e-6
        Ridge regularisation β of eq. (2.16): ``β/K`` is added to the diagonal
        of the weighted normal equations, ``K`` the total number of references.
    energy_sigma : float, default=0.02
        Weight of the energies, as an expected error per atom in eV: an energy
        row is the structure's residual divided by ``n_atoms·energy_sigma``.
        The energies fix what the forces cannot (a constant per structure), but
        weighted as strongly as the forces (0.002) they raised the held-out
        energy error (2.6 against 1.4 meV/atom with forces alone) and the force
        errors; 0.02 keeps both low.
    force_sigma : float, default=0.05
        Expected error of a force component, eV/Å: force rows are divided by it.
    atomic_energies : dict of str to float, default=None
        Energy offset ``bₜ`` (eV) of each element, e.g. isolated-atom energies of
        the reference method (:func:`mlmlearn.datasets.isolated_atom_energies`).
        None learns them with the weights, which needs training compositions
        that determine them (else :class:`OffsetsNotIdentifiableError`).
    repulsion : "zbl", ZBL or None, default="zbl"
        Short-range baseline, fitted to the training structures so that it
        vanishes at every distance they hold and repels every closer contact
        (:class:`ZBL`); the model learns the energy and forces minus it.
    confinement : float, default=1.0
        Strength of the energy wall around the training data in SOAP space. A
        multiquadric regression extrapolates linearly, so beyond its data an
        atom's energy can fall without bound (measured: 300 K NVE on the
        held-out Au5 ring drove two methyls together, 13 eV down on the model
        and 12 eV up on GFN2-xTB). Each atom pays ``κₜ·max(s(q) − Rₜ, 0)³``,
        ``s`` the smooth distance to the nearest reference (a soft minimum of
        φ), ``Rₜ`` its largest value over the element's training environments
        (so the wall is zero on every training structure) and ``κₜ`` such that
        one ε outside the data the wall is ``confinement`` times as steep as the
        model's steepest training environment. 0 switches it off.
    force_structures : int, float or None, default=None
        How many training structures contribute force rows (all contribute
        energy rows): None for all, an int for that many, a float in (0, 1] for
        that fraction, chosen at random. Subsampling is by structure because a
        structure's SOAP derivatives cost the same whatever rows are kept.
    random_state : int, RandomState or None, default=None
        Seeds the choice of ``force_structures``.
    verbose : int, default=0
        Progress bars over structures (tqdm) when > 0.

    Attributes
    ----------
    descriptor_ : SOAP
        The fitted descriptor.
    elements_ : list of str
        Elements with a model, ordered by atomic number.
    feature_mean_, feature_scale_ : dict of str to ndarray of shape (n_features,)
        Per-element standardisation: ``q = (p − mean) / scale``.
    references_ : dict of str to ndarray of shape (K_t, n_features)
        ``mₜₖ`` in scaled SOAP space.
    epsilon_ : dict of str to float
        ``εₜ`` in scaled SOAP units.
    coef_ : dict of str to ndarray of shape (K_t,)
        ``wₜₖ``, eV per unit of φ.
    offsets_ : dict of str to float
        ``bₜ`` in eV.
    repulsion_ : ZBL or None
    data_radius_, confinement_ : dict of str to float
        ``Rₜ`` and ``κₜ`` of the confinement.
    n_force_rows_, n_energy_rows_ : int
        Rows of the linear system.

    Notes
    -----
    **Departure from the EMLM.** The thesis's EMLM regresses on the plain
    distance ``d = ‖q − m‖`` (eq. 2.16). Its gradient ``(q − m)/d`` is
    undefined where ``q`` meets a reference and jumps around it; since every
    reference is a training environment, the forces of those environments
    would be ill-defined. The multiquadric ``√(d² + ε²)`` equals ``d`` far from a
    reference (relative difference ``ε²/2d²``) and is smooth everywhere. With ε
    of a few reference spacings the energy surface is also smooth between
    references, which gave lower force errors than a small ε.

    **Training** is one linear least-squares problem in ``w`` (and ``b`` when
    learnt): energy rows ``Σᵢ φ(‖qᵢ − mₜₖ‖)`` and force rows
    ``−Σᵢ (qᵢ − mₜₖ)ᵀ ∂qᵢ/∂r / φ``, weighted by ``1/(n_atoms·energy_sigma)`` and
    ``1/force_sigma``, accumulated as normal equations and solved with the
    ridge of eq. (2.18).

    Examples
    --------
    >>> from mlmlearn.atoms import SOAP
    >>> from mlmlearn.datasets import load_gold_thiolate_rings, isolated_atom_energies
    >>> from mlmlearn.forcefield import EMLMPotential
    >>> data = load_gold_thiolate_rings()
    >>> train = [f for f in data.frames if len(f) == 24][::20]          # Au4(SCH3)4 rings
    >>> pot = EMLMPotential(SOAP(r_cut=5.0, n_max=3, l_max=2), n_references=30,
    ...                     atomic_energies=isolated_atom_energies("GFN2-xTB")).fit(train)
    >>> pot.predict(train[:2]).shape, pot.predict_forces(train[0]).shape
    ((2,), (24, 3))
    >>> bool(pot.extrapolation(train).max() <= 0)                      # inside its data
    True
    """

    _parameter_constraints: dict = {
        "descriptor": "no_validation",
        "scaling": [StrOptions({"standard", "global"})],
        "n_references": [Interval(Integral, 1, None, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "energy_sigma": [Interval(Real, 0, None, closed="neither")],
        "force_sigma": [Interval(Real, 0, None, closed="neither")],
        "atomic_energies": [dict, None],
        "repulsion": [StrOptions({"zbl"}), ZBL, None],
        "confinement": [Interval(Real, 0, None, closed="left")],
        "force_structures": [
            Interval(Integral, 0, None, closed="left"),
            Interval(Real, 0, 1, closed="right"),
            None,
        ],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        descriptor=None,
        *,
        scaling="global",
        n_references=300,
        epsilon=10.0,
        beta=1e-6,
        energy_sigma=0.02,
        force_sigma=0.05,
        atomic_energies=None,
        repulsion="zbl",
        confinement=1.0,
        force_structures=None,
        random_state=None,
        verbose=0,
    ):
        self.descriptor = descriptor
        self.scaling = scaling
        self.n_references = n_references
        self.epsilon = epsilon
        self.beta = beta
        self.energy_sigma = energy_sigma
        self.force_sigma = force_sigma
        self.atomic_energies = atomic_energies
        self.repulsion = repulsion
        self.confinement = confinement
        self.force_structures = force_structures
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Fit the per-element weights to energies and forces.

        Parameters
        ----------
        X : sequence of ase.Atoms or AtomicEnvironments
            Whole structures with reference forces (eV/Å) and, unless ``y`` is
            given, energies (eV), stored as :class:`~mlmlearn.atoms.AtomicEnvironments`
            reads them (a calculator's results or an extxyz file).
        y : array-like of shape (n_structures,), default=None
            Energies in eV; read from ``X`` when None.

        Returns
        -------
        self

        Raises
        ------
        OffsetsNotIdentifiableError
            If ``atomic_energies`` is None and the compositions do not determine
            per-element offsets.
        ValueError
            If ``X`` is empty, an energy or force is missing or not finite
            (naming the structure), ``y`` has the wrong length, or
            ``atomic_energies`` lacks an element of the data.
        """
        self._validate_params()
        structures = _structures(X, "X")
        if not structures:
            raise ValueError("X holds no structures")
        env = _environments(structures)
        if y is None:
            energies = env.structure_energies
        else:
            energies = np.asarray(y, dtype=float).reshape(-1)
            if energies.shape != (len(structures),):
                raise ValueError(
                    f"y has {energies.size} energies for {len(structures)} structures")
            if not np.isfinite(energies).all():
                s = int(np.flatnonzero(~np.isfinite(energies))[0])
                raise ValueError(f"y[{s}] (the energy of structure {s}) is {energies[s]}")
        forces = env.forces
        symbols = env.symbols
        atomic_numbers = import_optional("ase.data", purpose="EMLMPotential").atomic_numbers
        self.elements_ = sorted(set(symbols.tolist()), key=atomic_numbers.__getitem__)

        descriptor = default_descriptor() if self.descriptor is None else self.descriptor
        self.descriptor_ = clone(descriptor).fit(structures)
        P = self.descriptor_.transform(env)
        self.repulsion_ = ZBL() if self.repulsion == "zbl" else (
            None if self.repulsion is None else clone(self.repulsion))
        if self.repulsion_ is not None:
            self.repulsion_.fit(structures)  # switched off at the data's closest contacts

        # per-element scaling, references and smoothing
        self.feature_mean_, self.feature_scale_ = {}, {}
        self.references_, self.epsilon_ = {}, {}
        for t in self.elements_:
            rows = P[symbols == t]
            mean, scale = _scaling(rows, self.scaling)
            Q = (rows - mean) / scale
            k = min(self.n_references, len(Q))
            idx, _ = rs_maximin(Q, k)
            self.feature_mean_[t], self.feature_scale_[t] = mean, scale
            self.references_[t] = Q[idx].copy()
            self.epsilon_[t] = self.epsilon * _median_spacing(self.references_[t])

        # columns: the weights of each element, then the learnt offsets
        self._layout()
        counts = np.zeros((len(structures), len(self.elements_)))
        for c, t in enumerate(self.elements_):
            np.add.at(counts[:, c], env.structure_index[symbols == t], 1.0)
        learn_offsets = self.atomic_energies is None
        if learn_offsets:
            if np.linalg.matrix_rank(counts) < len(self.elements_):
                raise OffsetsNotIdentifiableError(
                    f"the element counts of the {len(structures)} training structures do not "
                    f"determine one energy offset per element of {self.elements_} (every "
                    "composition is a multiple of the same formula, or some elements always "
                    "occur in fixed ratios); pass atomic_energies={element: eV}, e.g. "
                    "mlmlearn.datasets.isolated_atom_energies(method)")
            fixed = np.zeros(len(self.elements_))
        else:
            missing = [t for t in self.elements_ if t not in self.atomic_energies]
            if missing:
                raise ValueError(
                    f"atomic_energies has no energy for {missing[0]!r}, an element of the "
                    f"training data {self.elements_}")
            fixed = np.array([float(self.atomic_energies[t]) for t in self.elements_])
        n_cols = self._n_weights + (len(self.elements_) if learn_offsets else 0)

        gram = np.zeros((n_cols, n_cols))
        rhs = np.zeros(n_cols)

        # energy rows: every structure
        n_atoms = np.bincount(env.structure_index, minlength=len(structures)).astype(float)
        A_E = np.zeros((len(structures), n_cols))
        for t in self.elements_:
            rows = symbols == t
            phi = self._phi(t, self._scale(t, P[rows]))
            np.add.at(A_E[:, self._columns[t]], env.structure_index[rows], phi)
        if learn_offsets:
            A_E[:, self._n_weights:] = counts
        e_rep = np.zeros(len(structures))
        f_rep = {}
        if self.repulsion_ is not None:
            for s, atoms in enumerate(structures):
                e, f = self.repulsion_.energy_forces(atoms)
                e_rep[s] = e.sum()
                if np.any(f):
                    f_rep[s] = f
        target_E = energies - counts @ fixed - e_rep
        wE = 1.0 / (n_atoms * self.energy_sigma)
        A_Ew = A_E * wE[:, None]
        gram += A_Ew.T @ A_Ew
        rhs += A_Ew.T @ (target_E * wE)
        self.n_energy_rows_ = len(structures)

        # force rows: derivative contractions of the chosen structures
        chosen = self._force_subset(len(structures))
        n_force_rows = 0
        offsets = np.concatenate([[0], np.cumsum(n_atoms).astype(int)])
        # rows are gathered into blocks of about 4000 before each rank-k update
        gram_w = np.zeros((self._n_weights, self._n_weights), order="F")
        block, targets = [], []

        def flush():
            if block:
                A = np.vstack(block)
                # dsyrk fills the upper triangle of gram_w += AᵀA at half a GEMM's cost
                gram_w[:] = linalg.blas.dsyrk(1.0, A, beta=1.0, c=gram_w, trans=1, lower=0)
                rhs[: self._n_weights] += A.T @ np.concatenate(targets)
                block.clear()
                targets.clear()

        for s in progress(chosen, verbose=self.verbose, desc="force rows"):
            atoms = structures[s]
            A_F = self._force_design(atoms)
            target_F = forces[offsets[s]:offsets[s + 1]].reshape(-1).copy()
            if s in f_rep:
                target_F -= f_rep[s].reshape(-1)
            A_F /= self.force_sigma
            target_F /= self.force_sigma
            block.append(A_F)
            targets.append(target_F)
            n_force_rows += A_F.shape[0]
            if sum(len(b) for b in block) >= 4000:
                flush()
        flush()
        upper = np.triu(gram_w)
        gram[: self._n_weights, : self._n_weights] += upper + np.triu(upper, 1).T
        self.n_force_rows_ = n_force_rows

        solution = _solve(gram, rhs, self.beta, self._n_weights)
        self.coef_ = {t: solution[self._columns[t]].copy() for t in self.elements_}
        learnt = solution[self._n_weights:] if learn_offsets else fixed
        self.offsets_ = {t: float(b) for t, b in zip(self.elements_, learnt, strict=True)}

        # the trust region of each element: how far its training rows are from the references,
        # and how steep its energy is there (the confinement's scale)
        self.data_radius_, self.confinement_ = {}, {}
        for t in self.elements_:
            Q = self._scale(t, P[symbols == t])
            phi = self._phi(t, Q)
            softmin, _ = self._softmin(t, phi)
            self.data_radius_[t] = float(softmin.max())
            V = self.coef_[t] / phi
            slope = np.linalg.norm(Q * V.sum(axis=1)[:, None] - V @ self.references_[t], axis=1)
            self.confinement_[t] = (
                float(self.confinement) * float(slope.max()) / (3.0 * self.epsilon_[t] ** 2))
        return self

    def _softmin(self, t, phi):
        """Smooth distance to the nearest reference, ``−τ log Σₖ exp(−φₖ/τ)``, τ = ε/10,
        and its softmax weights (n, K)."""
        tau = self.epsilon_[t] / 10.0
        z = -phi / tau
        top = z.max(axis=1, keepdims=True)
        weights = np.exp(z - top)
        total = weights.sum(axis=1, keepdims=True)
        softmin = -tau * (np.log(total[:, 0]) + top[:, 0])
        return softmin, weights / total

    def _confine(self, t, Q, phi):
        """The confinement's energies (n,) and gradients in scaled SOAP (n, F) for rows ``Q``."""
        kappa = self.confinement_[t]
        softmin, weights = self._softmin(t, phi)
        beyond = np.maximum(softmin - self.data_radius_[t], 0.0)
        energy = kappa * beyond**3
        # ∂softmin/∂q = Σₖ πₖ (q − mₖ)/φₖ
        W = weights / phi
        grad = Q * W.sum(axis=1)[:, None] - W @ self.references_[t]
        return energy, (3.0 * kappa * beyond**2)[:, None] * grad

    def extrapolation(self, X):
        """How far each atom's environment lies outside the training data, in units of ε.

        ``(s(q) − R) / ε`` per atom, with ``s`` the smooth distance to the nearest
        reference of the atom's element, ``R`` its largest value over the training
        environments and ε the multiquadric's smoothing: ≤ 0 inside the data,
        where the confinement is zero.

        Parameters
        ----------
        X : ase.Atoms or sequence of ase.Atoms

        Returns
        -------
        extrapolation : ndarray of shape (n_atoms_total,)
        """
        check_is_fitted(self, "coef_")
        out = []
        for s, atoms in enumerate(_structures(X, "X")):
            self._check_structure(atoms, s)
            symbols = np.asarray(atoms.get_chemical_symbols())
            P = self.descriptor_.transform(_environments([atoms]))
            x = np.empty(len(atoms))
            for t in self.elements_:
                centres = np.flatnonzero(symbols == t)
                if centres.size:
                    softmin, _ = self._softmin(t, self._phi(t, self._scale(t, P[centres])))
                    x[centres] = (softmin - self.data_radius_[t]) / self.epsilon_[t]
            out.append(x)
        return np.concatenate(out) if out else np.zeros(0)

    def _force_subset(self, n):
        if self.force_structures is None:
            return np.arange(n)
        if isinstance(self.force_structures, numbers.Integral):
            m = min(int(self.force_structures), n)
        else:
            m = max(1, int(round(float(self.force_structures) * n)))
        rng = check_random_state(self.random_state)
        return np.sort(rng.choice(n, size=m, replace=False))

    def _layout(self):
        self._columns, start = {}, 0
        for t in self.elements_:
            k = len(self.references_[t])
            self._columns[t] = slice(start, start + k)
            start += k
        self._n_weights = start

    def _scale(self, t, rows):
        return (rows - self.feature_mean_[t]) / self.feature_scale_[t]

    def _phi(self, t, Q):
        d = euclidean_distances(Q, self.references_[t])
        return np.sqrt(d * d + self.epsilon_[t] ** 2)

    def _force_design(self, atoms):
        """Force rows of one structure: ``A[(j, a), (t, k)] = −Σᵢ₍ₜ₎ (qᵢ − mₜₖ)ᵀ ∂qᵢ/∂r_ja / φᵢₖ``.

        Only the (centre, atom) pairs with a nonzero SOAP derivative are
        contracted (:meth:`~mlmlearn.atoms.SOAP.sparse_derivatives`: the atom
        within the cutoff of the centre, or the centre itself; 19 % of the pairs
        of Au25(SCH3)18). :func:`_force_design_dense` is the plain dense
        contraction it must equal.
        """
        P, centre, atom, dP = self.descriptor_.sparse_derivatives(atoms)
        symbols = np.asarray(atoms.get_chemical_symbols())
        n = len(atoms)
        A = np.zeros((n * 3, self._n_weights))
        position = np.empty(n, dtype=np.int64)  # a centre's row among its element's centres
        for t in self.elements_:
            centres = np.flatnonzero(symbols == t)
            if centres.size == 0:
                continue
            position[centres] = np.arange(centres.size)
            Q = self._scale(t, P[centres])
            M = self.references_[t]
            inv_phi = 1.0 / self._phi(t, Q)  # (n_t, K)
            pairs = np.flatnonzero(symbols[centre] == t)
            c3 = np.repeat(position[centre[pairs]], 3)
            # ∂q/∂r = ∂p/∂r / scale: the scale goes into q and m instead of a copy of dP
            R = dP[pairs].reshape(pairs.size * 3, -1)
            scale = self.feature_scale_[t]
            u = np.einsum("pf,pf->p", R, (Q / scale)[c3])
            contrib = (u[:, None] - R @ (M / scale).T) * inv_phi[c3]  # (∂q/∂r)·(q − m)/φ
            rows = (3 * atom[pairs][:, None] + np.arange(3)).reshape(-1)
            scatter = sparse.csr_matrix(
                (np.ones(rows.size), (rows, np.arange(rows.size))), shape=(n * 3, rows.size))
            A[:, self._columns[t]] = -(scatter @ contrib)
        return A

    # ------------------------------------------------------------------ predict
    def _check_structure(self, atoms, s):
        symbols = atoms.get_chemical_symbols()
        for i, sym in enumerate(symbols):
            if sym not in self.coef_:
                raise UnknownAtomTypeError(
                    f"atom {i} of structure {s} is {sym}, an element this potential has no "
                    f"model for (it has {self.elements_})")
        if not np.isfinite(atoms.positions).all():
            i = int(np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))[0])
            raise ValueError(f"atom {i} of structure {s} has non-finite position "
                             f"{atoms.positions[i]}")

    def energies_forces(self, atoms, *, forces=True):
        """Per-atom energies and forces of one structure.

        Parameters
        ----------
        atoms : ase.Atoms
        forces : bool, default=True
            Also compute the forces (which needs the SOAP derivatives).

        Returns
        -------
        energies : ndarray of shape (n_atoms,)
            ``eₜ₍ᵢ₎(qᵢ)`` plus the atom's half of its repulsive pairs, eV.
            They sum to the potential energy.
        forces : ndarray of shape (n_atoms, 3) or None
            ``−∂E/∂r`` in eV/Å.

        Raises
        ------
        UnknownAtomTypeError
            If an atom's element has no model (naming the atom).
        ValueError
            If a position is not finite.
        """
        check_is_fitted(self, "coef_")
        self._check_structure(atoms, 0)
        symbols = np.asarray(atoms.get_chemical_symbols())
        if forces:
            # SOAP rows and the vector-Jacobian product G ↦ Σᵢ Gᵢ·∂pᵢ/∂r, never the dense ∂p/∂r
            P, pullback = self.descriptor_.pullback(atoms)
        else:
            P = self.descriptor_.transform(_environments([atoms]))
        e, G = self._energy_gradient(P, symbols, gradient=forces)
        F = -pullback(G) if forces else None
        if self.repulsion_ is not None:
            e_rep, f_rep = self.repulsion_.energy_forces(atoms)
            e += e_rep
            if forces:
                F += f_rep
        return e, F

    def _energy_gradient(self, P, symbols, *, gradient=True):
        """Atomic energies (n,) of SOAP rows ``P`` and ``∂E/∂P`` (n, F), None without gradient.

        ``eᵢ = Σₖ wₖ φᵢₖ + b + wall``, ``∂eᵢ/∂qᵢ = Σₖ wₖ (qᵢ − mₖ)/φᵢₖ`` (+ the
        confinement's), divided by the scaling for the gradient in unscaled SOAP.
        """
        e = np.zeros(len(P))
        G = np.zeros_like(P) if gradient else None
        for t in self.elements_:
            centres = np.flatnonzero(symbols == t)
            if centres.size == 0:
                continue
            Q = self._scale(t, P[centres])
            phi = self._phi(t, Q)
            w = self.coef_[t]
            wall, wall_grad = self._confine(t, Q, phi)
            e[centres] = phi @ w + self.offsets_[t] + wall
            if gradient:
                V = w / phi  # (n_t, K)
                G[centres] = (Q * V.sum(axis=1)[:, None] - V @ self.references_[t]
                              + wall_grad) / self.feature_scale_[t]
        return e, G

    def predict(self, X):
        """Potential energy of each structure.

        Parameters
        ----------
        X : ase.Atoms or sequence of ase.Atoms

        Returns
        -------
        energies : ndarray of shape (n_structures,)
            eV.
        """
        check_is_fitted(self, "coef_")
        structures = _structures(X, "X")
        return np.array([self._energies(a, s).sum() for s, a in enumerate(structures)])

    def _energies(self, atoms, s):
        self._check_structure(atoms, s)
        return self.energies_forces(atoms, forces=False)[0]

    def predict_forces(self, X):
        """Forces ``−∂E/∂r`` on every atom.

        Parameters
        ----------
        X : ase.Atoms or sequence of ase.Atoms

        Returns
        -------
        forces : ndarray of shape (n_atoms_total, 3)
            eV/Å, structure after structure, atoms in order.
        """
        check_is_fitted(self, "coef_")
        structures = _structures(X, "X")
        out = []
        for s, atoms in enumerate(structures):
            self._check_structure(atoms, s)
            out.append(self.energies_forces(atoms)[1])
        return np.concatenate(out) if out else np.zeros((0, 3))

    def score(self, X, y=None):
        """Minus the force RMSE (eV/Å) on ``X``'s stored forces: greater is better."""
        from ..metrics import force_rmse

        structures = _structures(X, "X")
        return -force_rmse(_environments(structures).forces, self.predict_forces(structures))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        tags.target_tags.required = False
        return tags


def _structures(X, name):
    Atoms = import_optional("ase", purpose="EMLMPotential").Atoms
    from ..atoms import AtomicEnvironments

    if isinstance(X, Atoms):
        return [X]
    if isinstance(X, AtomicEnvironments):
        return list(X.structures)
    structures = list(X)
    for s, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"{name}[{s}] is {type(atoms).__name__}, not ase.Atoms")
    return structures


def _environments(structures):
    from ..atoms import AtomicEnvironments

    return AtomicEnvironments(structures)


def _force_design_dense(potential, atoms):
    """The force rows of :meth:`EMLMPotential._force_design` by the plain dense contraction.

    The test oracle of the sparse version: every (centre, atom) pair, zero or not.
    """
    P, dP = potential.descriptor_.derivatives(atoms)
    symbols = np.asarray(atoms.get_chemical_symbols())
    n = len(atoms)
    A = np.zeros((n * 3, potential._n_weights))
    for t in potential.elements_:
        centres = np.flatnonzero(symbols == t)
        if centres.size == 0:
            continue
        Q = potential._scale(t, P[centres])
        M = potential.references_[t]
        phi = potential._phi(t, Q)
        dQ = dP[centres] / potential.feature_scale_[t]  # (n_t, n, 3, F)
        diff = Q[:, None, :] - M[None, :, :]  # (n_t, K, F)
        A[:, potential._columns[t]] = -np.einsum(
            "ijaf,ikf,ik->jak", dQ, diff, 1.0 / phi).reshape(n * 3, -1)
    return A


#: Per-feature scales below this fraction of the largest are raised to it.
SCALE_FLOOR = 1e-2


def _scaling(rows, scaling):
    """Centre and scale of one element's descriptor rows (see ``scaling``)."""
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    largest = float(std.max())
    if largest <= 0.0:
        return mean, np.ones_like(std)
    if scaling == "global":
        return mean, np.full_like(std, float(np.sqrt(np.mean(std**2))))
    return mean, np.maximum(std, SCALE_FLOOR * largest)


def _median_spacing(M):
    """Median distance from each row of ``M`` to its nearest other row (1 for one row)."""
    if len(M) < 2:
        return 1.0
    D = euclidean_distances(M, M)
    np.fill_diagonal(D, np.inf)
    return float(np.median(D.min(axis=1)))


def _solve(gram, rhs, beta, n_weights):
    """``(G + β/K I_w) x = h``, the ridge on the weights only (eq. 2.18)."""
    A = gram.copy()
    lam = beta / max(n_weights, 1)
    A[np.arange(n_weights), np.arange(n_weights)] += lam
    x = _cholesky_solve(A.copy(), rhs[:, None])
    if x is None:
        warnings.warn(
            f"the potential's normal equations with beta={beta:g} are numerically singular; "
            "solving them by SVD least squares. A larger beta or fewer references is better "
            "conditioned.", linalg.LinAlgWarning, stacklevel=3)
        x = linalg.lstsq(A, rhs[:, None], check_finite=False, lapack_driver="gelsd")[0]
    return x[:, 0]
