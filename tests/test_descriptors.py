"""SOAP and MBTR transformers: equal to dscribe, physically invariant, clonable, cacheable."""

import warnings

import numpy as np
import pytest

pytest.importorskip("dscribe")
from ase.build import molecule  # noqa: E402
from ase.io import read  # noqa: E402
from dscribe.descriptors import MBTR as DscribeMBTR  # noqa: E402
from dscribe.descriptors import SOAP as DscribeSOAP  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.feature_selection import VarianceThreshold  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from mlmlearn import EMLM  # noqa: E402
from mlmlearn.atoms import MBTR, SOAP, AtomicEnvironments  # noqa: E402
from mlmlearn.datasets import gold_thiolate_ring, linear_alkane  # noqa: E402


def _jiggled(atoms, n, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = atoms.copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        frames.append(a)
    return frames


def test_soap_equals_dscribe():
    frames = _jiggled(gold_thiolate_ring(4), 3)
    env = AtomicEnvironments(frames, species=["S", "Au"])
    ours = SOAP(r_cut=4.0, n_max=4, l_max=3, sigma=0.25).fit(env).transform(env)
    theirs = DscribeSOAP(species=["Au", "C", "H", "S"], r_cut=4.0, n_max=4, l_max=3, sigma=0.25)
    expected = np.vstack(
        [theirs.create(a, centers=np.flatnonzero(np.isin(a.numbers, [16, 79]))) for a in frames]
    )
    np.testing.assert_array_equal(ours, expected)


def test_mbtr_equals_dscribe_with_paper_ii_parameters():
    frames = _jiggled(linear_alkane(4), 3)
    ours = MBTR().fit(frames).transform(frames)
    theirs = DscribeMBTR(
        species=["C", "H"],
        geometry={"function": "inverse_distance"},
        grid={"min": 0.0, "max": 1.2, "n": 100, "sigma": 0.045},
        weighting={"function": "exp", "scale": 0.8, "threshold": 1e-5},
        normalize_gaussians=True,
        normalization="none",
        periodic=False,
    )
    with warnings.catch_warnings():  # dscribe's own use of a deprecated ASE call
        warnings.simplefilter("ignore", FutureWarning)
        expected = theirs.create(frames)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)
    assert ours.shape == (3, 300)


@pytest.mark.parametrize(
    "atoms", [linear_alkane(5), gold_thiolate_ring(5)], ids=["pentane", "Au5-ring"]
)
def test_soap_is_invariant(assert_symmetries, atoms):
    soap = SOAP(r_cut=4.0, n_max=4, l_max=3).fit([atoms])
    assert_symmetries(lambda a: soap.transform(a), atoms, local=True, atol=1e-8)


def test_mbtr_is_invariant(assert_symmetries):
    atoms = gold_thiolate_ring(4)
    mbtr = MBTR().fit([atoms])
    assert_symmetries(lambda a: mbtr.transform([a])[0], atoms, local=False, atol=1e-8)


def test_parameters_clone_and_are_not_mutated():
    weighting = {"function": "poly", "r0": 4.0, "c": 1, "m": 1}
    soap = SOAP(r_cut=4.0, n_max=3, l_max=2, weighting=weighting)
    soap.fit([molecule("CH4")]).transform([molecule("CH4")])
    assert weighting == {"function": "poly", "r0": 4.0, "c": 1, "m": 1}
    assert soap.get_params()["weighting"] is weighting
    twin = clone(soap).set_params(n_max=2)
    assert twin.get_params()["n_max"] == 2 and soap.n_max == 3
    mbtr = clone(MBTR(grid_max=1.4, sigma=0.1, scale=0.5, threshold=1e-3))
    assert (mbtr.grid_max, mbtr.sigma, mbtr.scale, mbtr.threshold) == (1.4, 0.1, 0.5, 1e-3)


