"""The bundled xTB data sets: contents, metadata, and forces a fresh xTB run reproduces."""

import re

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


@pytest.fixture(scope="module")
def au25_all():
    return load_au25(runs="all")


AU25_HEATING = "Au25(SCH3)18_heating"
AU25_FIXED = ("Au25(SCH3)18_300K", "Au25(SCH3)18_500K")


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


@pytest.mark.slow  # one GFN1-xTB single point of Au25(SCH3)18: about 15 s
def test_au25_forces_match_a_fresh_gfn1_single_point(au25):
    # The MD's warm-started SCC differs from a cold start by up to 3.6e-4 eV/Å on the
    # hot, deformed frames (a cold start at default accuracy is within 7e-5 of a tight
    # one): this data set meets 5e-4, not the 1e-4 of the other two (data README).
    # No charge is passed: the calculator reads the anion's -1 from the frame (item 9).
    _check_frame(au25, len(au25.frames) - 1, "GFN1-xTB", charge=None, atol=5e-4)


# -- Au25: independent fixed-temperature runs beside the heating run (issue 13, section 4) -----


def test_au25_runs_counts_names_charges_and_metadata(au25, au25_all):
    assert au25_all.run_names == [AU25_HEATING, *AU25_FIXED]
    assert au25.run_names == [AU25_HEATING] and np.all(au25.run == 0)
    names = np.array(au25_all.run_names)[au25_all.run]
    counts = {name: int((names == name).sum()) for name in au25_all.run_names}
    assert counts == {AU25_HEATING: 600, AU25_FIXED[0]: 351, AU25_FIXED[1]: 351}
    assert au25_all.n_broken == 1 and np.all(au25_all.charge == -1)
    assert {f.get_chemical_formula() for f in au25_all.frames} == {"C18H54Au25S18"}
    assert [f.info["run"] for f in au25_all.frames] == names.tolist()
    settings = au25_all.metadata["settings"]["fixed_temperature"]
    runs = {run["name"]: run for run in au25_all.metadata["runs"]}
    for name, temperature, seed in zip(AU25_FIXED, (300.0, 500.0), (25300, 25500), strict=True):
        mine = names == name
        np.testing.assert_array_equal(au25_all.step[mine], np.arange(0, 701, 2))
        assert np.all(au25_all.temperature_K[mine] == temperature)
        assert np.all(au25_all.split[mine] == "test")
        assert runs[name]["seed"] == seed and runs[name]["temperature_K"] == temperature
        assert settings["seeds"][settings["temperatures_K"].index(temperature)] == seed
    assert np.all(au25_all.split[names == AU25_HEATING] == "train")
    assert runs[AU25_HEATING]["seed"] == 25 and settings["n_steps"] == 700
    assert settings["timestep_fs"] == 1.5 and settings["friction_per_fs"] == 0.01
    assert settings["write_interval"] == 2 and settings["method"] == "GFN1-xTB"
    # the heating run is what load_au25() always returned, in the same archive positions
    np.testing.assert_array_equal(au25_all.index[names == AU25_HEATING], au25.index)
    np.testing.assert_array_equal(au25_all.energy[names == AU25_HEATING], au25.energy)


def test_au25_shortcuts_select_runs_of_the_whole_archive(au25_all):
    fixed = load_au25(runs="fixed_temperature")
    assert fixed.run_names == list(AU25_FIXED) and fixed.n_broken == 0
    mine = au25_all.run > 0
    np.testing.assert_array_equal(fixed.index, au25_all.index[mine])
    np.testing.assert_array_equal(fixed.run, au25_all.run[mine] - 1)  # renumbered from 0
    np.testing.assert_array_equal(fixed.frames[-1].positions, au25_all.frames[-1].positions)
    one = load_au25(runs=[AU25_FIXED[1]])
    assert one.run_names == [AU25_FIXED[1]] and np.all(one.run == 0) and len(one.frames) == 351
    assert load_au25(runs=AU25_FIXED[0]).run_names == [AU25_FIXED[0]]
    for bad in ("heated", "Au25(SCH3)18_400K"):
        with pytest.raises(ValueError, match=f"runs='{re.escape(bad)}' is not one of"):
            load_au25(runs=bad)
    with pytest.raises(ValueError, match=r"\['Au25\(SCH3\)18_400K'\] not among"):
        load_au25(runs=[AU25_FIXED[0], "Au25(SCH3)18_400K"])


