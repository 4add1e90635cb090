"""EMLMPotential: energies whose forces are the exact gradient; fit, symmetries, guards."""

import pickle

import numpy as np
import pytest

pytest.importorskip("dscribe")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold  # noqa: E402

from mlmlearn.atoms import SOAP  # noqa: E402
from mlmlearn.datasets import load_alkanes, load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import (  # noqa: E402
    ZBL,
    EMLMPotential,
    OffsetsNotIdentifiableError,
    UnknownAtomTypeError,
)
from mlmlearn.forcefield._potential import _force_design_dense  # noqa: E402
from mlmlearn.metrics import energy_rmse_scorer, force_rmse_scorer  # noqa: E402

#: GFN2-xTB isolated-atom energies (eV); any fixed values serve these tests
E0 = {"H": -10.707, "C": -48.847, "S": -85.669, "Au": -103.475}


def _small(**kwargs):
    params = dict(descriptor=SOAP(r_cut=4.0, n_max=3, l_max=2, sigma=0.25), n_references=25,
                  atomic_energies=E0, beta=1e-4)
    params.update(kwargs)
    return EMLMPotential(**params)


@pytest.fixture(scope="module")
def rings():
    data = load_gold_thiolate_rings()
    names = np.asarray(data.run_names)[data.run]
    au4 = [f for f, n in zip(data.frames, names, strict=True) if n.startswith("Au4")]
    return au4[1::12], au4[7::48]


@pytest.fixture(scope="module")
def pot(rings):
    return _small().fit(rings[0])


def _central_differences(pot, atoms, coordinates, h):
    out = []
    for j, a in coordinates:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[j, a] += h
        minus.positions[j, a] -= h
        out.append(-(pot.predict(plus)[0] - pot.predict(minus)[0]) / (2 * h))
    return np.array(out)


def test_forces_are_minus_the_gradient_of_the_energy(pot, rings):
    # central differences: truncation h²/6·|E'''| and rounding ε·|E|/h, both ≪ 1e-6·|F|
    atoms = rings[1][0]
    F = pot.predict_forces(atoms)
    rng = np.random.default_rng(0)
    coordinates = [(int(j), int(a)) for j, a in zip(rng.integers(0, len(atoms), 12),
                                                    rng.integers(0, 3, 12), strict=True)]
    fd = _central_differences(pot, atoms, coordinates, 1e-4)
    exact = np.array([F[j, a] for j, a in coordinates])
    np.testing.assert_allclose(exact, fd, rtol=0, atol=1e-6 * np.abs(F).max())


def test_gradient_holds_where_the_repulsion_acts(pot, rings):
    atoms = rings[1][0].copy()
    h = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"]
    # put two hydrogens of different methyls inside the switch of their pair's repulsion
    r_out = pot.repulsion_.r_out_[(1, 1)]
    atoms.positions[h[5]] = atoms.positions[h[0]] + [0.75 * r_out, 0.0, 0.0]
    h = [h[0], h[5]]
    e_rep, f_rep = pot.repulsion_.energy_forces(atoms)
    assert e_rep.sum() > 0.1
    F = pot.predict_forces(atoms)
    coordinates = [(h[0], 0), (h[1], 0), (h[1], 1)]
    fd = _central_differences(pot, atoms, coordinates, 1e-5)
    exact = np.array([F[j, a] for j, a in coordinates])
    np.testing.assert_allclose(exact, fd, rtol=0, atol=1e-6 * np.abs(F).max())


def test_sparse_force_rows_equal_the_dense_contraction(pot, rings):
    atoms = rings[1][1]
    A = pot._force_design(atoms)
    B = _force_design_dense(pot, atoms)
    np.testing.assert_allclose(A, B, rtol=0, atol=1e-12 * np.abs(B).max())


def test_force_rows_times_weights_are_the_predicted_forces(pot, rings):
    atoms = rings[1][2]
    w = np.concatenate([pot.coef_[t] for t in pot.elements_])
    F_ml = (pot._force_design(atoms) @ w).reshape(-1, 3)
    F_rep = pot.repulsion_.energy_forces(atoms)[1]
    np.testing.assert_allclose(F_ml + F_rep, pot.predict_forces(atoms), atol=1e-10)