def test_unknown_species_at_transform_names_the_structure():
    soap = SOAP(n_max=2, l_max=1).fit([molecule("CH4")])
    with pytest.raises(ValueError, match="structure 1 contains O"):
        soap.transform([molecule("CH4"), molecule("CH3OH")])
    mbtr = MBTR(species=["C", "H"]).fit([molecule("CH4")])
    with pytest.raises(ValueError, match="structure 0 contains N"):
        mbtr.transform([molecule("NH3")])
    with pytest.raises(ValueError, match="'Qq' is not an element"):
        SOAP(species=["C", "Qq"]).fit([molecule("CH4")])
    with pytest.raises(TypeError, match="MBTR takes a sequence"):
        MBTR().fit(molecule("CH4"))
    with pytest.raises(TypeError, match="SOAP takes AtomicEnvironments"):
        SOAP().fit(np.zeros((3, 3)))


def test_n_jobs_gives_the_same_rows():
    frames = _jiggled(linear_alkane(3), 6)
    env = AtomicEnvironments(frames, species="C")[np.array([7, 2, 11, 0])]
    one = SOAP(n_max=3, l_max=2).fit(env).transform(env)
    two = SOAP(n_max=3, l_max=2, n_jobs=2).fit(env).transform(env)
    np.testing.assert_array_equal(one, two)
    mbtr_one = MBTR().fit(frames).transform(frames)
    np.testing.assert_array_equal(mbtr_one, MBTR(n_jobs=-1).fit(frames).transform(frames))


def test_mbtr_refuses_ase_that_breaks_dscribe(monkeypatch):
    import ase

    monkeypatch.setattr(ase, "__version__", "3.27.0")
    with pytest.raises(ImportError, match=r"ase<3.27"):
        MBTR().fit([molecule("CH4")])


def test_installed_ase_satisfies_the_pin():
    import ase

    major, minor = (int(p) for p in ase.__version__.split(".")[:2])
    assert (major, minor) < (3, 27), "mlmlearn[atoms] pins ase<3.27 for dscribe's MBTR"


def _grid_search(memory):
    frames = _jiggled(linear_alkane(3), 8, seed=1)
    for k, a in enumerate(frames):
        a.info["k"] = k
    env = AtomicEnvironments(frames, species="H")
    y = env.positions[:, 0] ** 2  # any deterministic target
    pipe = Pipeline(
        [
            ("soap", SOAP(n_max=2, l_max=1, memory=memory)),
            ("scale", MinMaxScaler()),
            ("drop", VarianceThreshold()),
            ("emlm", EMLM()),
        ]
    )
    search = GridSearchCV(
        pipe,
        {"soap__r_cut": [3.0, 4.0], "soap__n_max": [2, 3], "emlm__beta": [1e-8, 1e-3]},
        cv=KFold(3, shuffle=True, random_state=0),
    )
    return search.fit(env, y)


def test_grid_search_sweeps_descriptor_parameters_and_memory_changes_nothing(tmp_path):
    plain = _grid_search(None)
    cached = _grid_search(str(tmp_path))
    assert set(plain.cv_results_["param_soap__r_cut"]) == {3.0, 4.0}
    np.testing.assert_allclose(
        plain.cv_results_["mean_test_score"], cached.cv_results_["mean_test_score"]
    )
    assert plain.best_params_ == cached.best_params_
    # 4 SOAP settings, each computed once for the root environments
    assert len(list(tmp_path.rglob("output.pkl"))) == 4


def test_mbtr_memory_caches_per_structure(tmp_path):
    frames = _jiggled(linear_alkane(2), 4)
    mbtr = MBTR(memory=str(tmp_path)).fit(frames)
    first = mbtr.transform(frames)
    np.testing.assert_array_equal(first, MBTR().fit(frames).transform(frames))
    np.testing.assert_array_equal(mbtr.transform(frames[1:3]), first[1:3])
    assert len(list(tmp_path.rglob("output.pkl"))) == 4


def test_shared_cluster_descriptors_have_documented_sizes(shared_structures):
    atoms = read(shared_structures / "au25_sch3_18.xyz")
    env = AtomicEnvironments(atoms)
    soap = SOAP(r_cut=4.0, n_max=7, l_max=4, sigma=0.25).fit(env)
    assert soap.transform(env).shape == (115, soap.n_features_out_)
    assert MBTR().fit([atoms]).transform([atoms]).shape == (1, 1000)


@pytest.mark.parametrize("transformer", [SOAP(), MBTR()], ids=["SOAP", "MBTR"])
def test_scikit_learn_parameter_conventions(transformer):
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
    )

    name = type(transformer).__name__
    check_no_attributes_set_in_init(name, transformer)
    check_parameters_default_constructible(name, transformer)
    check_get_params_invariance(name, transformer)