def test_au25_stored_integrity_and_force_statistics_match_the_frames(au25_all):
    full = load_au25(runs="all", include_broken=True)
    names = np.array(full.run_names)[full.run]
    for run in full.metadata["runs"]:
        mine = names == run["name"]
        assert run["n_frames"] == mine.sum()
        assert run["n_broken"] == (~full.intact[mine]).sum()
        assert run["broken_steps"] == full.step[mine & ~full.intact].tolist()
        forces = np.concatenate(
            [full.frames[k].get_forces() for k in np.flatnonzero(mine & full.intact)]
        )
        norm = np.linalg.norm(forces, axis=1)
        stats = run["force_magnitude_eV_per_A"]
        # stored rounded to 4 decimals: half a unit of the last place
        assert stats["mean"] == pytest.approx(norm.mean(), abs=5e-5)
        assert stats["max"] == pytest.approx(norm.max(), abs=5e-5)
        assert stats["p99_9"] == pytest.approx(np.quantile(norm, 0.999), abs=5e-5)
        assert stats["n_above_10"] == (norm > 10).sum()
    assert full.metadata["integrity_rule"]["bond_factor"] == 1.5


def test_au25_runs_are_independent(au25_all):
    """One start structure, other seeds: the first steps' velocities are uncorrelated.

    The archive keeps no momenta, but the first kept step (2 steps, t = 3 fs) moves
    each atom by v0 t + F0 t^2 / 2m + O(t^3); with the common force term removed and
    each coordinate weighted by sqrt(m), what is left tracks sqrt(m) v0, whose
    components are independent N(0, kT) for a Maxwell-Boltzmann start (measured on the
    trajectories: correlation 0.97 with the true momenta). Two runs drawn with the same
    seed would correlate near 1; independent ones have a sample correlation of
    standard deviation 1/sqrt(n) over n = 345 coordinates, bounded here at 4/sqrt(n)
    (false alarm about 6e-5 per pair).
    """
    from ase import units

    first, second = [], []
    for r in range(3):
        k = np.flatnonzero(au25_all.run == r)[:2]
        assert au25_all.step[k].tolist() == [0, 2]
        first.append(au25_all.frames[k[0]])
        second.append(au25_all.frames[k[1]])
    for frame in first[1:]:  # the same optimized start, step 0 computed identically
        np.testing.assert_array_equal(frame.positions, first[0].positions)
        np.testing.assert_array_equal(frame.get_forces(), first[0].get_forces())
    seeds = [run["seed"] for run in au25_all.metadata["runs"]]
    assert len(set(seeds)) == 3
    t = 3.0 * units.fs
    mass = first[0].get_masses()[:, None]
    drift = first[0].get_forces() / mass * t**2 / 2
    kicks = [
        np.sqrt(mass) * (b.positions - a.positions - drift)
        for a, b in zip(first, second, strict=True)
    ]
    n = kicks[0].size
    for i in range(3):
        for j in range(i + 1, 3):
            r = np.corrcoef(kicks[i].ravel(), kicks[j].ravel())[0, 1]
            assert abs(r) < 4 / np.sqrt(n), (au25_all.run_names[i], au25_all.run_names[j], r)
            assert not np.allclose(second[i].positions, second[j].positions, atol=1e-3)


