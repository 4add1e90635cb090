"""Per-atom-type force vectors F = ‖F‖ · v̂ from an EMLM norm and an OAMLM direction."""

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._optional import import_optional
from .._progress import progress
from ._rigid import remove_net_force
from ._typing import GOLD_THIOLATE_FAMILIES, UnknownAtomTypeError, atom_labels

__all__ = [
    "ForceField",
    "ModelVersionWarning",
    "default_direction_model",
    "default_norm_model",
]

#: Paper IV's SOAP (section III A): σ_SOAP = 0.25 Å, n_max = 7, l_max = 4, r_cut = 4.0 Å.
SOAP_SETTINGS = {"r_cut": 4.0, "n_max": 7, "l_max": 4, "sigma": 0.25}
#: Paper IV's σ₂ of the analytic loss: 0.25 Å for unit gold, 0.5 Å for every other type.
PAPER_IV_SIGMA2 = {"Au_unit": 0.25}
_PARTS = ("norm", "direction")


class ModelVersionWarning(UserWarning):
    """A model was saved by another version of mlmlearn than the one loading it."""


def default_norm_model(references=2500):
    """Paper IV's force-norm model (section III B): SOAP → min-max scaling → EMLM.

    Parameters
    ----------
    references : int, default=2500
        EMLM references, chosen by RS-maximin among the training environments.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``soap`` → ``minmaxscaler`` → ``emlm``; its parameters sweep as
        ``norm__soap__r_cut``, ``norm__emlm__references``, ….
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from ..atoms import SOAP
    from ..emlm import EMLM

    return make_pipeline(SOAP(**SOAP_SETTINGS), MinMaxScaler(), EMLM(references=references))


def default_direction_model(references=2500, sigma2=0.5):
    """Paper IV's force-direction model (section III C): an analytic-loss OAMLM.

    SOAP → min-max scaling as descriptor, :class:`~mlmlearn.oamlm.GoldThiolateAlignment`
    as alignment, the analytic loss (2.32) with weights (2.31) of width ``sigma2``.

    Parameters
    ----------
    references : int, default=2500
        OAMLM references, chosen by RS-maximin on the descriptors.
    sigma2 : float, default=0.5
        σ₂ in Å; paper IV uses 0.25 for unit gold, 0.5 elsewhere.

    Returns
    -------
    mlmlearn.OAMLM

    Notes
    -----
    Given to :class:`ForceField` as ``direction``, this one σ₂ serves every
    type; paper IV's 0.25 Å for unit gold is then
    ``type_params={"Au_unit": {"direction__sigma2": 0.25}}`` (``direction=None``
    applies it by itself).
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from ..atoms import SOAP
    from ..oamlm import OAMLM, GoldThiolateAlignment

    descriptor = make_pipeline(SOAP(**SOAP_SETTINGS), MinMaxScaler())
    return OAMLM(descriptor, alignment=GoldThiolateAlignment(), references=references,
                 loss="analytic", sigma2=sigma2)


