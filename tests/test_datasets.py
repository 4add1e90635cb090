"""The bundled xTB data sets: contents, metadata, and forces a fresh xTB run reproduces."""

import numpy as np
import pytest

pytest.importorskip("ase")

from mlmlearn.atoms import AtomicEnvironments  # noqa: E402
from mlmlearn.datasets import load_alkanes, load_au25, load_gold_thiolate_rings  # noqa: E402


@pytest.fixture(scope="module")
def alkanes():
    return load_alkanes()


@pytest.fixture(scope="module")
def rings():
    return load_gold_thiolate_rings()


@pytest.fixture(scope="module")
def au25():
    return load_au25()


def _fresh_single_point(frame, method, charge=0):
    tblite = pytest.importorskip("tblite.ase")
    atoms = frame.copy()
    atoms.calc = tblite.TBLite(method=method, charge=charge, verbosity=0)
    return atoms.get_potential_energy(), atoms.get_forces()


def _check_frame(data, k, method, charge=0, atol=1e-4):
    frame = data.frames[k]
    energy, forces = _fresh_single_point(frame, method, charge)
    np.testing.assert_allclose(forces, frame.get_forces(), atol=atol)
    assert energy == pytest.approx(data.energy[k], abs=1e-5)


def test_alkanes_follow_paper_iii_protocol(alkanes):
    meta = alkanes.metadata
    assert meta["settings"]["method"] == "GFN2-xTB"
    assert meta["settings"]["temperature_K"] == 750.0 and meta["settings"]["timestep_fs"] == 1.5
    formulas = {f.get_chemical_formula() for f in alkanes.frames}
    assert formulas == {f"C{n}H{2 * n + 2}" for n in range(2, 8)}
    assert len(alkanes.frames) == 6 * 3 * 1001
    test_runs = {alkanes.run_names[r] for r in np.unique(alkanes.run[alkanes.split == "test"])}
    assert test_runs == {f"C{n}H{2 * n + 2}_run3" for n in range(2, 8)}
    assert np.all(np.isfinite(alkanes.energy))
    _check_frame(alkanes, 12345, "GFN2-xTB")


def test_rings_cover_four_to_eight_gold_atoms_at_three_temperatures(rings):
    formulas = {f.get_chemical_formula() for f in rings.frames}
    assert formulas == {f"C{n}H{3 * n}Au{n}S{n}" for n in range(4, 9)}
    assert set(np.unique(rings.temperature_K)) == {300.0, 600.0, 900.0}
    assert rings.metadata["settings"]["method"] == "GFN2-xTB"
    k = int(np.flatnonzero(rings.temperature_K == 900.0)[-1])
    _check_frame(rings, k, "GFN2-xTB")


def test_au25_is_a_heating_run_with_enough_environments(au25):
    frames = au25.frames
    assert {f.get_chemical_formula() for f in frames} == {"C18H54Au25S18"}
    assert len(frames) * 115 >= 20_000
    assert np.all(np.diff(au25.step) > 0)
    assert au25.temperature_K[0] == 300.0 and au25.temperature_K[-1] == 1500.0
    env = AtomicEnvironments(frames)
    types, counts = np.unique(env.atom_types, return_counts=True)
    by_type = dict(zip(types.tolist(), counts.tolist(), strict=True))
    assert by_type["Au_core"] + by_type["Au_unit"] + by_type.get("Au_half_unit", 0) == 25 * len(
        frames
    )
    assert by_type["Au_unit"] > 0.3 * 12 * len(frames)


def test_au25_forces_match_a_fresh_gfn1_single_point(au25):
    # The MD's warm-started SCC differs from a cold start by up to 3.6e-4 eV/Å on the
    # hot, deformed frames (a cold start at default accuracy is within 7e-5 of a tight
    # one): this data set meets 5e-4, not the 1e-4 of the other two (data README).
    _check_frame(au25, len(au25.frames) - 1, "GFN1-xTB", charge=-1, atol=5e-4)


def test_recipe_pack_and_load_round_trip(tmp_path):
    pytest.importorskip("tblite.ase")
    from mlmlearn.datasets._bundled import load_archive, pack
    from mlmlearn.datasets._md import read_frames
    from mlmlearn.datasets._recipes import ALKANES, generate_alkanes

    settings = dict(ALKANES, n_carbons=(2,), runs=(1, 3), n_steps=3)
    paths = generate_alkanes(tmp_path / "md", settings=settings)
    runs = [{"name": "C2H6_run1", "split": "train"}, {"name": "C2H6_run3", "split": "test"}]
    archive = pack(paths, tmp_path / "small.npz", metadata={"runs": runs, "settings": settings})
    data = load_archive(archive)
    written = read_frames(paths[1])
    assert len(data.frames) == 8 and list(data.split) == ["train"] * 4 + ["test"] * 4
    np.testing.assert_array_equal(data.frames[-1].positions, written[-1].positions)
    np.testing.assert_allclose(data.frames[-1].get_forces(), written[-1].get_forces(), rtol=1e-6)
    assert data.frames[-1].info == {"run": "C2H6_run3", "step": 3, "temperature_K": 750.0}
    with pytest.raises(ValueError, match="one entry per trajectory"):
        pack(paths, tmp_path / "bad.npz", metadata={"runs": runs[:1]})