def test_au25_split_by_run_never_mixes_runs(au25_all):
    """GroupKFold over ``run``: each fold tests one whole run, trained on the others only."""
    from sklearn.dummy import DummyRegressor
    from sklearn.model_selection import GroupKFold, cross_val_predict

    env = AtomicEnvironments(au25_all.frames, atom_types=["S"], groups=au25_all.run)
    held_out = []
    for train, test in GroupKFold(n_splits=3).split(env, groups=env.groups):
        train_runs, test_runs = set(env.groups[train]), set(env.groups[test])
        assert not train_runs & test_runs and len(test_runs) == 1
        assert not set(env.structure_index[train]) & set(env.structure_index[test])
        held_out.append(test_runs.pop())
        assert len(test) == 18 * (au25_all.run == held_out[-1]).sum()  # every S of the run
    assert sorted(held_out) == [0, 1, 2]
    # a model fitted per fold predicts each run from the other two only: the mean norm
    norms = np.linalg.norm(env.forces, axis=1)
    predicted = cross_val_predict(
        DummyRegressor(), env, norms, groups=env.groups, cv=GroupKFold(n_splits=3)
    )
    for r in range(3):
        np.testing.assert_allclose(
            predicted[env.groups == r], norms[env.groups != r].mean(), rtol=1e-12
        )


@pytest.mark.slow  # two GFN1-xTB single points of Au25(SCH3)18: about 20 s
def test_au25_fixed_temperature_forces_match_a_fresh_gfn1_single_point(au25_all):
    # As for the heating run (data README): the stored forces come from the MD's
    # warm-started SCC, the fresh ones from a cold start, both at default accuracy, and
    # each lies within 2.2e-4 eV/Å of a tight (accuracy=0.01) solution at these frames
    # (stored 7e-5 and 2.1e-4, fresh 1.3e-4 and 6e-5): their difference is SCC
    # convergence, measured 2.0e-4 (300 K, step 350) and 2.5e-4 eV/Å (500 K, step 700),
    # within the 5e-4 the heating run meets. The charge comes from the frame.
    names = np.array(au25_all.run_names)[au25_all.run]
    for name, step in ((AU25_FIXED[0], 350), (AU25_FIXED[1], 700)):
        k = int(np.flatnonzero((names == name) & (au25_all.step == step))[0])
        _check_frame(au25_all, k, "GFN1-xTB", charge=None, atol=5e-4)


