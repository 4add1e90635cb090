"""The bundled active-learning frames of the rings, their recipe and packing, and training_mask."""

import json

import numpy as np
import pytest

pytest.importorskip("ase")

from mlmlearn.datasets import _recipes, load_gold_thiolate_rings, training_mask  # noqa: E402
from mlmlearn.datasets._bundled import load_archive  # noqa: E402

SETTINGS = _recipes.RING_ACTIVE


@pytest.fixture(scope="module")
def active():
    return load_gold_thiolate_rings(kind="active")


@pytest.fixture(scope="module")
def rings():
    return load_gold_thiolate_rings(kind="all")


def test_active_frames_come_from_the_recipes_starts_never_the_held_out_run(active):
    assert len(active.frames) > 0 and active.n_broken == 0
    assert set(active.kind) == {"active"} and set(active.status) == {"active"}
    assert set(active.source_run) <= set(SETTINGS["start_runs"])
    assert SETTINGS["held_out_run"] not in set(active.source_run)
    assert np.all(active.source_step == SETTINGS["start_step"])
    assert np.all(active.step % SETTINGS["check_every"] == 0)
    assert np.all((active.step > 0) & (active.step <= SETTINGS["n_steps"]))
    for frame, run in zip(active.frames, active.source_run, strict=True):
        assert frame.info["kind"] == "active" and frame.info["source_run"] == run
        assert len(frame) == 6 * int(run[2])  # AuN(SCH3)N: its start's ring size


def test_active_metadata_records_the_recipe_and_every_round(active):
    meta = active.metadata
    assert meta["settings"] == json.loads(json.dumps(SETTINGS))
    assert sum(h["added"] for h in meta["history"]) == len(active.frames)
    for phase in {h["phase"] for h in meta["history"]}:
        rounds = [h["round"] for h in meta["history"] if h["phase"] == phase]
        assert rounds == list(range(len(rounds)))
    assert set(meta["converged"]) <= {p["name"] for p in SETTINGS["phases"]}
    # relaxed minima are 0 K structures, MD frames at the recipe's temperature
    relaxed = np.array([r["relaxed"] for r in meta["runs"]])
    np.testing.assert_array_equal(active.temperature_K, np.where(relaxed, 0.0,
                                                                  SETTINGS["temperature_K"]))
    # every frame was added because the potential was off by more than the threshold
    errors = [r["force_rmse_before"] for r in meta["runs"]]
    assert min(errors) > SETTINGS["force_threshold_eV_per_A"]
    assert all(h["force_rmse_max"] >= h["force_rmse_median"] for h in meta["history"])


def test_an_active_frame_matches_a_fresh_gfn2_single_point(active):
    tblite = pytest.importorskip("tblite.ase")
    atoms = active.frames[-1].copy()
    atoms.calc = tblite.TBLite(method="GFN2-xTB", charge=0, verbosity=0)
    np.testing.assert_allclose(atoms.get_forces(), active.frames[-1].get_forces(), atol=1e-4)
    assert atoms.get_potential_energy() == pytest.approx(active.energy[-1], abs=1e-5)


def _mask_oracle(data, exclude, stride):
    """training_mask frame by frame."""
    keep, seen = [], {}
    n = len(data.kind)
    for i in range(n):
        kind = data.kind[i]
        position = seen.get(kind, 0)
        seen[kind] = position + 1
        path_end = kind == "relaxation" and (i == n - 1 or data.run[i + 1] != data.run[i])
        usable = data.status[i] in ("md", "converged", "active")
        wanted = position % stride == 0 or path_end or kind == "active"
        keep.append(bool(not exclude[i] and usable and wanted))
    return np.array(keep)


