"""Reference relaxation paths: the BFGS generator, its resumption, and the bundled archives."""

import json
import os
import time
from importlib import resources

import numpy as np
import pytest

pytest.importorskip("ase")

from ase.build import molecule  # noqa: E402
from ase.calculators.calculator import CalculationFailed  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402

from mlmlearn.datasets import (  # noqa: E402
    _recipes,  # noqa: E402
    isolated_atom_energies,
    load_au25,
    load_gold_thiolate_rings,
    read_frames,
    run_relaxation,
)

HELD_OUT = "Au5(SCH3)5_600K"


def _start():
    atoms = molecule("C6H6")
    atoms.rattle(0.1, seed=1)
    return atoms


def _fmax(forces):
    return float(np.linalg.norm(forces, axis=1).max())


class _Interrupt(Exception):
    pass


class _FailingEMT(EMT):
    """EMT that raises ``error`` at its ``at``-th calculation (counted over all instances)."""

    calls = 0

    def __init__(self, at, error, **kwargs):
        super().__init__(**kwargs)
        self.at, self.error = at, error

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == self.at:
            raise self.error
        super().calculate(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# the generator (EMT, no xTB)


def test_relaxation_keeps_every_step_with_its_source(tmp_path):
    path = tmp_path / "path.extxyz"
    summary = run_relaxation(_start(), EMT(), path, fmax=0.01, max_steps=200,
                             source_run="built", source_step=-1)
    frames = read_frames(path)
    assert summary["converged"] and summary["status"] == "converged"
    assert [f.info["step"] for f in frames] == list(range(summary["n_steps"] + 1))
    assert all(f.info["temperature_K"] == 0.0 for f in frames)
    assert {(f.info["source_run"], f.info["source_step"]) for f in frames} == {("built", -1)}
    assert summary["fmax_reached"] == pytest.approx(_fmax(frames[-1].get_forces()))
    assert summary["fmax_reached"] < 0.01 <= _fmax(frames[-2].get_forces())
    # every frame's forces are those of its positions
    k = len(frames) // 2
    fresh = frames[k].copy()
    fresh.calc = EMT()
    np.testing.assert_allclose(fresh.get_forces(), frames[k].get_forces(), atol=1e-6)
    # a finished path is not rerun
    assert run_relaxation(_start(), EMT(), path, fmax=0.01, max_steps=200,
                          source_run="built") == summary


def test_interrupted_relaxation_resumes_exactly(tmp_path):
    """BFGS's restart file carries the Hessian: the resumed path is the uninterrupted one."""
    whole = tmp_path / "whole.extxyz"
    run_relaxation(_start(), EMT(), whole, fmax=0.01, max_steps=200, source_run="built")
    cut = tmp_path / "cut.extxyz"
    _FailingEMT.calls = 0
    with pytest.raises(_Interrupt):
        run_relaxation(_start(), _FailingEMT(30, _Interrupt()), cut, fmax=0.01, max_steps=200,
                       source_run="built")
    assert 0 < len(read_frames(cut)) < 30
    run_relaxation(_start(), EMT(), cut, fmax=0.01, max_steps=200, source_run="built")
    a, b = read_frames(whole), read_frames(cut)
    assert len(a) == len(b)
    # extxyz writes positions with 8 decimals: the paths agree to that
    assert max(np.abs(x.positions - y.positions).max() for x, y in zip(a, b, strict=True)) < 1e-6


def test_a_path_ended_at_max_steps_continues_when_asked_for_more(tmp_path):
    whole = tmp_path / "whole.extxyz"
    run_relaxation(_start(), EMT(), whole, fmax=0.01, max_steps=200, source_run="built")
    short = tmp_path / "short.extxyz"
    first = run_relaxation(_start(), EMT(), short, fmax=0.01, max_steps=20, source_run="built")
    assert first["status"] == "max_steps" and first["n_frames"] == 21
    second = run_relaxation(_start(), EMT(), short, fmax=0.01, max_steps=200,
                            source_run="built")
    assert second["converged"]
    a, b = read_frames(whole), read_frames(short)
    assert len(a) == len(b)
    assert max(np.abs(x.positions - y.positions).max() for x, y in zip(a, b, strict=True)) < 1e-6


def test_a_failed_single_point_is_retried_with_a_shorter_step(tmp_path):
    path = tmp_path / "path.extxyz"
    _FailingEMT.calls = 0
    summary = run_relaxation(
        _start(), _FailingEMT(12, CalculationFailed("SCF not converged in 250 cycles")), path,
        fmax=0.01, max_steps=200, maxstep=0.2, source_run="built",
    )
    assert summary["converged"]
    (failure,) = summary["failures"]
    assert failure["kind"] == "scf" and "SCF" in failure["message"]
    frames = read_frames(path)
    assert [f.info["step"] for f in frames] == list(range(len(frames)))  # nothing lost or doubled
    retried = frames[failure["step"]]
    assert retried.info["bfgs_maxstep"] == pytest.approx(failure["maxstep_after"])
    assert failure["maxstep_after"] < 0.2
    step = np.linalg.norm(retried.positions - frames[failure["step"] - 1].positions, axis=1)
    assert step.max() <= failure["maxstep_after"] + 1e-6


def test_a_path_gives_up_after_max_failures(tmp_path):
    class _AlwaysFails(EMT):
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            if np.abs(self.atoms.positions - _start().positions).max() > 1e-9:
                raise CalculationFailed("SCF not converged")

    summary = run_relaxation(_start(), _AlwaysFails(), tmp_path / "p.extxyz", fmax=0.01,
                             max_steps=50, max_failures=2, source_run="built")
    assert summary["status"] == "failed" and len(summary["failures"]) == 3
    assert summary["n_frames"] == 1
    shorter = [f["maxstep_after"] for f in summary["failures"]]
    assert shorter == sorted(shorter, reverse=True) and shorter[-1] >= 0.005


class _Collapse(EMT):
    """EMT until the forces were once below 0.2 eV/Å, then 100 times stronger."""

    reached = False

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        if self.reached:
            self.results["forces"] = 100.0 * self.results["forces"]
        self.reached |= _fmax(self.results["forces"]) < 0.2


def test_a_path_that_leaves_its_nearly_reached_minimum_is_stopped(tmp_path):
    path = tmp_path / "p.extxyz"
    summary = run_relaxation(_start(), _Collapse(), path, fmax=0.001, max_steps=200,
                             source_run="built", divergence=(0.2, 2.0))
    fmax = [_fmax(f.get_forces()) for f in read_frames(path)]
    assert summary["status"] == "diverged" and not summary["converged"]
    assert fmax[-1] > 2.0 and min(fmax[:-1]) < 0.2  # stopped at the first frame that left


@pytest.mark.slow  # two child processes and a 2 s timeout: about 10 s
def test_a_hanging_single_point_is_killed_and_retried(tmp_path):
    path = tmp_path / "p.extxyz"
    marker = tmp_path / "hung"
    calculator = _HangOnce(str(marker), at_step=3)
    tic = time.perf_counter()
    summary = run_relaxation(_start(), calculator, path, fmax=0.3, max_steps=200,
                             source_run="built", timeout=2.0)
    assert summary["converged"] and marker.exists()
    (failure,) = summary["failures"]
    assert failure["kind"] == "timeout"
    assert time.perf_counter() - tic < 60


class _HangOnce(EMT):
    """EMT that sleeps (a hung SCF) at its ``at_step``-th calculation, once per ``marker``."""

    def __init__(self, marker, at_step, **kwargs):
        super().__init__(**kwargs)
        self.marker, self.at_step, self.n = marker, at_step, 0

    def calculate(self, *args, **kwargs):
        self.n += 1
        if self.n == self.at_step and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            time.sleep(600)
        super().calculate(*args, **kwargs)


def test_packing_keeps_a_diverged_path_up_to_its_smallest_force(tmp_path, monkeypatch):
    from mlmlearn.datasets import generate
    from mlmlearn.datasets._bundled import load_archive

    run_relaxation(_start(), _Collapse(), tmp_path / "slide.extxyz", fmax=0.001, max_steps=200,
                   source_run="built", divergence=(0.2, 2.0))
    run_relaxation(_start(), EMT(), tmp_path / "fine.extxyz", fmax=0.05, max_steps=200,
                   source_run="Au5(SCH3)5_600K", source_step=40)
    monkeypatch.setattr(generate, "_relaxation_starts", lambda name, settings: [
        ("slide", "built", -1), ("fine", "Au5(SCH3)5_600K", 40), ("missing", "built", -1)])
    monkeypatch.setattr(_recipes, "compute_isolated_atom_energies",
                        lambda method: {"H": -1.0, "C": -2.0, "S": -3.0, "Au": -4.0})
    names = generate.pack_relaxations("ring-relaxations", tmp_path, tmp_path / "out.npz",
                                      elapsed=1.0)
    assert names == ["slide", "fine"]
    data = load_archive(tmp_path / "out.npz")
    slide, fine = data.metadata["runs"]
    computed = read_frames(tmp_path / "slide.extxyz")
    fmax = [_fmax(f.get_forces()) for f in computed]
    assert slide["status"] == "diverged" and slide["n_steps_computed"] == len(computed) - 1
    assert slide["n_frames"] == int(np.argmin(fmax)) + 1 < len(computed)
    assert slide["fmax_reached"] == pytest.approx(min(fmax), abs=1e-5)
    assert (slide["split"], fine["split"]) == ("train", "test")  # the held-out run is test
    assert fine["status"] == "converged" and fine["n_frames"] == len(read_frames(
        tmp_path / "fine.extxyz"))
    assert data.metadata["partial"] == ["missing"]
    assert data.metadata["isolated_atom_energies"]["energies_eV"]["Au"] == -4.0
    assert data.metadata["settings"] == json.loads(json.dumps(_recipes.RING_RELAXATIONS))
    assert np.all(data.temperature_K == 0.0)


# ---------------------------------------------------------------------------------------------
# the bundled archives


def _archive(name):
    ref = resources.files("mlmlearn.datasets").joinpath("data", f"{name}.npz")
    if not ref.is_file():
        pytest.skip(f"{name}.npz is not bundled")
    return ref


@pytest.fixture(scope="module")
def ring_relax():
    _archive("gold_thiolate_ring_relaxations")
    return load_gold_thiolate_rings(kind="relaxation")


@pytest.fixture(scope="module")
def au25_relax():
    _archive("au25_relaxations")
    return load_au25(kind="relaxation")


FIELDS = ("energy", "run", "step", "temperature_K", "split", "charge", "intact", "index",
          "kind", "source_run", "source_step")


def _check_fields(data):
    n = len(data.frames)
    for field in FIELDS:
        assert np.shape(data[field]) == (n,), field
    assert len(data.problems) == n
    for k in (0, n - 1):
        frame = data.frames[k]
        assert frame.info["kind"] == data.kind[k]
        assert frame.info["source_run"] == data.source_run[k]
        assert frame.info["source_step"] == data.source_step[k]
        assert frame.info["step"] == data.step[k]
        assert frame.get_forces().shape == (len(frame), 3)


def _paths(data):
    """Frame indices of each relaxation path, in path order."""
    return [np.flatnonzero(data.run == r) for r in range(len(data.run_names))]


@pytest.mark.parametrize("loader", ["rings", "au25"])
def test_kinds_combine_md_and_relaxation_frames(loader, request):
    request.getfixturevalue("ring_relax" if loader == "rings" else "au25_relax")
    load = load_gold_thiolate_rings if loader == "rings" else load_au25
    md, relax, both = load(), load(kind="relaxation"), load(kind="all")
    parts = {"md": md, "relaxation": relax}
    if loader == "rings":  # only the rings have active-learning frames
        parts["active"] = load(kind="active")
    else:
        with pytest.raises(ValueError, match="no active-learning frames"):
            load(kind="active")
    for data in (*parts.values(), both):
        _check_fields(data)
    for kind, data in parts.items():
        assert set(data.kind) == {kind}
    runs = [d.run_names for d in parts.values()]
    offsets = np.cumsum([0] + [len(r) for r in runs[:-1]])
    assert len(both.frames) == sum(len(d.frames) for d in parts.values())
    assert both.run_names == [name for names in runs for name in names]
    np.testing.assert_array_equal(both.energy, np.concatenate([d.energy for d in parts.values()]))
    np.testing.assert_array_equal(
        both.run, np.concatenate([d.run + o for d, o in zip(parts.values(), offsets, strict=True)]))
    np.testing.assert_array_equal(both.source_run,
                                  np.concatenate([d.source_run for d in parts.values()]))
    assert both.metadata == {kind: d.metadata for kind, d in parts.items()}
    # MD frames are their own source; relaxation frames are at 0 K
    np.testing.assert_array_equal(md.source_run, np.array(md.run_names)[md.run])
    np.testing.assert_array_equal(md.source_step, md.step)
    assert np.all(relax.temperature_K == 0.0)
    with pytest.raises(ValueError, match="kind='relaxed'"):
        load(kind="relaxed")


def test_au25_runs_select_md_frames_only(au25_relax):
    heating = load_au25(kind="all")
    fixed = load_au25(runs="fixed_temperature", kind="all")
    for data in (heating, fixed):
        relax = data.kind == "relaxation"
        assert relax.sum() == len(au25_relax.frames)
        np.testing.assert_array_equal(data.energy[relax], au25_relax.energy)
    assert set(heating.source_run[heating.kind == "md"]) == {"Au25(SCH3)18_heating"}
    assert set(au25_relax.source_run) <= {"Au25(SCH3)18_heating", "Au25(SCH3)18_500K"}
    assert set(au25_relax.split) == {"train"}
    assert set(au25_relax.charge) == {-1}


def test_relaxation_paths_start_at_their_md_frame_and_descend(request):
    for name in ("ring_relax", "au25_relax"):
        data = request.getfixturevalue(name)
        md = (load_gold_thiolate_rings if name == "ring_relax" else load_au25)(
            **({} if name == "ring_relax" else {"runs": "all"}), include_broken=True
        )
        for r, frames in enumerate(_paths(data)):
            meta = data.metadata["runs"][r]
            assert meta["name"] == data.run_names[r] and meta["n_frames"] == len(frames)
            np.testing.assert_array_equal(data.step[frames], np.arange(len(frames)))
            first = data.frames[frames[0]]
            # the start is the stored MD frame it names (or a built ring)
            if meta["source_run"] != "built":
                k = np.flatnonzero((np.array(md.run_names)[md.run] == meta["source_run"])
                                   & (md.step == meta["source_step"]))
                np.testing.assert_allclose(first.positions, md.frames[k[0]].positions, atol=1e-8)
                assert data.energy[frames[0]] == pytest.approx(md.energy[k[0]], abs=1e-4)
            else:
                assert meta["source_step"] == -1
            fmax = [_fmax(data.frames[k].get_forces()) for k in frames]
            assert fmax[-1] < fmax[0], meta["name"]
            assert meta["fmax_reached"] == pytest.approx(fmax[-1], abs=1e-5)  # 5 decimals
            if meta["converged"]:
                assert fmax[-1] < data.metadata["settings"]["fmax_eV_per_A"]
            if meta["status"] == "diverged":  # packed up to its smallest largest force
                assert fmax[-1] == min(fmax)
            energy = data.energy[frames]
            assert energy[-1] < energy[0]
            # BFGS is not monotone, but nearly: few steps go up, and not by much
            rises = np.diff(energy)
            assert np.mean(rises > 1e-3) < 0.1, meta["name"]


def test_ring_relaxations_cover_every_20th_frame_of_the_held_out_run(ring_relax):
    held = ring_relax.source_run == HELD_OUT
    steps = sorted({int(s) for s in ring_relax.source_step[held]})
    assert steps == list(range(0, 401, 40))
    assert set(ring_relax.split[held]) == {"test"}
    assert set(ring_relax.split[~held]) == {"train"}
    built = ring_relax.source_run == "built"
    assert np.all(ring_relax.source_step[built] == -1)
    assert np.all(ring_relax.source_step[~built] >= 0)
    formulas = {f.get_chemical_formula() for f, b in zip(ring_relax.frames, built, strict=True)
                if b}
    assert formulas == {f"C{n}H{3 * n}Au{n}S{n}" for n in range(4, 9)}


@pytest.mark.parametrize(
    "fixture, recipe", [("ring_relax", "RING_RELAXATIONS"), ("au25_relax", "AU25_RELAXATIONS")]
)
def test_recipe_settings_match_the_archive(fixture, recipe, request):
    data = request.getfixturevalue(fixture)
    settings = json.loads(json.dumps(getattr(_recipes, recipe)))
    assert data.metadata["settings"] == settings
    stored = data.metadata["isolated_atom_energies"]
    assert stored["method"] == settings["method"]
    assert stored["settings"] == json.loads(json.dumps(_recipes.ISOLATED_ATOMS))


def test_bundled_relaxations_stay_within_the_size_budget():
    sizes = [os.path.getsize(_archive(name)) for name in
             ("gold_thiolate_ring_relaxations", "au25_relaxations", "gold_thiolate_ring_active")]
    assert sum(sizes) <= 10e6


@pytest.mark.parametrize("method", ["GFN2-xTB", "GFN1-xTB"])
def test_isolated_atom_energies_are_the_four_elements(method):
    _archive("gold_thiolate_ring_relaxations" if method == "GFN2-xTB" else "au25_relaxations")
    energies = isolated_atom_energies(method)
    assert sorted(energies) == ["Au", "C", "H", "S"]
    assert all(isinstance(e, float) and e < 0 for e in energies.values())
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        return
    else:
        fresh = _recipes.compute_isolated_atom_energies(method)
        for element, energy in energies.items():
            assert energy == pytest.approx(fresh[element], abs=1e-6)


def test_isolated_atom_energies_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="method='GFN0-xTB'"):
        isolated_atom_energies("GFN0-xTB")


def test_a_ring_relaxation_frame_matches_a_fresh_gfn2_single_point(ring_relax):
    tblite = pytest.importorskip("tblite.ase")
    k = int(np.flatnonzero(ring_relax.source_run == HELD_OUT)[-1])  # a converged end
    atoms = ring_relax.frames[k].copy()
    atoms.calc = tblite.TBLite(method="GFN2-xTB", charge=0, verbosity=0)
    np.testing.assert_allclose(atoms.get_forces(), ring_relax.frames[k].get_forces(), atol=1e-4)
    assert atoms.get_potential_energy() == pytest.approx(ring_relax.energy[k], abs=1e-5)


def test_status_marks_md_frames_and_each_relaxation_paths_outcome():
    from mlmlearn.datasets import load_gold_thiolate_rings

    data = load_gold_thiolate_rings(kind="all")
    assert set(data.status[data.kind == "md"]) == {"md"}
    meta = {r["name"]: r["status"] for r in data.metadata["relaxation"]["runs"]}
    names = np.asarray(data.run_names)[data.run]
    relax = data.kind == "relaxation"
    assert all(meta[n] == s for n, s in zip(names[relax], data.status[relax], strict=True))
    assert {"converged", "diverged"} <= set(data.status[relax])