def test_au25_fixed_temperature_recipe_is_resumable_and_seeded(tmp_path, monkeypatch):
    """The recipe on a small anion (CH3S-, GFN1-xTB, milliseconds a step), then the CLI."""
    pytest.importorskip("tblite.ase")
    from ase.build import molecule
    from ase.io import write

    from mlmlearn.datasets import _recipes, generate, read_frames
    from mlmlearn.datasets._bundled import load_archive

    start = molecule("CH3SH")
    del start[[a.index for a in start if a.symbol == "H" and start.get_distance(a.index, 1) < 1.5]]
    assert start.get_chemical_formula() == "CH3S"
    path = tmp_path / "start.xyz"
    write(path, start, format="xyz", comment="methanethiolate start structure")
    settings = dict(_recipes.AU25_FIXED_TEMPERATURE, n_steps=6)
    paths = _recipes.generate_au25_fixed_temperature(path, tmp_path / "md", settings=settings)
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"{n}.extxyz" for n in AU25_FIXED]
    runs = [read_frames(p) for p in paths]
    for frames, seed, temperature in zip(runs, (25300, 25500), (300.0, 500.0), strict=True):
        assert [f.info["step"] for f in frames] == [0, 2, 4, 6]
        info = frames[-1].info
        assert info["md_seed"] == seed and info["temperature_K"] == temperature
        assert info["charge"] == -1 and "methanethiolate" not in info  # no stray comment keys
    assert not np.allclose(runs[0][1].positions, runs[1][1].positions)
    # interrupted after two frames, rerun: the same trajectory
    text = open(paths[1]).read().splitlines(keepends=True)
    with open(paths[1], "w") as fd:
        fd.writelines(text[: 2 * (len(start) + 2)])
    _recipes.generate_au25_fixed_temperature(
        path, tmp_path / "md", settings=settings, temperatures=[500]
    )
    # Same noise (it depends on seed and step only), but the resumed SCC starts cold and
    # the extxyz text rounds positions to 1e-8 Å: forces that differ by the SCC's
    # convergence (5e-4 eV/Å at most, as above) move an H (the lightest atom) apart by at
    # most dF t^2 / 2m over the t = 6 fs (4 steps) run after the resume point.
    from ase import units

    t = 4 * settings["timestep_fs"] * units.fs
    np.testing.assert_allclose(
        read_frames(paths[1])[-1].positions,
        runs[1][-1].positions,
        rtol=0,
        atol=5e-4 * t**2 / (2 * 1.008) + 1e-8,
    )
    with pytest.raises(ValueError, match=r"temperatures=\[400\]: \[400.0\] not among"):
        _recipes.generate_au25_fixed_temperature(
            path, tmp_path, settings=settings, temperatures=[400]
        )
    with pytest.raises(ValueError, match="2 seeds for 1 temperatures"):
        _recipes.generate_au25_fixed_temperature(
            path, tmp_path, settings=dict(settings, temperatures_K=(300.0,))
        )

    # the CLI: one fixed-temperature run, packed with its recipe, seed and split
    monkeypatch.setitem(_recipes.AU25_FIXED_TEMPERATURE, "n_steps", 2)
    output = tmp_path / "au25_500K.npz"
    generate.main(
        [
            "au25",
            "--start",
            str(path),
            "--workdir",
            str(tmp_path / "cli"),
            "--output",
            str(output),
            "--temperatures",
            "500",
            "--verbose",
            "0",
        ]
    )
    data = load_archive(output)
    assert data.run_names == [AU25_FIXED[1]] and len(data.frames) == 2
    (run,) = data.metadata["runs"]
    assert (run["recipe"], run["seed"], run["split"], run["temperature_K"]) == (
        "fixed_temperature",
        25500,
        "test",
        500.0,
    )
    assert run["n_broken"] == 0 and data.metadata["settings"]["fixed_temperature"]["n_steps"] == 2
    with pytest.raises(SystemExit):
        generate.main(
            [
                "au25",
                "--start",
                str(path),
                "--workdir",
                str(tmp_path / "cli"),
                "--output",
                str(output),
                "--temperatures",
                "400",
            ]
        )
    with pytest.raises(SystemExit):
        generate.main(
            ["rings", "--workdir", str(tmp_path), "--output", str(output), "--temperatures", "300"]
        )


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
    assert data.frames[-1].info == {
        "run": "C2H6_run3",
        "step": 3,
        "temperature_K": 750.0,
        "charge": 0,
    }
    assert data.n_broken == 0 and list(data.index) == list(range(8))
    with pytest.raises(ValueError, match="one entry per trajectory"):
        pack(paths, tmp_path / "bad.npz", metadata={"runs": runs[:1]})


# -- frames carry their charge (issue 12, item 9) ---------------------------------------------


@pytest.mark.parametrize("name", ["alkanes", "rings", "au25", "au25_all"])
def test_frames_carry_the_total_charge_of_their_calculation(request, name):
    data = request.getfixturevalue(name)
    settings = data.metadata["settings"]
    recipes = settings.values() if name.startswith("au25") else [settings]
    charges = {recipe.get("charge", 0) for recipe in recipes}
    assert len(charges) == 1
    charge = charges.pop()
    assert charge == {"alkanes": 0, "rings": 0, "au25": -1, "au25_all": -1}[name]
    np.testing.assert_array_equal(data.charge, charge)
    for frame in data.frames:
        assert frame.info["charge"] == charge
        # what tblite's (and xtb's) ASE calculator reads when given no charge
        assert frame.get_initial_charges().sum() == charge
    # the charges were set before the single-point results: ASE still counts them as current
    frame = data.frames[-1]
    assert frame.calc.check_state(frame) == []
    np.testing.assert_array_equal(
        AtomicEnvironments(data.frames[::97]).forces[:3], data.frames[0].get_forces()[:3]
    )


