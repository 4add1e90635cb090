"""Per-atom-type force vectors F = |F| · v̂ from an EMLM norm and an OAMLM direction."""

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, clone
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._optional import import_optional
from .._progress import progress
from ._rigid import remove_net_force
from ._typing import UnknownAtomTypeError, atom_labels

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

    The force on an atom of type t is F = |F|_t · v̂_t (paper IV, sections II C–D
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
        family, so it refuses core gold given to a unit-gold model). Without a
        fallback such atoms raise :class:`UnknownAtomTypeError` — never a zero force.
    remove_net_force : {"auto", "force"} or None, default="auto"
        Project out the spurious net force (and torque) of the predictions of each
        structure, see :func:`remove_net_force`. ``"auto"``: net force and net
        torque for non-periodic structures, net force only for periodic ones;
        ``"force"``: net force only; ``None``: raw per-atom predictions. Needs every
        atom of a structure in ``predict``'s input.
    min_samples : int, default=2
        Fewest training environments a type must have to get a model.
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

    Raises
    ------
    UnknownAtomTypeError
        At fit, for a ``type_params`` or ``fallback`` entry naming a type the
        training data do not have (or one with fewer than ``min_samples``
        environments); at predict, for an atom whose type has no model and no
        fallback — naming the type, the atom and its structure.

    See Also
    --------
    mlmlearn.forcefield.MLMCalculator : the fitted force field as an ASE calculator.
    mlmlearn.metrics.force_table : paper IV's per-type accuracy table.

    Notes
    -----
    A type with fewer training environments than an integer ``references`` of
    its models asks for (the bundled rings hold 27 core-gold environments) uses
    every one of them as a reference, with a warning. ``score`` is minus the
    force-vector RMSE, sqrt(mean |F_pred − F_ref|²) in eV/Å. Pickled models
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
        "min_samples": [Integral],
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
        min_samples=2,
        verbose=0,
    ):
        self.norm = norm
        self.direction = direction
        self.typing = typing
        self.type_params = type_params
        self.fallback = fallback
        self.remove_net_force = remove_net_force
        self.min_samples = min_samples
        self.verbose = verbose

    # ------------------------------------------------------- named type parts
    def set_params(self, **params):
        """Set parameters; ``<type>__<part>__<param>`` sets one type's models.

        ``ff.set_params(Au_unit__direction__sigma2=0.25)`` stores
        ``{"Au_unit": {"direction__sigma2": 0.25}}`` in ``type_params`` (a new
        dict, so clones never share it); every other key is scikit-learn's.
        """
        own = set(self.get_params(deep=False))
        typed = {k: v for k, v in params.items() if "__" in k and k.split("__", 1)[0] not in own}
        if typed:
            merged = {t: dict(p) for t, p in (self.type_params or {}).items()}
            for key, value in typed.items():
                atom_type, rest = key.split("__", 1)
                if rest.split("__", 1)[0] not in _PARTS:
                    raise ValueError(
                        f"invalid parameter {key!r}: a type's setting is "
                        f"'<type>__norm__<param>' or '<type>__direction__<param>'"
                    )
                merged.setdefault(atom_type, {})[rest] = value
            params = {k: v for k, v in params.items() if k not in typed}
            params["type_params"] = merged
        return super().set_params(**params)

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
        y = X.forces if y is None else np.asarray(y, dtype=float)
        if y.shape != (len(X), 3):
            raise ValueError(f"y must be the forces of the {len(X)} environments, shape "
                             f"({len(X)}, 3); got {y.shape}")
        if not np.isfinite(y).all():
            row = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
            raise ValueError(f"y must be finite; row {row} is {y[row]}")
        labels = self._labels(X)
        present, counts = np.unique(labels, return_counts=True)
        self.n_samples_ = {str(t): int(c) for t, c in zip(present, counts, strict=True)}
        self.types_ = sorted(t for t, c in self.n_samples_.items() if c >= self.min_samples)
        for t, c in self.n_samples_.items():
            if c < self.min_samples:
                warnings.warn(f"atom type {t!r} has {c} training environment(s), fewer than "
                              f"min_samples={self.min_samples}; it gets no model", stacklevel=2)
        for name, mapping in (("type_params", self.type_params), ("fallback", self.fallback)):
            for t in (mapping or {}):
                if t not in self.types_:
                    raise UnknownAtomTypeError(
                        f"{name} names atom type {t!r}, which has no model: the training data "
                        f"give models to {self.types_}")
        for t, parent in (self.fallback or {}).items():
            if parent not in self.types_:
                raise UnknownAtomTypeError(
                    f"fallback {{{t!r}: {parent!r}}}: {parent!r} has no model; the training "
                    f"data give models to {self.types_}")
        self.norm_models_, self.direction_models_ = {}, {}
        norms = np.linalg.norm(y, axis=1)
        for t in progress(self.types_, verbose=self.verbose, desc="ForceField types"):
            rows = np.flatnonzero(labels == t)
            env = X[rows]
            norm_model, direction_model = self._models_for(t, len(rows))
            self.norm_models_[t] = norm_model.fit(env, norms[rows])
            self.direction_models_[t] = direction_model.fit(env, y[rows])
        self._fitted_cutoffs = self._cutoffs()
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
            # a norm is ≥ 0; a regression may undershoot zero for tiny forces
            norm = np.maximum(norm, 0.0)
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
        """Minus the force-vector RMSE, −sqrt(mean |F_pred − F_ref|²), in eV/Å.

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

    # ----------------------------------------------------------- persistence
    def __getstate__(self):
        from .. import __version__

        state = super().__getstate__()
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

    def _models_for(self, atom_type, n_samples):
        templates = {
            "norm": default_norm_model() if self.norm is None else self.norm,
            "direction": default_direction_model() if self.direction is None else self.direction,
        }
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

    def _check_periodic(self, X):
        """Refuse periodic structures when a model's descriptor ignores periodic images."""
        periodic = [s for s, a in enumerate(X.structures) if a.pbc.any()]
        if not periodic:
            return
        for t in self.types_:
            for part, model in (("norm", self.norm_models_[t]),
                                ("direction", self.direction_models_[t])):
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
        missing = sorted(set(np.unique(labels)) - set(self.types_))
        for t in missing:
            where = np.flatnonzero(labels == t)
            parent = (self.fallback or {}).get(t)
            atoms = [f"atom {X.atom_index[r]} of structure {X.structure_index[r]}"
                     for r in where[:3]]
            more = f" and {len(where) - 3} more" if len(where) > 3 else ""
            if parent is None:
                raise UnknownAtomTypeError(
                    f"{', '.join(atoms)}{more} ({X.symbols[where[0]]}) is of atom type {t!r}, "
                    f"which has no model: this force field models {self.types_}. Train it on "
                    f"data with {t!r} atoms, or pass fallback={{{t!r}: <modelled type>}}")
            warnings.warn(f"{', '.join(atoms)}{more} of atom type {t!r} (no model) are "
                          f"predicted by the {parent!r} models (fallback)", stacklevel=3)
            labels = np.where(labels == t, parent, labels)
        return labels


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