def test_a_closed_loop_does_no_work_and_an_open_path_does_minus_delta_e(pot, rings):
    atoms = rings[1][0]
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(2, len(atoms), 3))
    u *= 0.05 / np.abs(u).max()
    v *= 0.05 / np.abs(v).max()

    def work(n, theta_end):
        theta = np.linspace(0.0, theta_end, n + 1)
        total, previous = 0.0, None
        for th in theta:
            a = atoms.copy()
            a.positions += np.cos(th) * u + np.sin(th) * v - u
            # dr/dθ for the trapezoid rule on F·dr/dθ
            f = np.sum(pot.predict_forces(a) * (-np.sin(th) * u + np.cos(th) * v))
            if previous is not None:
                total += 0.5 * (f + previous) * (theta[1] - theta[0])
            previous = f
        return total

    # trapezoid on a smooth periodic integrand converges geometrically: 24 points suffice
    loop = work(24, 2 * np.pi)
    scale = np.abs(pot.predict_forces(atoms)).sum() * 0.05
    assert abs(loop) < 1e-6 * scale
    # the open half loop: W = E(start) − E(end), trapezoid error O(h²) bounded by halving h
    w1, w2 = work(32, np.pi), work(64, np.pi)
    end = atoms.copy()
    end.positions += -2 * u
    delta = pot.predict(atoms)[0] - pot.predict(end)[0]
    assert abs(w2 - delta) < 2 * abs(w1 - w2) + 1e-9 * scale


@settings(max_examples=8, deadline=None)
@given(hnp.arrays(float, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 0.1),
       hnp.arrays(float, 3, elements=st.floats(-20, 20)), st.integers(0, 2**31 - 1))
def test_energy_is_invariant_and_forces_are_equivariant(pot, rings, quaternion, shift, seed):
    atoms = rings[1][0]
    E, F = pot.predict(atoms)[0], pot.predict_forces(atoms)
    R = Rotation.from_quat(quaternion)
    order = np.random.default_rng(seed).permutation(len(atoms))
    moved = atoms[order]
    moved.positions = R.apply(moved.positions) + shift
    scale = np.abs(F).max()
    # SOAP is rotation invariant to its expansion's rounding; |E| ~ 1e3 eV
    np.testing.assert_allclose(pot.predict(moved)[0], E, rtol=1e-11, atol=0)
    np.testing.assert_allclose(pot.predict_forces(moved), R.apply(F[order]),
                               rtol=0, atol=1e-8 * scale)


def test_refit_on_its_own_predictions_recovers_the_model(pot, rings):
    # the targets lie in the span of the rows: the linear solve must return them
    frames = []
    for atoms in rings[0]:
        a = atoms.copy()
        e, f = pot.energies_forces(a)
        from ase.calculators.singlepoint import SinglePointCalculator

        a.calc = SinglePointCalculator(a, energy=e.sum(), forces=f)
        frames.append(a)
    student = clone(pot).set_params(beta=1e-10).fit(frames)
    test = rings[1][3]
    np.testing.assert_allclose(student.predict_forces(test), pot.predict_forces(test),
                               atol=1e-5 * np.abs(pot.predict_forces(test)).max())
    np.testing.assert_allclose(student.predict(test), pot.predict(test), rtol=1e-9)


def test_per_atom_energies_sum_to_the_energy(pot, rings):
    atoms = rings[1][1]
    e, _ = pot.energies_forces(atoms, forces=False)
    assert e.shape == (len(atoms),)
    np.testing.assert_allclose(e.sum(), pot.predict(atoms)[0], rtol=1e-13)


def test_offsets_of_one_formula_are_not_identifiable(rings):
    with pytest.raises(OffsetsNotIdentifiableError, match="atomic_energies"):
        _small(atomic_energies=None).fit(rings[0][:5])


def test_offsets_are_learnt_when_the_compositions_determine_them():
    data = load_alkanes()
    frames = [f for f, s in zip(data.frames, data.step, strict=True) if s % 400 == 1]
    pot = _small(atomic_energies=None, n_references=10).fit(frames)
    assert set(pot.offsets_) == {"H", "C"}
    # the learnt offsets carry the composition: predictions match per molecule
    err = (pot.predict(frames) - np.array([f.get_potential_energy() for f in frames]))
    assert np.abs(err).max() / 20 < 0.05


def test_missing_atomic_energy_is_named(rings):
    with pytest.raises(ValueError, match="'Au'"):
        _small(atomic_energies={"H": 0.0, "C": 0.0, "S": 0.0}).fit(rings[0][:5])