# -- broken bonds and detached fragments (issue 12, item 10) ----------------------------------

from ase import Atoms  # noqa: E402
from ase.build import molecule  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mlmlearn.datasets import frame_integrity, gold_thiolate_ring, linear_alkane  # noqa: E402


def _pull(atoms, i, j, distance):
    """Move atom ``i`` along the ``j``–``i`` bond to ``distance`` Å from ``j``."""
    atoms = atoms.copy()
    bond = atoms.positions[i] - atoms.positions[j]
    atoms.positions[i] = atoms.positions[j] + distance * bond / np.linalg.norm(bond)
    return atoms


def test_frame_integrity_rules_on_built_molecules():
    propane = linear_alkane(3)
    h = int(np.flatnonzero(propane.numbers == 1)[0])
    c = int(np.argmin(np.where(propane.numbers == 6, propane.get_distances(h, range(11)), 99)))
    limit = 1.5 * (0.31 + 0.76)  # covalent radii of H and C (Cordero et al. 2008)
    ring = gold_thiolate_ring(4)
    carbon = int(np.flatnonzero(ring.numbers == 6)[0])
    sulfur = int(np.flatnonzero(ring.numbers == 16)[0])
    methyl = [carbon] + [
        int(k)
        for k in np.flatnonzero(ring.get_distances(carbon, range(len(ring))) < 1.2)
        if ring.numbers[k] == 1
    ]
    off = ring.copy()
    shift = off.positions[carbon] - off.positions[sulfur]
    off.positions[methyl] += 1.2 * shift / np.linalg.norm(shift)  # C–S 1.82 -> 3.02 Å
    two = molecule("CH4") + Atoms(molecule("CH4").numbers, molecule("CH4").positions + 9.0)
    frames = [
        propane,
        _pull(propane, h, c, limit - 1e-6),
        _pull(propane, h, c, limit + 1e-6),
        ring,
        off,
        two,
    ]
    intact, problems = frame_integrity(frames)
    assert intact.tolist() == [True, True, False, True, False, False]
    assert problems[2].startswith(f"H {h} is 1.61 Å from the nearest C (bond <= 1.60 Å)")
    assert problems[4].startswith(f"C {carbon} is 3.0")
    assert "from the nearest S" in problems[4]
    assert problems[5] == "2 fragments: CH4, CH4"
    assert problems[0] == problems[1] == problems[3] == ""
    # an H moved from its C onto the S: still connected, but no longer on a carbon
    thiol = ring.copy()
    axis = ring.positions[sulfur] - ring.positions[carbon]
    thiol.positions[methyl[1]] = ring.positions[sulfur] + 1.35 * axis / np.linalg.norm(axis)
    intact, problems = frame_integrity([thiol])
    assert not intact[0] and problems[0].startswith(f"H {methyl[1]} is 3.1")
    assert frame_integrity([thiol], required_partners={})[0].tolist() == [True]
    periodic = propane.copy()
    periodic.pbc, periodic.cell = True, [20.0, 20.0, 20.0]
    with pytest.raises(ValueError, match="frame 1 is periodic"):
        frame_integrity([propane, periodic])
    with pytest.raises(ValueError, match="bond_factor=0"):
        frame_integrity([propane], bond_factor=0)


