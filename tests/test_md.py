"""The MD generator with a real xTB calculator, resumability, and frame sampling."""

import numpy as np
import pytest

pytest.importorskip("ase")
tblite = pytest.importorskip("tblite.ase")

from mlmlearn.datasets import (  # noqa: E402
    gold_thiolate_ring,
    linear_alkane,
    logarithmic_indices,
    read_frames,
    run_md,
)


def _xtb():
    return tblite.TBLite(method="GFN2-xTB", verbosity=0)


def test_verlet_with_gfn2_conserves_energy_and_writes_every_frame(tmp_path):
    path = tmp_path / "ethane.extxyz"
    n = run_md(linear_alkane(2), _xtb(), path, n_steps=12, timestep=0.5, temperature=300.0, seed=4)
    frames = read_frames(path)
    assert n == len(frames) == 13
    assert [f.info["step"] for f in frames] == list(range(13))
    total = [f.get_potential_energy() + f.get_kinetic_energy() for f in frames]
    assert np.ptp(total) < 5e-3  # eV; NVE with a 0.5 fs step
    # the stored forces are a fresh single point's (the run warm-starts its SCC, ~5e-5 eV/Å)
    probe = frames[7].copy()
    probe.calc = _xtb()
    np.testing.assert_allclose(probe.get_forces(), frames[7].get_forces(), atol=1e-4)
    # centre-of-mass momentum removed at the start
    np.testing.assert_allclose(frames[0].get_momenta().sum(axis=0), 0.0, atol=1e-7)


def test_interrupted_langevin_run_resumes_where_it_stopped(tmp_path):
    kwargs = dict(
        n_steps=8,
        timestep=1.0,
        temperature=(300.0, 600.0),
        integrator="langevin",
        write_interval=2,
        seed=7,
    )
    whole = tmp_path / "whole.extxyz"
    run_md(linear_alkane(2), _xtb(), whole, **kwargs)
    # cut the file in the middle of the fourth frame, as a killed run would leave it
    text = whole.read_bytes()
    starts = [i for i, line in enumerate(text.split(b"\n")) if line == b"8"]
    lines = text.split(b"\n")
    cut = b"\n".join(lines[: starts[3] + 5]) + b"\n"
    broken = tmp_path / "broken.extxyz"
    broken.write_bytes(cut)
    assert len(read_frames(broken)) == 3
    run_md(linear_alkane(2), _xtb(), broken, **kwargs)
    a, b = read_frames(whole), read_frames(broken)
    assert [f.info["step"] for f in b] == [0, 2, 4, 6, 8]
    assert b[-1].info["temperature_K"] == pytest.approx(600.0)
    # same noise per step; only the 1e-8 Å text precision of the restart differs
    np.testing.assert_allclose(b[-1].positions, a[-1].positions, atol=1e-5)


def test_resuming_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "run.extxyz"
    run_md(linear_alkane(1), _xtb(), path, n_steps=1, seed=1)
    with pytest.raises(ValueError, match="md_seed=1, not 2"):
        run_md(linear_alkane(1), _xtb(), path, n_steps=1, seed=2)
    with pytest.raises(ValueError, match="different structure"):
        run_md(linear_alkane(2), _xtb(), path, n_steps=1, seed=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(integrator="nose"), "integrator='nose'"),
        (dict(n_steps=-1), "n_steps=-1"),
        (dict(write_interval=0), "write_interval=0"),
        (dict(timestep=0.0), "timestep=0.0"),
        (dict(temperature=-5.0), "temperature=-5.0"),
        (dict(temperature=(1, 2, 3)), "temperature="),
    ],
)
def test_bad_md_arguments(tmp_path, kwargs, match):
    args = dict(n_steps=1) | kwargs
    with pytest.raises(ValueError, match=match):
        run_md(linear_alkane(1), _xtb(), tmp_path / "x.extxyz", **args)


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_alkane_geometry(n):
    atoms = linear_alkane(n)
    assert atoms.get_chemical_formula() == ("CH4" if n == 1 else f"C{n}H{2 * n + 2}")
    d = atoms.get_all_distances()
    carbon = atoms.numbers == 6
    bonded_h = (d[np.ix_(carbon, ~carbon)] < 1.2).sum(axis=1)
    expected = [4] if n == 1 else [3] + [2] * (n - 2) + [3]
    np.testing.assert_array_equal(bonded_h, expected)
    np.fill_diagonal(d, np.inf)
    assert d.min() == pytest.approx(1.09)


