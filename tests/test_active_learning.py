"""Active learning: ML MD checked by GFN2-xTB single points grows the training data."""

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("tblite")

from mlmlearn.applications.active_learning import active_learning  # noqa: E402
from mlmlearn.atoms import SOAP  # noqa: E402
from mlmlearn.datasets import load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import EMLMPotential  # noqa: E402

E0 = {"H": -10.707, "C": -48.847, "S": -85.669, "Au": -103.475}


def _gfn2():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


@pytest.fixture(scope="module")
def setup():
    data = load_gold_thiolate_rings()
    au4 = [f for f in data.frames if len(f) == 24]
    pot = EMLMPotential(SOAP(r_cut=4.0, n_max=3, l_max=2), n_references=20, atomic_energies=E0)
    return pot, au4[1::40], [au4[100]]


def test_frames_the_potential_gets_wrong_join_the_data_with_reference_results(setup, tmp_path):
    from threadpoolctl import threadpool_limits

    pot, train, starts = setup
    with threadpool_limits(1):
        result = active_learning(pot, train, _gfn2, starts, rounds=2, n_steps=40, check_every=20,
                                 force_threshold=0.01, checkpoint=tmp_path / "al")
    # a threshold below any model's error adds the first checked frame of every run
    assert [h["added"] for h in result.history] == [1, 1]
    assert not result.converged and len(result.added) == 2
    frame = result.added[0]
    assert frame.info["round"] == 0 and frame.info["step"] == 20
    reference = frame.copy()
    reference.calc = _gfn2()
    with threadpool_limits(1):
        np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), atol=1e-8)
    # the returned potential has learnt from both added frames
    assert result.potential.n_energy_rows_ == len(train) + 2
    assert repr(result.potential) == repr(pot) and result.potential is not pot

    # the checkpoint resumes after its last round; more rounds continue the loop exactly as
    # an uninterrupted run of three rounds would go
    with threadpool_limits(1):
        more = active_learning(pot, train, _gfn2, starts, rounds=2, n_steps=40, check_every=20,
                               force_threshold=0.01, checkpoint=tmp_path / "al")
        assert more.history == result.history
        np.testing.assert_array_equal(more.added[1].positions, result.added[1].positions)
        third = active_learning(pot, train, _gfn2, starts, rounds=3, n_steps=40, check_every=20,
                                force_threshold=0.01, checkpoint=tmp_path / "al")
        whole = active_learning(pot, train, _gfn2, starts, rounds=3, n_steps=40, check_every=20,
                                force_threshold=0.01)
    # GFN2-xTB energies of identical positions differ between calls in the last digits
    # (1e-13 eV), and MD carries that into later rounds: equal to far below any physics
    assert len(third.added) == len(whole.added) == 3
    for a, b in zip(third.history, whole.history, strict=True):
        assert {k: v for k, v in a.items() if k != "force_rmse"} == {
            k: v for k, v in b.items() if k != "force_rmse"}
        np.testing.assert_allclose(a["force_rmse"], b["force_rmse"], rtol=1e-6)
    np.testing.assert_allclose(third.added[2].positions, whole.added[2].positions, atol=1e-6)
    with pytest.raises(ValueError, match="settings"):
        active_learning(pot, train, _gfn2, starts, rounds=3, n_steps=60, check_every=20,
                        force_threshold=0.01, checkpoint=tmp_path / "al")


def test_a_lenient_threshold_converges_in_one_round(setup):
    pot, train, starts = setup
    result = active_learning(pot, train, _gfn2, starts, rounds=3, n_steps=40, check_every=20,
                             force_threshold=100.0)
    assert result.converged and len(result.history) == 1 and not result.added
    assert result.history[0]["checked"] == 2 and len(result.history[0]["force_rmse"]) == 2


def test_no_starts_is_refused(setup):
    pot, train, _ = setup
    with pytest.raises(ValueError, match="starts is empty"):
        active_learning(pot, train, _gfn2, [])


def test_relaxation_probes_check_the_potentials_minima(setup):
    from threadpoolctl import threadpool_limits

    pot, train, starts = setup
    with threadpool_limits(1):
        result = active_learning(pot, train, _gfn2, starts, rounds=1, n_steps=40, check_every=20,
                                 force_threshold=0.01, relax_fmax=0.05, relax_steps=300)
    record = result.history[0]
    # the MD check adds its frame; the minimum reached from there is checked and added too
    assert record["added"] == 2 and record["relax_added"] == 1 and record["checked"] == 2
    md, relaxed = result.added
    assert md.info["relaxed"] is False and relaxed.info["relaxed"] is True
    assert len(record["relax_force_rmse"]) == 1 and record["relax_force_rmse"][0] > 0.01
    reference = relaxed.copy()
    reference.calc = _gfn2()
    with threadpool_limits(1):
        np.testing.assert_allclose(relaxed.get_forces(), reference.get_forces(), atol=1e-8)


def test_a_minimum_that_is_no_reference_minimum_joins_by_its_largest_force(setup):
    from threadpoolctl import threadpool_limits

    pot, train, starts = setup
    with threadpool_limits(1):
        result = active_learning(pot, train, _gfn2, starts, rounds=1, n_steps=40, check_every=20,
                                 force_threshold=100.0, relax_fmax=0.05, relax_steps=300,
                                 relax_max_force=0.0)
    record = result.history[0]
    # no MD frame and no minimum is off by 100 eV/Å RMSE, but GFN2-xTB's forces at the
    # potential's minimum are not zero
    assert record["relax_added"] == 1 and len(result.added) == 1
    assert result.added[0].info["relaxed"] is True
    assert record["relax_reference_fmax"][0] == pytest.approx(
        np.linalg.norm(result.added[0].get_forces(), axis=1).max())
