"""Monte Carlo active learning of an energy model (paper II's lesson), with GFN2-xTB."""

import functools
import json

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("tblite")

from mlmlearn.applications.montecarlo import (  # noqa: E402
    BrokenGeometry,
    FarFromReferences,
    montecarlo_active_learning,
)
from mlmlearn.datasets import load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import default_energy_model  # noqa: E402


def _gfn2(log=None):
    from tblite.ase import TBLite

    if log is not None:
        with open(log, "a") as fh:
            fh.write("x")
    return TBLite(method="GFN2-xTB", verbosity=0)


@pytest.fixture(scope="module")
def rings():
    frames = [f for f in load_gold_thiolate_rings().frames if len(f) == 24]
    return frames[::25], frames[120]


def test_rounds_add_flagged_frames_with_reference_energies_and_resume(rings, tmp_path):
    from threadpoolctl import threadpool_limits

    train, start = rings
    energies = [f.get_potential_energy() for f in train]
    model = default_energy_model(references=10)
    log = tmp_path / "calls.txt"
    # a strict criterion: MC frames of this short run lie within the data's own spacing
    kwargs = dict(rounds=2, n_steps=20, equilibration=10, sample_every=5, max_added=2,
                  n_check=2, n_jobs=1, random_state=0, criterion=FarFromReferences(0.2))
    with threadpool_limits(1):
        result = montecarlo_active_learning(
            model, train, energies, functools.partial(_gfn2, log), start,
            checkpoint=tmp_path / "al", **kwargs)
    first = result.history[0]
    assert first["frames"] == 4 and first["flagged"] >= 1 and first["added"] >= 1
    assert first["added"] <= 2 and first["checked"] <= 4
    assert np.isfinite(first["energy_rmse"]) and first["energy_rmse_per_atom"] > 0
    assert first["time_mc"] > 0 and first["time_reference"] > 0
    added = result.added[0]
    reference = added.copy()
    reference.calc = _gfn2()
    with threadpool_limits(1):
        assert added.get_potential_energy() == pytest.approx(reference.get_potential_energy(),
                                                             abs=1e-6)
    assert result.model[-1].references_.shape[0] == 10
    assert len(result.added) == sum(h["added"] for h in result.history)
    calls = len(log.read_text())
    assert calls == sum(h["checked"] for h in result.history)

    # resuming a finished run recomputes nothing; one more round computes only its own
    with threadpool_limits(1):
        again = montecarlo_active_learning(
            model, train, energies, functools.partial(_gfn2, log), start,
            checkpoint=tmp_path / "al", **kwargs)
    assert again.history == result.history and len(log.read_text()) == calls
    state = json.loads((tmp_path / "al" / "state.json").read_text())
    assert state["next_round"] == len(result.history)
    with pytest.raises(ValueError, match="settings"):
        montecarlo_active_learning(model, train, energies, _gfn2, start,
                                   checkpoint=tmp_path / "al", **{**kwargs, "n_steps": 30})


def test_criteria_flag_what_they_say(rings):
    train, start = rings
    model = default_energy_model(references=10).fit(train, [f.get_potential_energy()
                                                            for f in train])
    far = start.copy()
    far.positions *= 1.3  # a stretched ring: far from every reference
    assert FarFromReferences()(model, [train[0], far]).tolist() == [False, True]
    broken = start.copy()
    c = int(np.flatnonzero(broken.numbers == 6)[0])
    s = int(np.argmin(np.where(broken.numbers == 16, broken.get_distances(c, range(len(broken))),
                               np.inf)))
    broken.positions[c] += 2.0 * (broken.positions[c] - broken.positions[s])
    assert BrokenGeometry()(model, [start, broken]).tolist() == [False, True]


class _Interrupt(Exception):
    pass


def _gfn2_until(log, stop_at):
    calls = len(log.read_text()) if log.exists() else 0
    if calls + 1 == stop_at:
        with open(log, "a") as fh:
            fh.write("!")  # counted once: the next run gets past it
        raise _Interrupt
    return _gfn2(log)


def test_an_interrupted_round_resumes_without_repeating_references(rings, tmp_path):
    from threadpoolctl import threadpool_limits

    train, start = rings
    energies = [f.get_potential_energy() for f in train]
    model = default_energy_model(references=10)
    kwargs = dict(rounds=1, n_steps=20, equilibration=10, sample_every=5, max_added=2,
                  n_check=4, n_jobs=1, random_state=0, criterion=FarFromReferences(0.2))
    log = tmp_path / "calls.txt"
    with threadpool_limits(1):
        with pytest.raises(_Interrupt):
            montecarlo_active_learning(model, train, energies,
                                       functools.partial(_gfn2_until, log, 3), start,
                                       checkpoint=tmp_path / "al", **kwargs)
        saved = json.loads((tmp_path / "al" / "round0_references.json").read_text())
        assert len(saved) == 2  # the two finished before the interruption
        resumed = montecarlo_active_learning(model, train, energies,
                                             functools.partial(_gfn2_until, log, 3), start,
                                             checkpoint=tmp_path / "al", **kwargs)
        whole = montecarlo_active_learning(model, train, energies, _gfn2, start, **kwargs)
    assert log.read_text().count("x") == resumed.history[0]["checked"] == 4
    for key in ("frames", "flagged", "added", "checked", "failed"):
        assert resumed.history[0][key] == whole.history[0][key]
    assert resumed.history[0]["energy_rmse"] == pytest.approx(whole.history[0]["energy_rmse"],
                                                              rel=1e-6)
