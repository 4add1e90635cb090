"""scikit-learn API conformance of every public estimator.

The array estimators run scikit-learn's whole check suite with no expected failures.

The estimators of atomistic input — OAMLM, SOAP, MBTR and the alignment strategies —
take AtomicEnvironments or lists of structures, not 2-D arrays, and declare it
(``input_tags.two_d_array = False``). For such estimators ``parametrize_with_checks``
runs only ``check_estimator_cloneable`` and skips the rest, because every other
check feeds numeric arrays to ``fit``. So they run (1) every scikit-learn check that
needs no array input, by name, and (2) the array checks rewritten for structure
input: fit returns self and leaves its parameters (and the estimators inside them)
untouched, fitting twice gives the same answers, answers do not depend on which
other samples are in the call (subset invariance) nor survive only in memory
(pickling), and nothing sets ``n_features_in_`` from a structure's atom count.
"""

import functools
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_estimators_unfitted,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    check_valid_tag_types,
    parametrize_with_checks,
)
from sklearn.utils.validation import check_is_fitted

from mlmlearn import EMLM, MLM, HuberMLM, RandomReferences, RSMaximin

ESTIMATORS = [
    EMLM(),
    EMLM(references=0.5),
    MLM(),
    MLM(references=0.5, multilateration="nonlinear"),
    HuberMLM(references=0.5),
    RSMaximin(n_references=5),
    RandomReferences(n_references=5),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ----------------------------------------------------------- atomistic estimators
def _atomistic_estimators():
    """``(id, estimator, data)`` with ``data()`` giving ``(X, y)`` it works on."""
    try:
        import ase  # noqa: F401
        import dscribe  # noqa: F401
        import numba  # noqa: F401
    except ImportError:  # the core install: nothing atomistic to check
        return []
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from mlmlearn.atoms import MBTR, SOAP, AtomicEnvironments
    from mlmlearn.datasets import load_alkanes, load_gold_thiolate_rings
    from mlmlearn.oamlm import OAMLM, GoldThiolateAlignment, PermutationAlignment

    @functools.cache
    def propane():
        frames = [f for f in load_alkanes().frames if f.info["run"] == "C3H8_run1"][::60][:12]
        env = AtomicEnvironments(frames, species="C")
        return env, env.forces

    @functools.cache
    def rings():
        data = load_gold_thiolate_rings()
        env = AtomicEnvironments(data.frames[1:400:40], species="S")
        return env, env.forces

    @functools.cache
    def structures():
        frames = [f for f in load_alkanes().frames if f.info["run"] == "C3H8_run1"][::100][:10]
        return frames, np.array([a.get_potential_energy() for a in frames])

    def soap():
        return SOAP(n_max=3, l_max=2, r_cut=3.0, sigma=0.5)

    return [
        ("OAMLM", OAMLM(make_pipeline(soap(), MinMaxScaler()), references=8), propane),
        (
            "OAMLM-gold",
            OAMLM(
                make_pipeline(soap(), MinMaxScaler()),
                alignment=GoldThiolateAlignment(),
                references=8,
                loss="numeric",
            ),
            rings,
        ),
        ("SOAP", soap(), propane),
        ("MBTR", MBTR(n_grid=30), structures),
        ("PermutationAlignment", PermutationAlignment(3), propane),
        ("GoldThiolateAlignment", GoldThiolateAlignment(), rings),
    ]


ATOMISTIC = _atomistic_estimators()
ATOMISTIC_IDS = [case[0] for case in ATOMISTIC]

#: scikit-learn's checks that need no array input, so they apply as they are
NO_ARRAY_CHECKS = [
    check_estimator_cloneable,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_valid_tag_types,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_get_params_invariance,
    check_set_params,
    check_do_not_raise_errors_in_init_or_set_params,
    check_mixin_order,
    check_estimators_unfitted,  # predict before fit raises NotFittedError
]


@pytest.mark.skipif(not ATOMISTIC, reason="needs the atoms extra (ase, dscribe, numba)")
@pytest.mark.parametrize("check", NO_ARRAY_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", ATOMISTIC, ids=ATOMISTIC_IDS)
def test_atomistic_estimators_pass_the_checks_that_need_no_arrays(case, check):
    name, estimator, _ = case
    check(name, clone(estimator))


def _is_alignment(estimator):
    from mlmlearn.oamlm import Alignment

    return isinstance(estimator, Alignment)


def _answer(estimator, X):
    """What the (fitted) estimator says about ``X``, as arrays."""
    if _is_alignment(estimator):
        P = estimator.neighborhoods(X)
        R, g = estimator.align(P, P[:3])
        points = P.points if hasattr(P, "points") else P
        return [points, R, g]
    if hasattr(estimator, "predict"):
        return [estimator.predict(X)]
    return [estimator.transform(X)]


def _take(X, rows):
    return X[rows] if hasattr(X, "structure_index") else [X[i] for i in rows]


def _assert_same(a, b, what):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=what)


@pytest.mark.skipif(not ATOMISTIC, reason="needs the atoms extra (ase, dscribe, numba)")
@pytest.mark.parametrize("case", ATOMISTIC, ids=ATOMISTIC_IDS)
def test_atomistic_estimators_keep_the_array_checks_contract_on_structures(case):
    import joblib

    name, prototype, data = case
    X, y = data()
    estimator = clone(prototype)
    before = joblib.hash(estimator.get_params(deep=True))
    if _is_alignment(estimator):
        assert not estimator.__sklearn_tags__().requires_fit
        fitted = estimator
    else:
        with pytest.raises(NotFittedError):
            check_is_fitted(estimator)
        fitted = estimator.fit(X, y)
        assert fitted is estimator, "fit returns self"
        assert not hasattr(fitted, "n_features_in_"), "n_features_in_ from structure input"
    first = _answer(fitted, X)
    # neither fit nor the answers change the parameters or estimators inside them
    assert joblib.hash(estimator.get_params(deep=True)) == before
    # fitting again (idempotence) and a pickled copy give the same answers
    if not _is_alignment(estimator):
        _assert_same(_answer(clone(prototype).fit(X, y), X), first, f"{name}: refit")
    _assert_same(_answer(pickle.loads(pickle.dumps(fitted)), X), first, f"{name}: pickle")
    # subset invariance: an answer does not depend on the other samples in the call
    rows = np.arange(len(X))[::-2][:5]
    sub = _answer(fitted, _take(X, rows))
    if _is_alignment(estimator):
        _assert_same(sub[:1], [first[0][rows]], f"{name}: subset")
    else:
        _assert_same(sub, [first[0][rows]], f"{name}: subset")