def test_parallel_grid_search_pickles_environments():
    frames = _jiggled(linear_alkane(2), 6, seed=2)
    env = AtomicEnvironments(frames, species="C")
    y = env.positions[:, 1]
    pipe = Pipeline([("soap", SOAP(n_max=2, l_max=1)), ("emlm", EMLM())])
    grid = {"soap__sigma": [0.25, 0.5]}
    one = GridSearchCV(pipe, grid, cv=3).fit(env, y)
    two = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(env, y)
    np.testing.assert_allclose(
        one.cv_results_["mean_test_score"], two.cv_results_["mean_test_score"]
    )


def test_mbtr_describes_structures_and_refuses_atom_centred_samples():
    """make_pipeline(MBTR(), EMLM()) fits per-structure targets; environments are refused."""
    from sklearn.pipeline import make_pipeline

    frames = _jiggled(linear_alkane(3), 8, seed=3)
    env = AtomicEnvironments(frames, species="H")
    y_atoms = np.linalg.norm(env.positions, axis=1)
    pipe = make_pipeline(MBTR(n_grid=20), EMLM(references=4))
    with pytest.raises(TypeError, match=r"MBTR describes whole structures.*X\.structures"):
        pipe.fit(env, y_atoms)
    with pytest.raises(TypeError, match="MBTR describes whole structures"):
        MBTR().fit(frames).transform(env)
    # the structures themselves, one target per structure, work as the user guide says
    energies = np.array([a.positions[:, 0].std() for a in frames])
    assert pipe.fit(env.structures, energies).predict(frames[:2]).shape == (2,)


@pytest.mark.parametrize(
    "transformer, parameter",
    [
        (SOAP(r_cut=0.0), "r_cut"),
        (SOAP(n_max=0), "n_max"),
        (SOAP(l_max=-1), "l_max"),
        (SOAP(sigma=-0.1), "sigma"),
        (SOAP(rbf="bessel"), "rbf"),
        (SOAP(weighting="poly"), "weighting"),
        (SOAP(dtype="float16"), "dtype"),
        (SOAP(memory=3), "memory"),
        (MBTR(geometry="volume"), "geometry"),
        (MBTR(n_grid=0), "n_grid"),
        (MBTR(sigma=0.0), "sigma"),
        (MBTR(weighting=None), "weighting"),
        (MBTR(scale=-1.0), "scale"),
        (MBTR(normalization="max"), "normalization"),
        (MBTR(periodic="yes"), "periodic"),
        (MBTR(n_jobs=1.5), "n_jobs"),
    ],
)
def test_descriptor_parameters_are_validated_at_fit(transformer, parameter):
    from sklearn.utils._param_validation import InvalidParameterError

    name = type(transformer).__name__
    with pytest.raises(InvalidParameterError, match=f"'{parameter}' parameter of {name}"):
        transformer.fit([molecule("CH4")])


def test_mbtr_grid_must_be_an_interval():
    with pytest.raises(ValueError, match="grid_max=0.5 must be larger than grid_min=1.0"):
        MBTR(grid_min=1.0, grid_max=0.5).fit([molecule("CH4")])


def test_descriptors_without_their_packages_name_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dscribe", None)
    monkeypatch.setitem(sys.modules, "dscribe.descriptors", None)
    extra = r"pip install \"\.\[atoms\]\""
    with pytest.raises(ModuleNotFoundError, match=rf"dscribe is needed by SOAP.*{extra}"):
        SOAP().fit([molecule("CH4")])
    with pytest.raises(ModuleNotFoundError, match=r"dscribe is needed by MBTR.*\.\[atoms\]"):
        MBTR().fit([molecule("CH4")])


