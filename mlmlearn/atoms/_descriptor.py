"""What the dscribe-backed transformers share: species, validation, n_jobs, caching."""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory

from .._optional import import_optional

__all__ = ["DescriptorTransformer"]

#: Parameters every descriptor shares, validated at fit like an estimator's.
COMMON_CONSTRAINTS = {
    "species": [None, str, "array-like"],
    "periodic": ["boolean"],
    "dtype": [StrOptions({"float64", "float32"})],
    "n_jobs": [Integral, None],
    "memory": [None, str, HasMethods(["cache"])],
}


class DescriptorTransformer(TransformerMixin, BaseEstimator):
    """Base of :class:`SOAP` and :class:`MBTR`.

    Subclasses define ``_dscribe_kwargs(species)`` (the dscribe constructor
    arguments, built fresh from the parameters so dscribe can never mutate
    them) and ``_feature_prefix``. The dscribe object built at :meth:`fit`
    (``descriptor_``) computes every uncached transform; cached transforms key
    on the constructor arguments and build one only on a cache miss.
    """

    _feature_prefix = "descriptor"
    _parameter_constraints: dict = dict(COMMON_CONSTRAINTS)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fix the species (given, or those present in ``X``) and build the descriptor.

        The parameters are validated here (``_parameter_constraints``, as
        scikit-learn estimators do), naming the parameter and its bad value.

        Parameters
        ----------
        X : AtomicEnvironments or sequence of ase.Atoms
        y : ignored

        Returns
        -------
        self
        """
        self._check_parameters()
        structures = self._structures(X)
        if self.species is None:
            if not structures:
                raise ValueError("X has no structures to take the species from; pass species=")
            present = np.unique(np.concatenate([a.numbers for a in structures]))
        else:
            atomic_numbers = import_optional("ase.data").atomic_numbers
            species = (self.species,) if isinstance(self.species, str) else self.species
            try:
                present = np.unique(
                    [atomic_numbers[s] if isinstance(s, str) else int(s) for s in species]
                )
            except KeyError as exc:
                raise ValueError(
                    f"species={self.species!r}: {exc.args[0]!r} is not an element"
                ) from None
        chemical_symbols = import_optional("ase.data").chemical_symbols
        self.species_ = [chemical_symbols[z] for z in present]
        self.descriptor_ = self._make_descriptor(self.species_)
        self.n_features_out_ = int(self.descriptor_.get_number_of_features())
        return self

    def _check_parameters(self):
        """Checks across parameters that constraints cannot express (none by default)."""

    def _make_descriptor(self, species):
        return self._dscribe_class()(**self._dscribe_kwargs(species))

    def get_feature_names_out(self, input_features=None):
        """``<prefix>0 … <prefix>{n-1}``."""
        check_is_fitted(self, "descriptor_")
        return np.array(
            [f"{self._feature_prefix}{i}" for i in range(self.n_features_out_)], dtype=object
        )

    def _check_species(self, structures, which):
        """Raise naming the first structure in ``which`` with an element not in ``species_``."""
        atomic_numbers = import_optional("ase.data").atomic_numbers
        known = [atomic_numbers[s] for s in self.species_]
        which = list(which)
        if (
            not which
            or np.isin(np.concatenate([structures[s].numbers for s in which]), known).all()
        ):
            return
        for s in which:
            unknown = np.setdiff1d(structures[s].numbers, known)
            if unknown.size:
                chemical_symbols = import_optional("ase.data").chemical_symbols
                raise ValueError(
                    f"structure {s} contains {chemical_symbols[unknown[0]]}, which is not in "
                    f"the species fixed at fit ({self.species_}); refit or pass species="
                )

    def _n_jobs(self):
        from joblib import effective_n_jobs

        return int(effective_n_jobs(self.n_jobs))

    def _memory(self):
        return check_memory(self.memory)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = []
        return tags


def stack_rows(result, n_systems, n_features):
    """dscribe's output for ``n_systems`` systems as one (n_rows, n_features) array."""
    if n_systems == 1:
        return np.asarray(result).reshape(-1, n_features)
    return np.concatenate([np.asarray(r).reshape(-1, n_features) for r in result])