def test_frame_integrity_edge_cases():
    # empty and one-atom frames are whole; partner rules apply only where partners exist
    frames = iter([Atoms(), Atoms("H"), molecule("H2O"), Atoms("H2", [[0, 0, 0], [0, 0, 5]])])
    intact, problems = frame_integrity(frames)
    assert intact.tolist() == [True, True, True, False]
    assert problems[3] == "2 fragments: H, H"


def _integrity_oracle(atoms, factor=1.5):
    """One frame at a time, with explicit loops and scipy's connected components."""
    from ase.data import covalent_radii
    from scipy.sparse.csgraph import connected_components

    d = atoms.get_all_distances()
    r = covalent_radii[atoms.numbers]
    bonded = d <= factor * (r[:, None] + r[None, :])
    np.fill_diagonal(bonded, False)
    symbols = atoms.get_chemical_symbols()
    for i, s in enumerate(symbols):
        partners = {"H": "C", "C": "S"}.get(s)
        if partners in symbols and not any(
            bonded[i, j] for j in range(len(atoms)) if symbols[j] == partners
        ):
            return False
    return connected_components(bonded, directed=False)[0] == 1


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(
        st.sampled_from(["C2H6", "CH3SH", "CH4", "CH3CH2OH", "H2O"]), min_size=1, max_size=6
    ),
    scale=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**16),
)
def test_frame_integrity_matches_a_one_frame_at_a_time_oracle(names, scale, seed):
    """Batches of frames of mixed composition, shaken until some bonds break."""
    rng = np.random.default_rng(seed)
    frames = []
    for name in names:
        for _ in range(rng.integers(1, 4)):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
            frames.append(atoms)
    intact, problems = frame_integrity(frames)
    assert intact.tolist() == [_integrity_oracle(a) for a in frames]
    assert [p == "" for p in problems] == intact.tolist()


@pytest.mark.parametrize(
    "name, broken",
    [
        ("alkanes", {}),
        ("rings", {"Au5(SCH3)5_900K": [316, *range(324, 335, 2), *range(340, 401, 2)]}),
        ("au25", {"Au25(SCH3)18_heating": [838]}),
        ("au25_all", {"Au25(SCH3)18_heating": [838]}),  # the fixed-temperature runs are whole
    ],
)
def test_broken_frames_are_flagged_and_left_out_by_default(request, name, broken):
    data = request.getfixturevalue(name)
    loader = {
        "alkanes": load_alkanes,
        "rings": load_gold_thiolate_rings,
        "au25": load_au25,
        "au25_all": lambda **kw: load_au25(runs="all", **kw),
    }
    full = loader[name](include_broken=True)
    expected = {(run, step) for run, steps in broken.items() for step in steps}
    found = {
        (f.info["run"], f.info["step"])
        for f, ok in zip(full.frames, full.intact, strict=True)
        if not ok
    }
    assert found == expected and full.n_broken == data.n_broken == len(expected)
    assert all(full.problems[k] for k in np.flatnonzero(~full.intact))
    # the default selection: every intact frame, nothing else, with their archive positions
    assert data.intact.all() and not any(data.problems)
    assert len(data.frames) == len(full.frames) - len(expected)
    np.testing.assert_array_equal(data.index, np.flatnonzero(full.intact))
    np.testing.assert_array_equal(data.step, full.step[data.index])
    np.testing.assert_array_equal(data.frames[-1].positions, full.frames[data.index[-1]].positions)


def test_a_hydrogen_that_left_its_methyl_is_refused_by_the_gold_alignment(rings):
    """Why the default selection leaves broken frames out: the hydrogen rule has no C."""
    from mlmlearn.oamlm import GoldThiolateAlignment, MissingNeighborsError

    full = load_gold_thiolate_rings(include_broken=True)
    last = AtomicEnvironments(full.frames[int(np.flatnonzero(~full.intact)[-1])], species="H")
    with pytest.raises(MissingNeighborsError, match="atom 12 .H.*0 C within 4.0"):
        GoldThiolateAlignment().neighborhoods(last)
    # every hot (900 K) default frame has its partners, for every rule
    hot = [f for f, t in zip(rings.frames, rings.temperature_K, strict=True) if t == 900.0]
    for types in (["H"], ["C"], ["S"], ["Au_unit", "Au_half_unit"]):
        env = AtomicEnvironments(hot, atom_types=types)
        assert len(GoldThiolateAlignment().neighborhoods(env)) == len(env)