def test_soap_refuses_centres_of_an_element_it_was_not_fitted_on():
    # a carbon model handed whole structures would predict for their hydrogens silently
    structures = [linear_alkane(3), linear_alkane(4)]
    soap = SOAP(r_cut=3.0, n_max=2, l_max=1).fit(AtomicEnvironments(structures, species="C"))
    assert soap.center_species_ == ["C"]
    assert soap.transform(AtomicEnvironments([molecule("C2H6")], species="C")).shape[0] == 2
    with pytest.raises(ValueError, match=r"atom 2 of structure 0 is H.*\['C'\] centres only"):
        soap.transform([molecule("C2H6")])
    pipe = Pipeline([("soap", SOAP(r_cut=3.0, n_max=2, l_max=1)), ("emlm", EMLM(references=3))])
    env = AtomicEnvironments(structures, species="C")
    pipe.fit(env, np.arange(len(env), dtype=float))
    with pytest.raises(ValueError, match="centres only"):
        pipe.predict(molecule("C3H8"))
    every = SOAP(r_cut=3.0, n_max=2, l_max=1).fit(structures)  # every atom: both elements
    assert every.center_species_ == ["H", "C"]
    assert every.transform([molecule("C2H6")]).shape[0] == 8


def _dscribe_rows(theirs, env):
    """dscribe's ``create`` per structure, its rows put in ``env``'s order."""
    out = np.empty((len(env), theirs.get_number_of_features()), dtype=theirs.dtype)
    for s in np.unique(env.structure_index):
        rows = np.flatnonzero(env.structure_index == s)
        out[rows] = theirs.create(env.structures[s], centers=env.atom_index[rows].tolist())
    return out


@pytest.mark.parametrize("settings", [
    {},
    {"rbf": "polynomial"},
    {"weighting": {"function": "poly", "r0": 3.5, "c": 1, "m": 2}},
    {"dtype": "float32"},
    {"n_jobs": 2},
    {"periodic": True},
], ids=["gto", "polynomial", "weighting", "float32", "n_jobs", "periodic"])
@pytest.mark.parametrize("writer", ["compiled in place", "create_single"])
def test_soap_rows_are_dscribes_bit_for_bit(settings, writer, monkeypatch):
    """SOAP.transform fills its rows with dscribe's compiled SOAP directly (or, for
    another dscribe version, through create_single): the same numbers as
    dscribe's create, for every basis, weighting, dtype and n_jobs, for centres in
    any order (rows of a structure not contiguous in the output), periodic or not."""
    from ase.build import bulk

    from mlmlearn.atoms import _soap

    if writer == "create_single":
        monkeypatch.setattr(_soap, "_extension", lambda soap: None)
    params = dict(r_cut=3.5, n_max=3, l_max=2, sigma=0.3, **settings)
    if settings.get("periodic"):
        gold = bulk("Au", cubic=True).repeat((2, 1, 1))
        frames = _jiggled(gold, 2) + [gold_thiolate_ring(4)]
        frames[-1].cell = np.diag([14.0, 14.0, 14.0])
        frames[-1].pbc = True
    else:
        frames = _jiggled(gold_thiolate_ring(4), 2) + [linear_alkane(3)]
    env = AtomicEnvironments(frames)
    env = env[np.random.default_rng(0).permutation(len(env))]  # structures interleaved
    ours = SOAP(**params).fit(env)
    dscribe_params = {k: v for k, v in params.items() if k != "n_jobs"}
    theirs = DscribeSOAP(species=ours.species_, **dscribe_params)
    got = ours.transform(env)
    assert got.dtype == np.dtype(params.get("dtype", "float64"))
    np.testing.assert_array_equal(got, _dscribe_rows(theirs, env))
    whole = ours.transform(frames)  # every atom in order: rows written in place
    np.testing.assert_array_equal(whole, np.vstack([theirs.create(a) for a in frames]))


def test_periodic_soap_refuses_a_flat_cell_naming_the_structure():
    """dscribe refuses a periodic descriptor on a structure without a cell; the
    transformer keeps that check and says which structure it is."""
    from ase.build import bulk

    gold = bulk("Au", cubic=True)
    soap = SOAP(r_cut=3.0, n_max=2, l_max=1, periodic=True, species=["Au", "C", "H", "S"])
    soap.fit([gold])
    with pytest.raises(ValueError, match="justify periodicity"):
        soap.descriptor_.create(gold_thiolate_ring(4))
    with pytest.raises(ValueError, match=r"structure 1 has a cell of zero volume"):
        soap.transform(AtomicEnvironments([gold, gold_thiolate_ring(4)], species="Au"))