class ForceField(MultiOutputMixin, BaseEstimator):
    """Force vectors of every atom, one norm model and one direction model per atom type.

    The force on an atom of type t is F = ‖F‖_t · v̂_t (paper IV, sections II C–D
    and III B–D; thesis 2.6): the norm from a regressor on its environment
    (paper IV: SOAP → min-max → EMLM, eq. (2.16)–(2.18)), the unit direction
    from an :class:`~mlmlearn.OAMLM` (eq. (2.31)–(2.32)). One clone of ``norm``
    and one of ``direction`` is fitted per type present in the training data.

    Parameters
    ----------
    norm : regressor, default=None
        Maps :class:`~mlmlearn.atoms.AtomicEnvironments` to force norms (eV/Å),
        cloned per type. ``None`` is :func:`default_norm_model` (K = 2 500).
        Its parameters sweep for every type as ``norm__...``.
    direction : estimator, default=None
        Maps environments to unit force directions (an OAMLM), cloned per type.
        ``None`` is :func:`default_direction_model` (K = 2 500, analytic loss),
        with paper IV's σ₂ = 0.25 Å for ``Au_unit`` and 0.5 Å for the others.
        Its parameters sweep for every type as ``direction__...``.
    typing : {"gold_thiolate", "element"} or callable, default="gold_thiolate"
        Which model predicts each atom. ``"gold_thiolate"``: paper IV's types
        (``Au_core``, ``Au_unit`` — half-unit gold included, as its alignment rule
        aligns it with unit gold —, ``S``, ``C``, ``H``) under the typing cutoffs of
        the direction model's alignment (3.0 and 5.0 Å by default), recomputed for
        every structure, so a bond that breaks during a run retypes its atoms.
        ``"element"``: chemical symbols. A callable ``typing(atoms)`` returns one
        label per atom of an ``ase.Atoms``.
    type_params : dict, default=None
        Settings of one type's models, ``{type: {"direction__sigma2": 0.25, ...}}``
        (keys as in ``set_params`` of the part; ``"norm"``/``"direction"`` replace
        the part for that type). ``set_params(Au_unit__direction__sigma2=0.25)``
        and a :class:`~sklearn.model_selection.GridSearchCV` grid key of the same
        form set them, as :class:`~sklearn.compose.ColumnTransformer` addresses
        its named parts. They override the paper IV σ₂ of the default direction model.
    fallback : dict, default=None
        ``{type: parent}``: atoms of ``type`` when it has no model (no training
        data) are predicted by ``parent``'s models, with a :class:`UserWarning`
        naming the type and the atoms. The parent's alignment must accept them
        (:class:`~mlmlearn.oamlm.GoldThiolateAlignment` aligns only its own
        family, so ``fit`` refuses ``{"Au_core": "Au_unit"}`` with it). Without a
        fallback such atoms raise :class:`UnknownAtomTypeError` — never a zero force.
    remove_net_force : {"auto", "force"} or None, default="auto"
        Project out the spurious net force (and torque) of the predictions of each
        structure, see :func:`remove_net_force`. ``"auto"``: net force and net
        torque for non-periodic structures, net force only for periodic ones;
        ``"force"``: net force only; ``None``: raw per-atom predictions. Needs every
        atom of a structure in ``predict``'s input.
    clip_norms : bool, default=True
        Clip each type's predicted force norms to the range of its training
        forces, [0, max ‖F_train‖]. A distance regression such as the EMLM grows
        linearly with the distance from its references, so far outside the
        training data it predicts arbitrarily large forces; measured on a ring
        optimization with ML forces, one sulfur went from 3 to 205 eV/Å in 20
        steps. Clipping bounds that runaway; it does not make the prediction
        right there — the uncertainty of ``predict`` tells where that happens.
    min_samples : int, default=10
        Fewest training environments a type must have to get a model; rarer
        types get none (with a warning at fit), so their atoms raise
        :class:`UnknownAtomTypeError` at predict instead of taking forces from a
        model of a handful of examples (measured: a core-gold model from the 2
        core environments of 151 ring frames gave its atoms an uncertainty of
        85 Å and forces at the clip).
    verbose : int, default=0
        A progress bar over the atom types at fit.

    Attributes
    ----------
    types_ : list of str
        The modelled types, sorted.
    norm_models_, direction_models_ : dict of str to estimator
        The fitted models per type.
    n_samples_ : dict of str to int
        Training environments per type.
    max_norm_ : dict of str to float
        Largest training force norm per type (eV/Å), the upper clip of ``clip_norms``.

    Raises
    ------
    UnknownAtomTypeError
        At fit, for a ``type_params`` entry naming a type the training data do
        not have (or one with fewer than ``min_samples`` environments), a
        ``fallback`` parent without a model, or a ``fallback`` key that the
        built-in ``typing`` never assigns; at predict, for an atom whose type has
        no model and no fallback — naming the type, the atom and its structure.
    ValueError
        At fit, for a ``fallback`` that the parent's
        :class:`~mlmlearn.oamlm.GoldThiolateAlignment` would refuse, and for
        periodic structures given to non-periodic descriptors (as at predict);
        at ``set_params`` and fit, for a type's setting that sets nothing.

    See Also
    --------
    mlmlearn.forcefield.MLMCalculator : the fitted force field as an ASE calculator.
    mlmlearn.metrics.force_table : paper IV's per-type accuracy table.

    Notes
    -----
    A type with fewer training environments than an integer ``references`` of
    its models asks for (the bundled rings hold 27 core-gold environments) uses
    every one of them as a reference, with a warning. ``score`` is minus the
    force-vector RMSE, sqrt(mean ‖F_pred − F_ref‖²) in eV/Å. Pickled models
    record the mlmlearn version; loading one saved by another version warns
    with :class:`ModelVersionWarning` (scikit-learn warns likewise for its own).

    Examples
    --------
    >>> from mlmlearn.atoms import AtomicEnvironments
    >>> from mlmlearn.datasets import gold_thiolate_ring, load_gold_thiolate_rings
    >>> from mlmlearn.forcefield import ForceField, default_direction_model, default_norm_model
    >>> frames = [f for f in load_gold_thiolate_rings().frames
    ...           if len(f) == 36 and f.info["temperature_K"] == 300][::20]   # Au6 ring, 300 K
    >>> train = AtomicEnvironments(frames)
    >>> ff = ForceField(default_norm_model(references=40),
    ...                 default_direction_model(references=40)).fit(train, train.forces)
    >>> ff.types_
    ['Au_unit', 'C', 'H', 'S']
    >>> F = ff.predict(frames[-1])   # an ase.Atoms: every atom, in order, eV/Å
    >>> F.shape, bool(abs(F.sum(axis=0)).max() < 1e-9)
    ((36, 3), True)
    """

    _parameter_constraints = {
        "norm": [HasMethods(["fit", "predict"]), None],
        "direction": [HasMethods(["fit", "predict"]), None],
        "typing": [StrOptions({"gold_thiolate", "element"}), callable],
        "type_params": [dict, None],
        "fallback": [dict, None],
        "remove_net_force": [StrOptions({"auto", "force"}), None],
        "clip_norms": ["boolean"],
        "min_samples": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        norm=None,
        direction=None,
        *,
        typing="gold_thiolate",
        type_params=None,
        fallback=None,
        remove_net_force="auto",
        clip_norms=True,
        min_samples=10,
        verbose=0,
    ):
        self.norm = norm
        self.direction = direction
        self.typing = typing
        self.type_params = type_params
        self.fallback = fallback
        self.remove_net_force = remove_net_force
        self.clip_norms = clip_norms
        self.min_samples = min_samples
        self.verbose = verbose

    # ------------------------------------------------------- named type parts
    def set_params(self, **params):
        """Set parameters; ``<type>__<part>__<param>`` sets one type's models.

        ``ff.set_params(Au_unit__direction__sigma2=0.25)`` stores
        ``{"Au_unit": {"direction__sigma2": 0.25}}`` in ``type_params`` (a new
        dict, so clones never share it), on top of a ``type_params`` given in
        the same call; every other key is scikit-learn's.

        Raises
        ------
        ValueError
            For a key naming no parameter: neither the force field's, nor
            ``<type>__norm``/``<type>__direction`` (a replacement part), nor a
            parameter of that type's part (``<type>__direction__sigma2``).
        """
        own = set(self.get_params(deep=False))
        typed = {k: v for k, v in params.items() if "__" in k and k.split("__", 1)[0] not in own}
        if not typed:
            return super().set_params(**params)
        super().set_params(**{k: v for k, v in params.items() if k not in typed})
        merged = {t: dict(p) for t, p in (self.type_params or {}).items()}
        for key, value in typed.items():
            atom_type, rest = key.split("__", 1)
            merged.setdefault(atom_type, {})[rest] = value
        self._check_type_params(merged)
        return super().set_params(type_params=merged)

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Fit a norm model and a direction model per atom type.

        Parameters
        ----------
        X : AtomicEnvironments, ase.Atoms or sequence of ase.Atoms
            Training environments (structures mean all their atoms).
        y : array-like of shape (n_environments, 3), default=None
            Reference forces (eV/Å); ``None`` reads ``X.forces``.

        Returns
        -------
        self

        Raises
        ------
        UnknownAtomTypeError
            For a ``type_params``/``fallback`` type absent from the data.
        ValueError
            For forces of the wrong shape, non-finite or zero forces (a zero force
            has no direction).
        """
        self._validate_params()
        X = _environments(X)
        y, norms = _check_forces(X, y)
        self._check_type_params(self.type_params)
        # the typing of this fit: a refit after set_params(direction__alignment__...) must
        # not type the new data under the cutoffs of the previous fit
        cutoffs = self._cutoffs()
        labels = atom_labels(self.typing, X, cutoffs)
        present, counts = np.unique(labels, return_counts=True)
        n_samples = {str(t): int(c) for t, c in zip(present, counts, strict=True)}
        types = sorted(t for t, c in n_samples.items() if c >= self.min_samples)
        for t, c in n_samples.items():
            if c < self.min_samples:
                warnings.warn(f"atom type {t!r} has {c} training environment(s), fewer than "
                              f"min_samples={self.min_samples}; it gets no model", stacklevel=2)
        for t in (self.type_params or {}):
            if t not in types:
                raise UnknownAtomTypeError(
                    f"type_params names atom type {t!r}, which has no model: the training data "
                    f"give models to {types} ({n_samples} environments per type, "
                    f"min_samples={self.min_samples})")
        # a fallback's key is a type without a model (that is what it is for); its
        # parent must have one
        known = _known_labels(self.typing)
        for t, parent in (self.fallback or {}).items():
            if known is not None and t not in known:
                raise UnknownAtomTypeError(
                    f"fallback names atom type {t!r}, which typing={self.typing!r} never "
                    f"assigns; its types are {sorted(known)}")
            if parent not in types:
                raise UnknownAtomTypeError(
                    f"fallback {{{t!r}: {parent!r}}}: {parent!r} has no model; the training "
                    f"data give models to {types}")
        models = {}
        for t in types:
            models[t] = self._models_for(t, n_samples[t])
        self._check_fallback_alignment(models)
        self._check_periodic(X, models)
        self.n_samples_, self.types_ = n_samples, types
        self.max_norm_ = {t: float(norms[labels == t].max()) for t in types}
        self.norm_models_, self.direction_models_ = {}, {}
        for t in progress(types, verbose=self.verbose, desc="ForceField types"):
            rows = np.flatnonzero(labels == t)
            env = X[rows]
            norm_model, direction_model = models[t]
            self.norm_models_[t] = norm_model.fit(env, norms[rows])
            self.direction_models_[t] = direction_model.fit(env, y[rows])
        self._fitted_cutoffs = cutoffs
        return self

    def partial_fit(self, X, y=None, *, sample_weight=None):
        """Add training environments to the fitted models of their atom types.

        Each environment is typed as ``predict`` types it and joins its type's
        models: a model with ``partial_fit`` (an :class:`~mlmlearn.OAMLM`, an
        :class:`~mlmlearn.EMLM`) gets it directly; a pipeline (the default norm
        model, SOAP → MinMaxScaler → EMLM) transforms it by its fitted steps
        (descriptor and scaler unchanged) and its final estimator gets the rows.
        With the references fixed, the models then equal a fit on all the
        environments seen (see :meth:`mlmlearn.EMLM.partial_fit`). ``n_samples_``
        and ``max_norm_`` (the clip of ``clip_norms``) grow with the new data.

        Parameters
        ----------
        X : AtomicEnvironments, ase.Atoms or sequence of ase.Atoms
        y : array-like of shape (n_environments, 3), default=None
            Reference forces (eV/Å); ``None`` reads ``X.forces``.
        sample_weight : array-like of shape (n_environments,), default=None
            Weights ≥ 0 of the new environments in every least-squares sum (the
            fit's weigh 1).

        Returns
        -------
        self

        Raises
        ------
        UnknownAtomTypeError
            For an environment whose type has no model, naming the type and the
            atoms. ``partial_fit`` neither creates a model (a type needs
            ``min_samples`` environments at fit) nor trains a ``fallback`` parent on
            another type's atoms: a fallback is a prediction policy. Select the
            modelled types first (``np.isin(ff.atom_types(X), ff.types_)``).
        TypeError
            For a model that has no ``partial_fit`` and is not a pipeline ending in one.
        ValueError
            For forces of the wrong shape, non-finite or zero forces.

        Notes
        -----
        All or nothing for mlmlearn's models: every type's models are updated as
        copies (their ``partial_fit`` replaces arrays, never writes into them) and
        installed only when all have succeeded, so an error (an atom whose
        alignment partners are missing, say) leaves the force field as it was.
        Unfitted, ``partial_fit`` is ``fit``.
        """
        if not hasattr(self, "norm_models_"):
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight: the first partial_fit fits the force field (choosing "
                    "its references), and fit takes no weights; call fit first")
            return self.fit(X, y)
        X = _environments(X)
        y, norms = _check_forces(X, y)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=float)
            if sample_weight.shape != (len(X),) or not np.all(np.isfinite(sample_weight)) \
                    or np.any(sample_weight < 0):
                raise ValueError(f"sample_weight must hold {len(X)} finite weights >= 0 (one "
                                 f"per environment); got {sample_weight!r}")
        labels = self._labels(X)
        for t in sorted({str(t) for t in np.unique(labels)} - set(self.types_)):
            where = np.flatnonzero(labels == t)
            atoms = ", ".join(f"atom {X.atom_index[r]} of structure {X.structure_index[r]}"
                              for r in where[:3])
            more = f" and {len(where) - 3} more" if len(where) > 3 else ""
            raise UnknownAtomTypeError(
                f"{atoms}{more} ({X.symbols[where[0]]}) is of atom type {t!r}, which has no "
                f"model to add it to: this force field models {self.types_}. partial_fit "
                "neither creates models nor trains a fallback parent; leave such atoms out "
                "(np.isin(ff.atom_types(X), ff.types_))")
        updated = {}
        for t in np.unique(labels):
            rows = np.flatnonzero(labels == t)
            env = X[rows]
            w = None if sample_weight is None else sample_weight[rows]
            updated[t] = (
                _partial_fit_part(self.norm_models_[t], env, norms[rows], w, f"{t!r} norm"),
                _partial_fit_part(self.direction_models_[t], env, y[rows], w,
                                  f"{t!r} direction"),
                float(norms[rows].max()), len(rows))
        for t, (norm_model, direction_model, largest, count) in updated.items():
            self.norm_models_[t], self.direction_models_[t] = norm_model, direction_model
            self.max_norm_[t] = max(self.max_norm_[t], largest)
            self.n_samples_[t] += count
        return self

    # ---------------------------------------------------------------- predict
    def predict(self, X, *, return_uncertainty=False):
        """Force vectors (eV/Å) of the environments, in input order.

        Parameters
        ----------
        X : AtomicEnvironments, ase.Atoms or sequence of ase.Atoms
            Structures mean all their atoms. With ``remove_net_force`` on, every
            atom of each structure must be present.
        return_uncertainty : bool, default=False
            Also return each atom's uncertainty: the alignment accuracy (Å) that
            the direction model's B_g predicts for the references its direction
            rests on, weighted as they are (see :meth:`mlmlearn.OAMLM.predict`).
            Larger means an environment unlike the training data; it is a
            direction uncertainty (the EMLM norm model gives none).

        Returns
        -------
        forces : ndarray of shape (n_environments, 3)
        uncertainty : ndarray of shape (n_environments,)
            Only with ``return_uncertainty=True``.

        Raises
        ------
        UnknownAtomTypeError
            An atom whose type has no model (and no ``fallback``), named with its
            structure and type.
        ValueError
            With ``remove_net_force`` on, when a structure is not whole in ``X``.
        """
        check_is_fitted(self, "norm_models_")
        X = _environments(X)
        labels = self._labels(X)
        labels = self._resolve(labels, X)
        self._check_periodic(X)
        if self.remove_net_force is not None:
            _check_whole(X)
        forces = np.zeros((len(X), 3))
        uncertainty = np.full(len(X), np.nan)
        for t in np.unique(labels):
            rows = np.flatnonzero(labels == t)
            env = X[rows]
            norm = np.asarray(self.norm_models_[t].predict(env), dtype=float).reshape(-1)
            # a norm is ≥ 0 (a regression may undershoot zero for tiny forces) and, with
            # clip_norms, at most the largest training norm of the type
            norm = np.clip(norm, 0.0, self.max_norm_[t] if self.clip_norms else None)
            model = self.direction_models_[t]
            if return_uncertainty:
                directions, uncertainty[rows] = model.predict(env, return_uncertainty=True)
            else:
                directions = model.predict(env)
            forces[rows] = norm[:, None] * directions
        if self.remove_net_force is not None:
            for s, rows in X.structure_rows():
                atoms = X.structures[s]
                torque = self.remove_net_force == "auto" and not atoms.pbc.any()
                order = rows[np.argsort(X.atom_index[rows])]
                forces[order] = remove_net_force(
                    forces[order], atoms.positions if torque else None)
        if return_uncertainty:
            return forces, uncertainty
        return forces

    def score(self, X, y=None, sample_weight=None):
        """Minus the force-vector RMSE, −sqrt(mean ‖F_pred − F_ref‖²), in eV/Å.

        Parameters
        ----------
        X : AtomicEnvironments, ase.Atoms or sequence of ase.Atoms
        y : array-like of shape (n_environments, 3), default=None
            Reference forces; ``None`` reads ``X.forces``.
        sample_weight : array-like of shape (n_environments,), default=None

        Returns
        -------
        score : float
        """
        X = _environments(X)
        y = X.forces if y is None else np.asarray(y, dtype=float)
        squared = np.sum((self.predict(X) - y) ** 2, axis=1)
        return -float(np.sqrt(np.average(squared, weights=sample_weight)))

    def atom_types(self, X):
        """The type (model label) of each environment, as ``predict`` assigns it.

        Parameters
        ----------
        X : AtomicEnvironments, ase.Atoms or sequence of ase.Atoms

        Returns
        -------
        types : ndarray of str of shape (n_environments,)
            Before any ``fallback``: a type may have no model.
        """
        return self._labels(_environments(X))

    # ----------------------------------------------------------- persistence
    def __getstate__(self):
        from .. import __version__

        # a copy: BaseEstimator's state is the instance's own __dict__ (Python ≥ 3.11)
        state = dict(super().__getstate__())
        state["_mlmlearn_version"] = __version__
        return state

    def __setstate__(self, state):
        from .. import __version__

        saved = state.pop("_mlmlearn_version", None)
        if saved != __version__:
            warnings.warn(
                f"this {type(self).__name__} was saved by mlmlearn {saved or 'unknown'} and "
                f"is loaded by mlmlearn {__version__}; its predictions may differ or fail. "
                "Refit it with this version, or load it with the one that saved it.",
                ModelVersionWarning, stacklevel=2)
        super().__setstate__(state)

    # --------------------------------------------------------------- helpers
    def _cutoffs(self):
        alignment = getattr(self.direction, "alignment", None)
        bond = getattr(alignment, "bond_cutoff", 3.0)
        core = getattr(alignment, "core_cutoff", 5.0)
        return float(bond), float(core)

    def _labels(self, X):
        cutoffs = getattr(self, "_fitted_cutoffs", None) or self._cutoffs()
        return atom_labels(self.typing, X, cutoffs)

    def _type_params(self):
        merged = {}
        if self.direction is None and self.typing == "gold_thiolate":
            merged = {t: {"direction__sigma2": s} for t, s in PAPER_IV_SIGMA2.items()}
        for t, params in (self.type_params or {}).items():
            merged.setdefault(t, {}).update(params)
        return merged

    def _templates(self):
        return {
            "norm": default_norm_model() if self.norm is None else self.norm,
            "direction": default_direction_model() if self.direction is None else self.direction,
        }

    def _check_type_params(self, type_params):
        """Raise a ValueError naming the first key of ``type_params`` that sets nothing."""
        if type_params is None:
            return
        if not isinstance(type_params, dict):
            raise ValueError(f"type_params must be a dict {{type: {{param: value}}}}; got "
                             f"{type(type_params).__name__}")
        defaults = self._templates()
        for atom_type, params in type_params.items():
            if not isinstance(params, dict):
                raise ValueError(f"type_params[{atom_type!r}] must be a dict of settings "
                                 f"such as {{'direction__sigma2': 0.25}}; got {params!r}")
            templates = dict(defaults)
            for key, value in params.items():
                if key in _PARTS:
                    if not (hasattr(value, "fit") and hasattr(value, "predict")):
                        raise ValueError(f"type_params[{atom_type!r}][{key!r}] must be an "
                                         f"estimator with fit and predict; got {value!r}")
                    templates[key] = value
            for key in params:
                part, _, rest = key.partition("__")
                if part not in _PARTS:
                    raise ValueError(
                        f"invalid setting {key!r} of atom type {atom_type!r}: a type's setting "
                        f"is '<type>__norm__<param>' or '<type>__direction__<param>' (or "
                        f"'<type>__norm' / '<type>__direction' to replace the part)")
                if rest and rest not in templates[part].get_params(deep=True):
                    raise ValueError(
                        f"invalid setting {atom_type}__{key}: the {part} model "
                        f"{type(templates[part]).__name__} has no parameter {rest!r}")

    def _models_for(self, atom_type, n_samples):
        templates = self._templates()
        nested = {part: {} for part in _PARTS}
        for key, value in self._type_params().get(atom_type, {}).items():
            part, _, rest = key.partition("__")
            if not rest:
                templates[part] = value
            else:
                nested[part][rest] = value
        models = []
        for part in _PARTS:
            model = clone(templates[part])
            if nested[part]:
                model.set_params(**nested[part])
            _cap_references(model, n_samples, f"{atom_type!r} {part} model")
            models.append(model)
        return models

    def _check_fallback_alignment(self, models):
        """Refuse a fallback whose parent's alignment cannot align the type's atoms."""
        from ..oamlm import GoldThiolateAlignment

        for t, parent in (self.fallback or {}).items():
            alignment = getattr(models[parent][1], "alignment", None)
            if (isinstance(alignment, GoldThiolateAlignment) and self.typing == "gold_thiolate"
                    and t != parent):
                raise ValueError(
                    f"fallback {{{t!r}: {parent!r}}}: the {parent!r} direction model aligns "
                    f"with GoldThiolateAlignment, which aligns {parent!r} atoms only and "
                    f"would refuse every {t!r} atom. Give the fallback parent a direction "
                    "model whose alignment accepts both (e.g. PermutationAlignment), or "
                    "train on data with such atoms")

    def _check_periodic(self, X, models=None):
        """Refuse periodic structures when a model's descriptor ignores periodic images.

        ``models`` maps types to their (norm, direction) models, the fitted ones by default.
        """
        periodic = [s for s, a in enumerate(X.structures) if a.pbc.any()]
        if not periodic:
            return
        if models is None:
            models = {t: (self.norm_models_[t], self.direction_models_[t]) for t in self.types_}
        for t, pair in models.items():
            for part, model in zip(_PARTS, pair, strict=True):
                flags = {k: v for k, v in model.get_params(deep=True).items()
                         if k.rsplit("__", 1)[-1] == "periodic" and v is False}
                if flags:
                    s = periodic[0]
                    raise ValueError(
                        f"structure {s} ({X.structures[s].get_chemical_formula()}) is periodic "
                        f"(pbc={X.structures[s].pbc.tolist()}), but the {t!r} {part} model's "
                        f"descriptor ignores periodic images ({next(iter(flags))}=False): its "
                        "forces would be those of an isolated cluster. Fit a force field with "
                        "periodic descriptors (e.g. SOAP(periodic=True)) for periodic cells")

    def _resolve(self, labels, X):
        """Map types without a model to their fallback; refuse the rest."""
        missing = sorted({str(t) for t in np.unique(labels)} - set(self.types_))
        for t in missing:
            where = np.flatnonzero(labels == t)
            parent = (self.fallback or {}).get(t)
            atoms = [f"atom {X.atom_index[r]} of structure {X.structure_index[r]}"
                     for r in where[:3]]
            more = f" and {len(where) - 3} more" if len(where) > 3 else ""
            if parent is None:
                # a fallback helps only where the parent's alignment accepts the atoms;
                # paper IV's rules align each gold-thiolate family with itself alone
                hint = ("" if self.typing == "gold_thiolate"
                        else f", or pass fallback={{{t!r}: <modelled type>}}")
                raise UnknownAtomTypeError(
                    f"{', '.join(atoms)}{more} ({X.symbols[where[0]]}) is of atom type {t!r}, "
                    f"which has no model: this force field models {self.types_} (types with "
                    f"fewer than min_samples={self.min_samples} training environments get "
                    f"none). Train it on data with {t!r} atoms{hint}")
            warnings.warn(f"{', '.join(atoms)}{more} of atom type {t!r} (no model) are "
                          f"predicted by the {parent!r} models (fallback)", stacklevel=3)
            labels = np.where(labels == t, parent, labels)
        return labels


def _check_forces(X, y):
    """The forces ``y`` (``X.forces`` for None) checked, and their norms."""
    y = X.forces if y is None else np.asarray(y, dtype=float)
    if y.shape != (len(X), 3):
        raise ValueError(f"y must be the forces of the {len(X)} environments, shape "
                         f"({len(X)}, 3); got {y.shape}")
    if not np.isfinite(y).all():
        row = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
        raise ValueError(f"y must be finite; row {row} is {y[row]}")
    norms = np.linalg.norm(y, axis=1)
    if np.any(norms == 0):
        row = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(
            f"y row {row} (atom {X.atom_index[row]} of structure {X.structure_index[row]}) "
            "is a zero force, which has no direction")
    return y, norms


def _partial_fit_part(model, X, y, sample_weight, what):
    """A shallow copy of ``model`` with ``X, y`` added by ``partial_fit`` (pipelines:
    the fitted steps transform, the final estimator learns); ``model`` is unchanged."""
    import copy

    kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
    if hasattr(model, "partial_fit"):
        new = copy.copy(model)
        new.partial_fit(X, y, **kwargs)
        return new
    name, final = model.steps[-1] if hasattr(model, "steps") else (None, model)
    if name is None or not hasattr(final, "partial_fit"):
        raise TypeError(
            f"the {what} model ({type(final).__name__}) has no partial_fit: ForceField."
            "partial_fit needs models with one, or pipelines ending in one (EMLM, OAMLM)")
    new_final = copy.copy(final)
    new_final.partial_fit(model[:-1].transform(X), y, **kwargs)
    new = copy.copy(model)
    new.steps = [*model.steps[:-1], (name, new_final)]
    return new


def _environments(X):
    from ..atoms import AtomicEnvironments

    if isinstance(X, AtomicEnvironments):
        return X
    Atoms = import_optional("ase", purpose="ForceField").Atoms
    if isinstance(X, Atoms) or (isinstance(X, list | tuple) and all(
            isinstance(a, Atoms) for a in X)):
        return AtomicEnvironments(X)
    raise TypeError(
        f"ForceField takes AtomicEnvironments or ase.Atoms (every atom of the structures), "
        f"got {type(X).__name__}")


def _known_labels(typing):
    """Every label a built-in ``typing`` can give, or None for a user's callable."""
    if typing == "gold_thiolate":
        return set(GOLD_THIOLATE_FAMILIES.values())
    if typing == "element":
        return set(import_optional("ase.data", purpose="ForceField").chemical_symbols[1:])
    return None


def _check_whole(X):
    """Raise unless every structure of ``X`` is there with each of its atoms once."""
    for s, rows in X.structure_rows():
        n = len(X.structures[s])
        atoms = np.unique(X.atom_index[rows])
        if len(rows) != n or len(atoms) != n:
            raise ValueError(
                f"structure {s} ({X.structures[s].get_chemical_formula()}) has {len(rows)} of "
                f"its {n} atoms in X: removing the net force needs whole structures. Pass "
                "whole structures (split by structure, e.g. GroupKFold over groups) or set "
                "remove_net_force=None")


def _cap_references(model, n_samples, what):
    """Lower integer reference counts above ``n_samples`` to ``n_samples``, with a warning."""
    capped = {}
    for key, value in model.get_params(deep=True).items():
        name = key.rsplit("__", 1)[-1]
        if name in ("references", "n_references") and isinstance(value, Integral) \
                and not isinstance(value, bool) and value > n_samples:
            capped[key] = n_samples
    if capped:
        asked = next(iter(model.get_params(deep=True)[k] for k in capped))
        warnings.warn(f"the {what} has {n_samples} training environments, fewer than the "
                      f"{asked} references asked for: all of them are references", stacklevel=4)
        model.set_params(**capped)