def _hard_subset(data, step=50, window=2):
    """Every ``step``-th default frame and those next (within ``window``) to a broken one."""
    full = np.arange(data.index[-1] + 1)
    near = np.zeros(len(full), dtype=bool)
    broken = np.setdiff1d(full, data.index)
    for k in broken:
        near[max(k - window, 0) : k + window + 1] = True
    chosen = np.union1d(np.arange(0, len(data.frames), step), np.flatnonzero(near[data.index]))
    return [data.frames[k] for k in chosen]


FAMILIES = {
    "alkanes": [dict(species="C"), dict(species="H")],
    "rings": [dict(atom_types=t) for t in (["H"], ["C"], ["S"], ["Au_unit", "Au_half_unit"])],
    "au25": [
        dict(atom_types=t) for t in (["H"], ["C"], ["S"], ["Au_unit", "Au_half_unit"], ["Au_core"])
    ],
}


@pytest.mark.parametrize("name, step", [("alkanes", 600), ("rings", 100), ("au25", 40)])
def test_every_model_family_fits_each_bundled_sets_default_selection(request, name, step):
    """Every model family on each set's default selection, hardest frames included.

    Per atom type: EMLM, MLM and HuberMLM on SOAP for force norms and the OAMLM
    for force directions; per structure: MBTR → MinMaxScaler → EMLM on total
    energies (the energy model of the user guide). Small K keeps it fast; the
    claim is that the package's own models accept the data it ships.
    """
    pytest.importorskip("numba")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from mlmlearn import EMLM, MLM, OAMLM, HuberMLM
    from mlmlearn.atoms import MBTR, SOAP
    from mlmlearn.oamlm import GoldThiolateAlignment, PermutationAlignment

    data = request.getfixturevalue(name)
    frames = _hard_subset(data, step)
    alignment = PermutationAlignment(3) if name == "alkanes" else GoldThiolateAlignment()

    def soap():
        return make_pipeline(SOAP(r_cut=3.0, n_max=2, l_max=1, sigma=0.5), MinMaxScaler())

    for selection in FAMILIES[name]:
        env = AtomicEnvironments(frames, **selection)
        assert len(env) >= 20, selection
        forces = env.forces
        norms = np.linalg.norm(forces, axis=1)
        for regressor in (EMLM(references=10), MLM(references=10), HuberMLM(references=5)):
            model = make_pipeline(soap(), regressor).fit(env, norms)
            assert np.all(np.isfinite(model.predict(env[:5]))), (selection, regressor)
        oamlm = OAMLM(soap(), alignment=alignment, references=10).fit(env, forces)
        directions = oamlm.predict(env[:5])
        np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-9)

    # the energy family: one MBTR row and one total energy (eV) per structure
    structures = AtomicEnvironments(frames)
    energies = structures.structure_energies
    assert len(energies) == len(frames) >= 15 and np.all(np.isfinite(energies))
    model = make_pipeline(MBTR(n_grid=30), MinMaxScaler(), EMLM(references=10))
    predicted = model.fit(list(structures.structures), energies).predict(frames)
    assert predicted.shape == energies.shape and np.all(np.isfinite(predicted))
    # it fits: on its training structures it beats the constant (the mean, whose RMSE is
    # the standard deviation) by a wide margin (measured 4x on Au25, 8x-13x on the others)
    rmse = np.sqrt(np.mean((predicted - energies) ** 2))
    assert rmse < 0.5 * energies.std(), (rmse, energies.std())