def test_unknown_element_and_bad_positions_are_named(pot, rings):
    atoms = rings[1][0].copy()
    atoms.symbols[3] = "O"
    with pytest.raises(UnknownAtomTypeError, match="atom 3 of structure 0 is O"):
        pot.predict_forces(atoms)
    atoms = rings[1][0].copy()
    atoms.positions[5, 1] = np.nan
    with pytest.raises(ValueError, match="atom 5 of structure 0"):
        pot.predict(atoms)


def test_bad_energies_are_named(rings):
    with pytest.raises(ValueError, match="y has 2 energies for 5 structures"):
        _small().fit(rings[0][:5], y=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"y\[1\]"):
        _small().fit(rings[0][:3], y=[1.0, np.nan, 2.0])


def test_force_structures_subsamples_force_rows_only(rings):
    frames = rings[0][:10]
    pot = _small(force_structures=3, random_state=0).fit(frames)
    assert pot.n_energy_rows_ == 10
    assert pot.n_force_rows_ == 3 * 3 * len(frames[0])
    pot = _small(force_structures=0.5, random_state=0).fit(frames)
    assert pot.n_force_rows_ == 5 * 3 * len(frames[0])


def test_pickle_round_trip_predicts_the_same(pot, rings):
    again = pickle.loads(pickle.dumps(pot))
    atoms = rings[1][0]
    np.testing.assert_array_equal(again.predict_forces(atoms), pot.predict_forces(atoms))


def test_grid_search_over_descriptor_epsilon_and_ridge_with_energy_and_force_scorers(rings):
    frames = rings[0][:24]
    groups = np.repeat(np.arange(3), 8)
    search = GridSearchCV(
        _small(n_references=10),
        {"descriptor__n_max": [2, 3], "epsilon": [2.0, 5.0], "beta": [1e-4]},
        scoring={"energy": energy_rmse_scorer, "forces": force_rmse_scorer},
        refit="forces", cv=GroupKFold(3),
    ).fit(frames, groups=groups)
    assert search.best_estimator_.descriptor_.n_max in (2, 3)
    assert np.all(search.cv_results_["mean_test_forces"] < 0)
    assert np.all(search.cv_results_["mean_test_energy"] < 0)


def test_zbl_forces_are_its_gradient_and_push_apart():
    from ase import Atoms

    zbl = ZBL()
    rng = np.random.default_rng(3)
    atoms = Atoms("AuSCH", positions=rng.normal(scale=0.35, size=(4, 3)))
    e, f = zbl.energy_forces(atoms)
    assert e.sum() > 0
    h = 1e-6
    for j in range(4):
        for a in range(3):
            p, m = atoms.copy(), atoms.copy()
            p.positions[j, a] += h
            m.positions[j, a] -= h
            fd = -(zbl.energy_forces(p)[0].sum() - zbl.energy_forces(m)[0].sum()) / (2 * h)
            assert abs(fd - f[j, a]) <= 1e-6 * np.abs(f).max()
    r = np.linspace(0.05, 1.5, 300)
    pair = [zbl.energy_forces(Atoms("SH", positions=[[0, 0, 0], [x, 0, 0]]))[0].sum() for x in r]
    assert np.all(np.diff(pair) <= 0)
    assert pair[-1] == 0.0


def test_zbl_inner_is_a_fraction_of_the_switch_radius():
    from ase import Atoms
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="inner"):
        ZBL(inner=1.0).energy_forces(Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]]))


def test_zbl_fitted_to_data_is_zero_on_them_and_repels_every_closer_contact(rings):
    frames = rings[0]
    zbl = ZBL().fit(frames)
    assert {(1, 1), (1, 6), (6, 16), (16, 79)} <= set(zbl.r_out_)
    assert 0.8 < zbl.r_out_[(1, 6)] < 1.1 < 1.3 < zbl.r_out_[(1, 1)]
    for atoms in frames[:20]:
        e, f = zbl.energy_forces(atoms)
        assert not e.any() and not f.any()
    # the closest C-H of the data, shortened by 5 %, is repelled
    from ase import Atoms

    r = zbl.r_out_[(1, 6)]
    e, f = zbl.energy_forces(Atoms("CH", positions=[[0, 0, 0], [0.95 * r, 0, 0]]))
    assert e.sum() > 0 and f[1, 0] > 0


