"""Incremental MBTR → EMLM/MLM energies for Monte Carlo against dscribe and predict."""

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")

from mlmlearn.applications.montecarlo import (  # noqa: E402
    GoldThiolateMoves,
    IncrementalEnergy,
    MonteCarlo,
)
from mlmlearn.applications.montecarlo._incremental import _delta_py, kernels  # noqa: E402
from mlmlearn.datasets import load_au25, load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import MLMCalculator, default_energy_model  # noqa: E402


def _fit(frames, **kwargs):
    return default_energy_model(**kwargs).fit(frames, [f.get_potential_energy() for f in frames])


@pytest.fixture(scope="module")
def ring_models():
    frames = [f for f in load_gold_thiolate_rings().frames if len(f) == 30][::12]
    return frames, {
        "emlm set 2": _fit(frames, references=40),
        "emlm set 1": _fit(frames, references=40, parameter_set=1),
        "mlm": _fit(frames, estimator="mlm", references=30),
    }


@pytest.mark.parametrize("name", ["emlm set 2", "emlm set 1", "mlm"])
def test_trial_energies_equal_the_full_recompute(ring_models, name):
    frames, models = ring_models
    model = models[name]
    atoms = frames[7].copy()
    engine = IncrementalEnergy(model, refresh_every=10**6)
    energy = engine.start(atoms)
    assert energy == pytest.approx(model.predict([atoms])[0], rel=1e-12)
    parts = GoldThiolateMoves().parts(atoms)
    rng = np.random.default_rng(0)
    # rejected and accepted moves interleaved, including a rejected-then-accepted part
    for k in range(60):
        part = parts[rng.integers(len(parts))]
        new = part.propose(atoms.positions, 0.15, rng)
        trial = engine.trial(part.indices, new)
        moved = atoms.copy()
        moved.positions[part.indices] = new
        full = model.predict([moved])[0]
        assert trial == pytest.approx(full, rel=1e-9, abs=1e-9), (k, part)
        if k % 3 == 0:
            engine.reject()
            np.testing.assert_array_equal(atoms.positions, atoms.positions)
            assert engine.energy() == energy
            trial = engine.trial(part.indices, new)  # the same move again, now accepted
        engine.accept()
        energy = trial
        np.testing.assert_array_equal(atoms.positions[part.indices], new)
    assert engine.energy() == pytest.approx(model.predict([atoms])[0], rel=1e-9)
    assert engine.refresh() == pytest.approx(model.predict([atoms])[0], rel=1e-12)


def test_the_compiled_kernel_equals_its_python_oracle(ring_models):
    import mlmlearn.applications.montecarlo._incremental as module

    frames, models = ring_models
    engine = IncrementalEnergy(models["emlm set 2"])
    atoms = frames[3].copy()
    engine.start(atoms)
    indices = np.array([5, 6, 7, 8])
    new = atoms.positions[indices] + 0.2
    width = engine._cache_values.shape[2]

    def delta(kernel):
        out = np.zeros(engine._n_features)
        pending = (np.empty((4, len(atoms)), dtype=np.int64), np.empty((4, len(atoms), width)))
        kernel(atoms.positions, indices, new, engine._types, engine._n_elements, engine._grid,
               engine._weighting, engine._cache_lo, engine._cache_values, *pending, out)
        return out

    compiled = delta(kernels()["delta"])
    names = ("_block", "_add", "_distance", "_moved_rows")
    helpers = {name: getattr(module, name) for name in ("_pair_window", *names)}
    try:  # the pure-Python oracle with pure-Python helpers
        module._pair_window = module._pair_window_py
        for name in names:
            setattr(module, name, getattr(helpers[name], "py_func", helpers[name]))
        oracle = delta(_delta_py)
    finally:
        for name, value in helpers.items():
            setattr(module, name, value)
    np.testing.assert_allclose(compiled, oracle, rtol=1e-13, atol=1e-15)
    # and the difference is dscribe's: MBTR(new) - MBTR(old)
    moved = atoms.copy()
    moved.positions[indices] = new
    mbtr = models["emlm set 2"][0]
    expected = mbtr.transform([moved])[0] - mbtr.transform([atoms])[0]
    np.testing.assert_allclose(oracle, expected, atol=1e-12 * np.abs(expected).max())


def test_au25_moves_and_monte_carlo_resume_bit_for_bit(tmp_path):
    frames = load_au25().frames[::30]
    model = _fit(frames, references=15)
    start = frames[4].copy()

    def run(path, steps):
        atoms = start.copy()
        mc = MonteCarlo(atoms, 300.0, energy=IncrementalEnergy(model, refresh_every=25),
                        trajectory=path, checkpoint_interval=2, random_state=3)
        mc.equilibrate(3)
        mc.run(steps)
        return mc

    whole = run(tmp_path / "whole.extxyz", 5)
    run(tmp_path / "cut.extxyz", 2)  # stopped after production step 2 (a checkpoint)
    resumed = run(tmp_path / "cut.extxyz", 5)
    assert (tmp_path / "cut.extxyz").read_bytes() == (tmp_path / "whole.extxyz").read_bytes()
    assert resumed.energies == whole.energies
    assert len(resumed.parts) == 61  # paper II's count for Au25(SCH3)18
    check = resumed.atoms.copy()
    check.calc = MLMCalculator(energy_model=model)
    assert resumed.energy == pytest.approx(check.get_potential_energy(), rel=1e-9)


def test_models_it_cannot_update_are_refused(ring_models):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from mlmlearn import EMLM
    from mlmlearn.atoms import MBTR

    frames, _ = ring_models
    energies = [f.get_potential_energy() for f in frames]
    with pytest.raises(ValueError, match="not a Pipeline"):
        IncrementalEnergy(EMLM())
    bad = make_pipeline(MBTR(n_grid=20), Normalizer(), EMLM(references=5)).fit(frames, energies)
    with pytest.raises(ValueError, match="Normalizer"):
        IncrementalEnergy(bad)
    l2 = make_pipeline(MBTR(n_grid=20, normalization="l2"), EMLM(references=5)).fit(frames,
                                                                                    energies)
    with pytest.raises(ValueError, match="normalization"):
        IncrementalEnergy(l2)
