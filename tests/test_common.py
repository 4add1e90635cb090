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


# ------------------------------------------------------------- optional packages
@pytest.mark.parametrize(
    "package, extra",
    [
        ("ase", "atoms"),
        ("dscribe", "atoms"),
        ("numba", "atoms"),
        ("tqdm", "atoms"),
        ("mpi4py", "mpi"),
        ("matplotlib", "plot"),
        ("tblite", "xtb"),
    ],
)
def test_a_missing_optional_package_names_its_extra(monkeypatch, package, extra):
    import sys

    from mlmlearn._optional import EXTRAS, import_optional

    assert EXTRAS[package] == extra
    monkeypatch.setitem(sys.modules, package, None)
    pattern = rf"SOMETHING needs {package} .*'{extra}' extra.*pip install \"\.\[{extra}\]\""
    with pytest.raises(ModuleNotFoundError, match=pattern) as info:
        import_optional(f"{package}.sub", purpose="SOMETHING")
    assert info.value.name == package


def test_the_extras_named_exist_in_setup_cfg():
    import configparser
    from pathlib import Path

    from mlmlearn._optional import EXTRAS

    setup = Path(__file__).resolve().parents[1] / "setup.cfg"
    if not setup.is_file():
        pytest.skip("not run from a source tree")
    config = configparser.ConfigParser()
    config.read(setup)
    extras = config["options.extras_require"]
    for package, extra in EXTRAS.items():
        assert extra in extras, f"{package}: no extra {extra!r} in setup.cfg"
        assert package in extras[extra], f"the {extra!r} extra does not install {package}"


def test_a_broken_dependency_inside_an_installed_package_is_not_disguised(monkeypatch):
    """A package that is there but fails on one of its own imports keeps that error."""
    import importlib

    from mlmlearn._optional import import_optional

    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'sparse'", name="sparse")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="No module named 'sparse'") as info:
        import_optional("dscribe.descriptors")
    assert "extra" not in str(info.value)


@pytest.mark.skipif(not ATOMISTIC, reason="needs the atoms extra")
def test_atomistic_entry_points_without_ase_name_the_extra(monkeypatch):
    import sys

    from ase.build import molecule

    from mlmlearn.atoms import AtomicEnvironments

    atoms = molecule("CH4")
    for name in ("ase", "ase.data", "ase.io", "ase.neighborlist"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModuleNotFoundError, match=r"AtomicEnvironments needs ase.*\.\[atoms\]"):
        AtomicEnvironments([atoms])
    with pytest.raises(ModuleNotFoundError, match=r"needs ase.*\.\[atoms\]"):
        AtomicEnvironments.read("frames.extxyz")


def _call_progress():
    from mlmlearn._progress import progress

    progress([1, 2], verbose=1)


def _call_mpi_backend():
    from mlmlearn.model_selection import MPIBackend

    MPIBackend()


def _call_tem_figure():
    from mlmlearn.applications.tem._plotting import _axes

    _axes(None)


def _call_tblite():
    from mlmlearn.datasets._recipes import _tblite

    _tblite("GFN2-xTB")


def _call_builder():
    from mlmlearn.datasets import linear_alkane

    linear_alkane(3)


def _call_read_frames():
    from mlmlearn.datasets import read_frames

    read_frames("frames.extxyz")


@pytest.mark.parametrize(
    "call, modules, pattern",
    [
        (_call_progress, ["tqdm", "tqdm.auto"], r"verbose progress bars.*needs tqdm.*\.\[atoms\]"),
        (_call_mpi_backend, ["mpi4py", "mpi4py.MPI"], r"joblib backend needs mpi4py.*\[mpi\]"),
        (_call_tem_figure, ["matplotlib", "matplotlib.pyplot"], r"needs matplotlib.*\.\[plot\]"),
        (_call_tblite, ["tblite", "tblite.ase"], r"xTB reference data needs tblite.*\.\[xtb\]"),
        (_call_builder, ["ase"], r"structure builders needs ase.*\.\[atoms\]"),
        (_call_read_frames, ["ase", "ase.io"], r"read_frames needs ase.*\.\[atoms\]"),
    ],
    ids=["tqdm", "mpi4py", "matplotlib", "tblite", "ase-builders", "ase-read_frames"],
)
def test_entry_points_without_their_optional_package_name_the_extra(
    monkeypatch, call, modules, pattern
):
    import sys

    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModuleNotFoundError, match=pattern):
        call()