@pytest.mark.parametrize("n", [4, 5, 6, 7, 8])
def test_ring_geometry(n):
    ring = gold_thiolate_ring(n)
    d = ring.get_all_distances()
    gold, sulfur = np.arange(n), n + 5 * np.arange(n)
    au_s = d[np.ix_(gold, sulfur)]
    np.testing.assert_allclose(np.sort(au_s, axis=1)[:, :2], 2.33, atol=1e-9)
    heights = ring.positions[sulfur, 2]
    np.testing.assert_allclose(np.abs(heights), 1.0)
    assert np.all(heights[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1) == 0)  # up, down in turns
    np.fill_diagonal(d, np.inf)
    assert d.min() > 1.0


def test_logarithmic_indices_are_distinct_and_dense_at_the_end():
    for n_frames, n_samples in [(1, 1), (5, 5), (100, 8), (1201, 300), (12000, 1000)]:
        idx = logarithmic_indices(n_frames, n_samples)
        assert len(np.unique(idx)) == n_samples and idx[-1] == n_frames - 1
        assert idx[0] == 0 or n_samples == 1
    gaps = np.diff(logarithmic_indices(12000, 1000))
    assert gaps[-10:].max() == 1 and gaps[:10].min() > 50
    with pytest.raises(ValueError, match="n_samples=9 exceeds n_frames=8"):
        logarithmic_indices(8, 9)


def _methanethiolate():
    """CH3S⁻: methanethiol without the hydrogen on its sulfur."""
    from ase.build import molecule

    thiol = molecule("CH3SH")
    sulfur = int(np.flatnonzero(thiol.numbers == 16)[0])
    hydrogens = np.flatnonzero(thiol.numbers == 1)
    del thiol[int(hydrogens[np.argmin(thiol.get_distances(sulfur, hydrogens))])]
    return thiol


def test_frames_of_a_charged_run_carry_their_charge(tmp_path):
    """A fresh calculator attached to a written frame computes the anion, not the neutral."""
    from mlmlearn.datasets._bundled import load_archive, pack

    path = tmp_path / "thiolate.extxyz"
    anion = tblite.TBLite(method="GFN2-xTB", charge=-1, verbosity=0)
    run_md(_methanethiolate(), anion, path, n_steps=2, timestep=0.5, seed=3)
    frames = read_frames(path)
    for frame in frames:
        assert frame.info["charge"] == -1 and frame.get_initial_charges().sum() == -1
    frame = frames[-1]
    # tblite given no charge reads the frame's: the same calculation as charge=-1, bit for bit
    # up to the SCC's run-to-run noise; the neutral molecule is eV/Å away
    read_charge, told = frame.copy(), frame.copy()
    read_charge.calc = tblite.TBLite(method="GFN2-xTB", verbosity=0)
    told.calc = tblite.TBLite(method="GFN2-xTB", charge=-1, verbosity=0)
    np.testing.assert_allclose(read_charge.get_forces(), told.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(read_charge.get_forces(), frame.get_forces(), rtol=0, atol=1e-4)
    neutral = frame.copy()
    neutral.set_initial_charges(np.zeros(len(neutral)))
    neutral.calc = tblite.TBLite(method="GFN2-xTB", verbosity=0)
    assert np.abs(neutral.get_forces() - frame.get_forces()).max() > 0.1
    # the charge survives packing into an archive and loading it
    archive = pack([path], tmp_path / "thiolate.npz", metadata={"runs": [{"name": "CH3S"}]})
    loaded = load_archive(archive).frames[-1]
    assert loaded.info["charge"] == -1 and loaded.get_initial_charges().sum() == -1
    # resuming under another charge is refused
    with pytest.raises(ValueError, match="charge=-1, not 0"):
        run_md(_methanethiolate(), _xtb(), path, n_steps=2, timestep=0.5, seed=3)


def test_initial_charges_give_the_run_its_charge_when_the_calculator_has_none(tmp_path):
    from mlmlearn.datasets._md import _total_charge

    anion = _methanethiolate()
    anion.set_initial_charges([0.0, -0.5, -0.5, 0.0, 0.0])
    assert _total_charge(anion, _xtb()) == -1
    assert _total_charge(anion, tblite.TBLite(method="GFN2-xTB", charge=0)) == 0
    path = tmp_path / "anion.extxyz"
    run_md(anion, _xtb(), path, n_steps=1, timestep=0.5, seed=1)
    frame = read_frames(path)[-1]
    assert frame.info["charge"] == -1
    # per-atom charges that already sum to the total are kept as given
    np.testing.assert_array_equal(frame.get_initial_charges(), [0.0, -0.5, -0.5, 0.0, 0.0])