def test_calculator_gives_energy_free_energy_per_atom_energies_and_forces(pot, rings):
    from ase.calculators.calculator import PropertyNotImplementedError

    from mlmlearn.forcefield import MLMCalculator

    atoms = rings[1][0].copy()
    atoms.calc = MLMCalculator(pot)
    e, f = pot.energies_forces(atoms)
    assert atoms.get_potential_energy() == pytest.approx(e.sum(), rel=1e-14)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_potential_energies(), e, rtol=1e-14)
    np.testing.assert_allclose(atoms.get_forces(), f, rtol=1e-14)
    # moving an atom invalidates the stored results
    atoms.positions[0, 0] += 0.05
    moved = pot.energies_forces(atoms)
    np.testing.assert_allclose(atoms.get_forces(), moved[1], rtol=1e-14)
    assert atoms.get_potential_energy() != pytest.approx(e.sum(), rel=1e-12)
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError, match="uncertainty"):
        atoms.calc.get_uncertainty()
    with pytest.raises(ValueError, match="energy_model"):
        MLMCalculator(pot, energy_model=pot)


def test_bfgs_on_the_potential_converges_and_lowers_its_energy(pot, rings):
    from ase.optimize import BFGS

    from mlmlearn.forcefield import MLMCalculator

    atoms = rings[1][1].copy()
    atoms.calc = MLMCalculator(pot)
    start = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=0.05, steps=300)
    assert atoms.get_potential_energy() < start
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05


def test_two_hydrogens_pushed_together_meet_the_repulsive_wall(pot, rings):
    # the hole of trap (a): two H atoms that a distance regression let fall to 0.16 Å apart
    atoms = rings[1][0]
    h = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"]
    a, b = h[0], h[5]
    start = pot.predict(atoms)[0]
    direction = atoms.positions[b] - atoms.positions[a]
    direction /= np.linalg.norm(direction)
    energies = []
    for r in np.linspace(0.5, 0.1, 41):
        moved = atoms.copy()
        moved.positions[b] = atoms.positions[a] + r * direction
        energies.append(pot.predict(moved)[0])
    energies = np.array(energies)
    inner = np.linspace(0.5, 0.1, 41) < 0.3
    assert np.all(np.diff(energies[inner]) > 0)  # repulsive all the way in
    assert energies[np.argmin(np.abs(np.linspace(0.5, 0.1, 41) - 0.16))] > start + 10.0


def test_without_the_baseline_nothing_guards_the_close_contact(rings):
    # the same probe on a potential without repulsion: the wall is the baseline's doing
    bare = _small(repulsion=None).fit(rings[0])
    atoms = rings[1][0]
    h = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "H"]
    moved = atoms.copy()
    direction = atoms.positions[h[5]] - atoms.positions[h[0]]
    moved.positions[h[5]] = atoms.positions[h[0]] + 0.16 * direction / np.linalg.norm(direction)
    guarded = _small().fit(rings[0])
    rise_bare = bare.predict(moved)[0] - bare.predict(atoms)[0]
    rise = guarded.predict(moved)[0] - guarded.predict(atoms)[0]
    assert rise > rise_bare + 10.0


def test_confinement_is_zero_on_the_data_and_its_gradient_is_exact(pot, rings):
    assert np.all(pot.extrapolation(rings[0]) <= 1e-12)
    # move a methyl carbon 0.6 Å towards its neighbouring sulfur's gold: outside the data
    atoms = rings[1][0].copy()
    c = atoms.get_chemical_symbols().index("C")
    atoms.positions[c] += [0.6, 0.3, 0.0]
    x = pot.extrapolation(atoms)
    assert x.max() > 0.05
    F = pot.predict_forces(atoms)
    coordinates = [(c, 0), (c, 1), (c, 2)]
    fd = _central_differences(pot, atoms, coordinates, 1e-5)
    exact = np.array([F[j, a] for j, a in coordinates])
    np.testing.assert_allclose(exact, fd, rtol=0, atol=1e-6 * np.abs(F).max())


def test_without_confinement_the_wall_is_gone(rings):
    free = _small(confinement=0.0).fit(rings[0])
    assert all(k == 0.0 for k in free.confinement_.values())
    atoms = rings[1][0].copy()
    atoms.positions[atoms.get_chemical_symbols().index("C")] += [0.6, 0.3, 0.0]
    walled = _small().fit(rings[0])
    assert walled.predict(atoms)[0] - free.predict(atoms)[0] > 0