@pytest.mark.parametrize("stride", [1, 3, 8])
def test_training_mask_matches_a_frame_by_frame_oracle(rings, stride):
    held = rings.source_run == SETTINGS["held_out_run"]
    mask = training_mask(rings, held, stride=stride)
    np.testing.assert_array_equal(mask, _mask_oracle(rings, held, stride))
    assert not np.any(mask & held)
    assert set(rings.status[mask]) <= {"md", "converged", "active"}
    # every active frame and every converged path's end is kept, whatever the stride
    assert np.all(mask[(rings.kind == "active") & ~held])
    ends = np.flatnonzero(np.r_[rings.run[1:] != rings.run[:-1], True]
                          & (rings.kind == "relaxation") & (rings.status == "converged") & ~held)
    assert len(ends) > 0 and np.all(mask[ends])


def test_training_mask_refuses_a_bad_stride_or_exclude(rings):
    with pytest.raises(ValueError, match="stride=0"):
        training_mask(rings, stride=0)
    with pytest.raises(ValueError, match="exclude has shape"):
        training_mask(rings, np.zeros(3, dtype=bool))


def test_the_recipes_setup_trains_without_the_held_out_run_and_its_relaxations():
    potential, train, starts, reference = _recipes.ring_active_learning_setup()
    assert not any(f.info["source_run"] == SETTINGS["held_out_run"] for f in train)
    assert {f.info["kind"] for f in train} == {"md", "relaxation"}
    assert [(run, step) for _, run, step in starts] == [
        (run, SETTINGS["start_step"]) for run in SETTINGS["start_runs"]]
    assert potential.atomic_energies is not None and callable(reference)


def test_packing_the_phases_round_trips_their_frames(active, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from mlmlearn.datasets.generate import pack_active

    frames = []
    for k, (r, s, relaxed) in enumerate([(0, 1, False), (1, 4, True)]):
        frame = active.frames[k].copy()
        frame.calc = SinglePointCalculator(frame, energy=active.energy[k],
                                           forces=active.frames[k].get_forces())
        frame.info = {"round": r, "start": s, "step": 150 + 50 * k, "force_rmse": 0.3 + k,
                      "relaxed": relaxed}
        frames.append(frame)
    md, relax = (p["name"] for p in SETTINGS["phases"])
    (tmp_path / md).mkdir()
    (tmp_path / relax).mkdir()
    write(tmp_path / md / "added.traj", frames[:1], format="traj")
    write(tmp_path / relax / "added.traj", frames[1:], format="traj")
    history = [{"round": 0, "checked": 3, "added": 1, "failed": 0, "force_rmse": [0.1, 1.3],
                "steps": [2000] * 6}]
    (tmp_path / md / "state.json").write_text(json.dumps({"settings": {}, "history": history,
                                                          "next_round": 1}))
    history = [{**history[0], "relax_force_rmse": [0.05, 1.3], "relax_added": 1}]
    (tmp_path / relax / "state.json").write_text(json.dumps({"settings": {}, "history": history,
                                                             "next_round": 1}))
    names = pack_active(tmp_path, tmp_path / "out.npz", elapsed=1.0)
    back = load_archive(tmp_path / "out.npz")
    assert back.run_names == names == [
        f"{md}_round00_{SETTINGS['start_runs'][1]}_step0150",
        f"{relax}_round01_{SETTINGS['start_runs'][4]}_step0200_relaxed"]
    np.testing.assert_array_equal(back.energy, active.energy[:2])
    np.testing.assert_array_equal(back.temperature_K, [SETTINGS["temperature_K"], 0.0])
    for a, b in zip(back.frames, frames, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-6)  # stored float32
    assert [r["force_rmse_before"] for r in back.metadata["runs"]] == [0.3, 1.3]
    assert [r["phase"] for r in back.metadata["runs"]] == [md, relax]
    assert back.metadata["history"][0] == {"phase": md, "round": 0, "checked": 3, "added": 1,
                                           "failed": 0, "force_rmse_median": 0.7,
                                           "force_rmse_max": 1.3, "steps": [2000] * 6}
    assert back.metadata["history"][1]["relax_force_rmse_max"] == 1.3
    assert back.metadata["converged"] == {md: False, relax: False}

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no active-learning phase"):
        pack_active(tmp_path / "empty", tmp_path / "x.npz", elapsed=0.0)
