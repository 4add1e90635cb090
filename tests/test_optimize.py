"""ASE optimizers on forces-only calculators (ForcesOnly), and mlmlearn.applications.optimize:
part-wise schedules, Hessian resets, uncertainty stops, exact resumption, errors."""

import io
import json
import os

import numpy as np
import pytest

pytest.importorskip("ase")

from ase.calculators.calculator import (  # noqa: E402
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)
from ase.calculators.lj import LennardJones  # noqa: E402
from ase.cluster import Icosahedron  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402
from ase.io import read, write  # noqa: E402
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch, GPMin, LBFGSLineSearch, MDMin  # noqa: E402

from mlmlearn.applications.optimize import (  # noqa: E402
    CORE_TYPES,
    SHELL_TYPES,
    ResumeError,
    optimize,
)
from mlmlearn.atoms import gold_thiolate_types  # noqa: E402
from mlmlearn.datasets import gold_thiolate_ring  # noqa: E402
from mlmlearn.forcefield._forces_only import EnergyRequiredError, ForcesOnly  # noqa: E402

#: Gold-thiolate-like pair potential for the part tests: Au–S at 2.33 Å sits near the
#: minimum (2.58 Å), core Au–Au at 2.88 Å is attracted; forces of 0.7–6 eV/Å.
GOLD_LJ = {"sigma": 2.3, "epsilon": 0.5, "rc": 6.0}


class LJForces(Calculator):
    """Lennard-Jones forces and no energy: a real calculator that has forces only."""

    implemented_properties = ["forces"]

    def __init__(self, **lj):
        super().__init__()
        self.lj = lj

    def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = LennardJones(**self.lj).get_forces(self.atoms.copy())


class Interrupted(Exception):
    """Stands for a killed process."""


class RecordingLJ(LennardJones):
    """Lennard-Jones keeping the positions of every calculation; fails at call ``fail_at``."""

    def __init__(self, fail_at=None, **lj):
        super().__init__(**lj)
        self.fail_at = fail_at
        self.seen = []

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        if self.fail_at is not None and len(self.seen) + 1 == self.fail_at:
            raise Interrupted(f"killed at force call {self.fail_at}")
        super().calculate(atoms, properties, system_changes)
        self.seen.append(self.atoms.positions.copy())


class UncertainLJ(LennardJones):
    """Lennard-Jones with a per-atom ``results["uncertainty"]`` (Å): each atom's distance from
    where it started, the shape of a model's uncertainty growing away from its data."""

    def __init__(self, origin, **lj):
        super().__init__(**lj)
        self.origin = np.array(origin, float)

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["uncertainty"] = np.linalg.norm(self.atoms.positions - self.origin, axis=1)


def argon13(seed=0):
    """Ar13 icosahedron with nearest neighbours at the LJ pair minimum, rattled."""
    atoms = Icosahedron("Ar", 2, latticeconstant=2 ** (1 / 6) * 2**0.5)
    atoms.rattle(0.02, seed=seed)
    return atoms


def core_and_shell():
    """An Au13 core (types Au_core) and an Au4S4 staple ring (Au_unit, S), 12 Å apart."""
    core = Icosahedron("Au", 2)
    core.rattle(0.1, seed=3)
    ring = gold_thiolate_ring(4)
    ring = ring[[atom.index for atom in ring if atom.symbol in ("Au", "S")]]
    ring.translate(core.get_center_of_mass() + [12.0, 0, 0] - ring.get_center_of_mass())
    return core + ring


def log_lines(text):
    return [line.split() for line in text.getvalue().splitlines()[1:]]


# -- ForcesOnly ------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [BFGS, FIRE, LBFGS, MDMin])
def test_forces_only_optimizers_step_as_with_the_energy(optimizer):
    """The steps use forces alone: a forces-only calculator gives the same path bit for bit
    as the full Lennard-Jones calculator, and the log reads nan for the energy."""
    full, bare = argon13(), argon13()
    full.calc, bare.calc = LennardJones(), LJForces()
    full_log, bare_log = io.StringIO(), io.StringIO()
    optimizer(full, logfile=full_log, maxstep=0.05).run(fmax=1e-4, steps=5)
    optimizer(ForcesOnly(bare), logfile=bare_log, maxstep=0.05).run(fmax=1e-4, steps=5)
    assert np.array_equal(bare.positions, full.positions)
    bare_rows, full_rows = log_lines(bare_log), log_lines(full_log)
    assert len(bare_rows) == 6
    assert [row[3] for row in bare_rows] == ["nan"] * 6
    assert all(np.isfinite(float(row[3])) for row in full_rows)
    assert [row[4] for row in bare_rows] == [row[4] for row in full_rows]  # fmax


def test_forces_only_leaves_a_calculator_with_energy_unchanged():
    plain, wrapped = argon13(), argon13()
    plain.calc, wrapped.calc = LennardJones(), LennardJones()
    plain_log, wrapped_log = io.StringIO(), io.StringIO()
    BFGS(plain, logfile=plain_log).run(fmax=1e-4, steps=4)
    BFGS(ForcesOnly(wrapped), logfile=wrapped_log).run(fmax=1e-4, steps=4)
    assert np.array_equal(wrapped.positions, plain.positions)
    assert [r[3:] for r in log_lines(wrapped_log)] == [r[3:] for r in log_lines(plain_log)]


@pytest.mark.parametrize(
    "make, remedy",
    [
        (lambda a: LBFGS(a, logfile=None, use_line_search=True), "use_line_search=False"),
        (lambda a: LBFGSLineSearch(a, logfile=None), "use_line_search=False"),
        (lambda a: FIRE(a, logfile=None, downhill_check=True), "downhill_check=False"),
        (lambda a: BFGSLineSearch(a, logfile=None), "use BFGS"),
    ],
)
def test_optimizers_stepping_on_energies_are_refused_before_they_move(make, remedy):
    atoms = argon13()
    atoms.calc = LJForces()
    start = atoms.positions.copy()
    with pytest.raises(EnergyRequiredError, match=f"forces only.*{remedy}"):
        make(ForcesOnly(atoms)).run(fmax=1e-4, steps=3)
    assert np.array_equal(atoms.positions, start)


def test_an_energy_asked_for_outside_a_log_line_raises():
    atoms = argon13()
    atoms.calc = LJForces()
    with pytest.raises(EnergyRequiredError, match="needs the potential energy"):
        ForcesOnly(atoms).__ase_optimizable__().get_value()
    # an optimizer not known to need energies is stopped at its first use of one
    with pytest.raises(EnergyRequiredError, match="GPMin.*needs the potential energy"):
        GPMin(ForcesOnly(atoms), logfile=None).run(fmax=1e-4, steps=2)
    assert issubclass(EnergyRequiredError, NotImplementedError)


def test_forces_only_trajectories_are_written(tmp_path):
    """ASE's .traj via trajectory=, and extxyz and .traj writers attached as observers."""
    from ase.io.trajectory import Trajectory

    atoms = argon13()
    atoms.calc = LJForces()
    opt = BFGS(ForcesOnly(atoms), logfile=None, trajectory=tmp_path / "opt.traj", maxstep=0.05)
    opt.attach(lambda: write(tmp_path / "opt.extxyz", atoms, append=True))
    attached = Trajectory(tmp_path / "attached.traj", "w", atoms)
    opt.attach(attached)
    opt.run(fmax=1e-4, steps=3)
    attached.close()
    for name in ("opt.traj", "opt.extxyz", "attached.traj"):
        frames = read(tmp_path / name, ":")
        assert len(frames) == 4, name
        for frame in frames:
            np.testing.assert_allclose(
                frame.get_forces(), LennardJones().get_forces(frame), rtol=1e-6, atol=1e-6
            )
            with pytest.raises(PropertyNotImplementedError):
                frame.get_potential_energy()


def test_molecular_dynamics_runs_on_forces_only():
    """VelocityVerlet and Langevin take the atoms themselves and need no energy."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    for make in (
        lambda a: VelocityVerlet(a, timestep=0.01 * units.fs),
        lambda a: Langevin(
            a, timestep=0.01 * units.fs, temperature_K=50, friction=0.01,
            rng=np.random.default_rng(0),
        ),
    ):
        full, bare = argon13(), argon13()
        full.calc, bare.calc = LennardJones(), LJForces()
        make(full).run(5)
        make(bare).run(5)
        assert np.array_equal(bare.positions, full.positions)


def test_forces_only_wraps_atoms_only():
    from ase.filters import UnitCellFilter

    with pytest.raises(TypeError, match="atoms=UnitCellFilter"):
        ForcesOnly(UnitCellFilter(argon13()))


# -- optimize: parts, resets, constraints -----------------------------------------------


def test_partwise_rounds_move_only_their_part():
    atoms = core_and_shell()
    types = gold_thiolate_types(atoms)
    shell = np.isin(types, SHELL_TYPES)
    core = np.isin(types, CORE_TYPES)
    assert shell.sum() == 8 and core.sum() == 13
    calc = RecordingLJ(**GOLD_LJ)
    result = optimize(
        atoms, calc, schedule=[("shell", 3), ("core", 2)], fmax=1e-3, steps=12, maxstep=0.05
    )
    assert result.stop_reason == "steps" and result.n_steps == 12
    expected = ["start"] + (["shell"] * 3 + ["core"] * 2) * 2 + ["shell"] * 2
    assert result.parts.tolist() == expected
    assert result.rounds.tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5]
    seen = calc.seen
    assert len(seen) == 13  # one force call per frame
    for k in range(1, 13):
        held = core if result.parts[k] == "shell" else shell
        moved = ~held
        assert np.array_equal(seen[k][held], seen[k - 1][held]), k  # bitwise
        assert np.all(np.linalg.norm(seen[k][moved] - seen[k - 1][moved], axis=1).max() > 0)
    assert np.array_equal(result.atoms.positions, seen[-1])
    assert result.atoms.constraints == []
    assert np.array_equal(atoms.positions, core_and_shell().positions)  # input untouched


def _step_from_initial_hessian(forces, alpha, maxstep):
    """The step ASE's BFGS takes from H = alpha * I: forces / alpha, scaled to maxstep."""
    step = forces / alpha
    longest = np.linalg.norm(step, axis=1).max()
    return step * (maxstep / longest if longest >= maxstep else 1.0)


@pytest.mark.parametrize("every", [3, "round"])
def test_hessian_resets_restart_from_alpha_times_identity(every):
    """After a reset, the step is the first BFGS step: F / alpha (scaled to maxstep); the
    steps just before are not. ``opt.H = None`` would fail this: ASE's update changes the
    initial matrix in place, so it returns to the current approximation."""
    atoms = argon13()
    calc = RecordingLJ()
    schedule = [("a", range(0, 7), 4), ("b", range(7, 13), 3)]
    result = optimize(
        atoms, calc, schedule=schedule, hessian_reset=every, fmax=1e-4, steps=14, maxstep=0.02
    )
    if every == 3:
        assert result.hessian_resets.tolist() == [3, 6, 9, 12]
    else:  # at each round start after the first: frames 4, 7, 11, 14 (14 ends the run)
        assert result.hessian_resets.tolist() == [4, 7, 11, 14]
    parts = {"a": np.arange(7), "b": np.arange(7, 13)}
    for k in range(1, result.n_steps):
        part = result.parts[k + 1]
        forces = np.zeros((13, 3))
        forces[parts[part]] = LennardJones().get_forces(_at(atoms, calc.seen[k]))[parts[part]]
        fresh = _step_from_initial_hessian(forces, 70.0, 0.02)
        taken = calc.seen[k + 1] - calc.seen[k]
        if k in result.hessian_resets:
            # eigh of 70 I gives back F / 70 to ~3N eps relative (<= 2e-16 Å on 0.02 Å
            # steps); positions near 3 Å round the difference to ~1e-15 Å
            np.testing.assert_allclose(taken, fresh, rtol=0, atol=1e-14)
        elif result.parts[k] == result.parts[k + 1]:
            # an updated Hessian within a round (a part's first step after a switch may
            # still be F / alpha: the updates of the other part leave its block alone)
            assert np.abs(taken - fresh).max() > 1e-6, k


def _at(atoms, positions):
    atoms = atoms.copy()
    atoms.positions = positions
    return atoms


def test_the_update_across_a_part_switch_is_skipped(tmp_path):
    """Without resets the Hessian is carried into the next round unchanged: the secant pair
    spanning two FixAtoms sets is no curvature information (its s·Δf is -s·F of the old
    part's last step, always negative, so the update would make the matrix indefinite)."""
    path = tmp_path / "opt.extxyz"
    schedule = [("shell", 3), ("core", 2)]

    def hessian(steps):
        optimize(core_and_shell(), LennardJones(**GOLD_LJ), schedule=schedule, fmax=1e-4,
                 steps=steps, maxstep=0.05, trajectory=path)
        with np.load(str(path) + ".checkpoint.npz") as data:
            return data["bfgs_H"]

    h2, h3, h4, h5 = (hessian(n) for n in (2, 3, 4, 5))
    assert not np.array_equal(h3, h2)  # within a round: updated each step
    assert np.array_equal(h4, h3)  # frame 4: the first core step used the shell's Hessian
    assert not np.array_equal(h5, h4)


def test_user_constraints_are_kept_and_restored():
    atoms = core_and_shell()
    atoms.set_constraint(FixAtoms(indices=[0, 13, 17]))
    calc = RecordingLJ(**GOLD_LJ)
    result = optimize(atoms, calc, schedule=[("shell", 2), ("core", 2)], fmax=1e-3, steps=8)
    for seen in calc.seen[1:]:
        assert np.array_equal(seen[[0, 13, 17]], calc.seen[0][[0, 13, 17]])
    (constraint,) = result.atoms.constraints
    assert isinstance(constraint, FixAtoms) and constraint.index.tolist() == [0, 13, 17]
    (original,) = atoms.constraints
    assert original.index.tolist() == [0, 13, 17]
    # fmax is measured on the moving atoms: the held ones' forces do not count
    forces = LennardJones(**GOLD_LJ).get_forces(_at(atoms, calc.seen[0]))
    forces[[0, 13, 17]] = 0
    assert result.fmax[0] == pytest.approx(np.linalg.norm(forces, axis=1).max(), rel=1e-12)


def test_convergence_is_judged_on_all_moving_atoms():
    atoms = argon13()
    result = optimize(
        atoms, LennardJones(), schedule=[(range(0, 7), 5), (range(7, 13), 5)], fmax=0.01,
        steps=300, maxstep=0.05,
    )
    assert result.converged and result.stop_reason == "converged"
    forces = result.atoms.get_forces()
    assert np.linalg.norm(forces, axis=1).max() < 0.01
    assert result.fmax[-1] < 0.01 <= result.fmax[:-1].min()
    assert set(result.parts[1:]) == {"part0", "part1"}


def test_forces_only_calculator_records_nan_energies(tmp_path):
    """optimize runs a calculator without energy: NaN energies, no energy in the frames,
    and the same path as with the energy (BFGS steps on forces)."""
    path = tmp_path / "opt.extxyz"
    log = io.StringIO()
    bare = optimize(argon13(), LJForces(), fmax=1e-4, steps=4, maxstep=0.05, trajectory=path,
                    logfile=log)
    full = optimize(argon13(), LennardJones(), fmax=1e-4, steps=4, maxstep=0.05)
    assert np.array_equal(bare.atoms.positions, full.atoms.positions)
    assert np.all(np.isnan(bare.energies)) and np.all(np.isfinite(full.energies))
    assert [row[3] for row in log_lines(log)] == ["nan"] * 5
    frames = read(path, ":")
    assert [f.info["step"] for f in frames] == [0, 1, 2, 3, 4]
    with pytest.raises(PropertyNotImplementedError):
        frames[-1].get_potential_energy()


def test_trajectory_frames_carry_the_record(tmp_path):
    path = tmp_path / "opt.extxyz"
    atoms = core_and_shell()
    calc = UncertainLJ(atoms.positions, **GOLD_LJ)
    result = optimize(atoms, calc, schedule=[("shell", 2), ("core", 2)], hessian_reset=3,
                      fmax=1e-3, steps=5, maxstep=0.05, trajectory=path)
    frames = read(path, ":")
    assert len(frames) == result.n_steps + 1 == 6
    assert [f.info["part"] for f in frames] == result.parts.tolist()
    assert [f.info["round"] for f in frames] == result.rounds.tolist()
    assert [f.info["hessian_reset"] for f in frames] == [k == 3 for k in range(6)]
    np.testing.assert_allclose([f.info["fmax"] for f in frames], result.fmax, rtol=1e-12)
    np.testing.assert_allclose([f.get_potential_energy() for f in frames], result.energies,
                               rtol=1e-12)
    # per-atom columns are written with eight decimals
    np.testing.assert_allclose([f.arrays["uncertainty"].max() for f in frames],
                               result.max_uncertainty, rtol=0, atol=5e-9)
    final = frames[-1]
    np.testing.assert_allclose(final.positions, result.atoms.positions, atol=1e-8)
    np.testing.assert_allclose(final.get_forces(), result.atoms.get_forces(), atol=1e-8)


# -- uncertainty ------------------------------------------------------------------------


def test_max_uncertainty_stops_the_run_where_it_is_crossed():
    atoms = argon13()
    calc = UncertainLJ(atoms.positions)
    result = optimize(atoms, calc, fmax=1e-4, steps=100, maxstep=0.002, max_uncertainty=0.01)
    assert result.stop_reason == "uncertainty" and not result.converged
    assert result.max_uncertainty[-1] > 0.01 >= result.max_uncertainty[:-1].max()
    assert result.uncertainty_stops == [(result.n_steps, "all")]
    assert 5 <= result.n_steps < 100  # steps of at most 0.002 Å need at least 5 to pass 0.01 Å
    assert np.array_equal(result.atoms.positions, calc.atoms.positions)  # kept where crossed


def test_max_uncertainty_stops_one_part_and_the_others_go_on():
    atoms = core_and_shell()
    shell = np.isin(gold_thiolate_types(atoms), SHELL_TYPES)
    # the shell's uncertainty grows as it moves; the core's is zero
    origin = atoms.positions.copy()

    class ShellUncertainty(UncertainLJ):
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.results["uncertainty"][~shell] = 0.0

    result = optimize(atoms, ShellUncertainty(origin, **GOLD_LJ),
                      schedule=[("shell", 50), ("core", 4)], fmax=1e-3, steps=40,
                      maxstep=0.02, max_uncertainty=0.05)
    first_stop, part = result.uncertainty_stops[0]
    assert part == "shell"
    assert set(result.parts[first_stop + 1:]) == {"core"}  # only the core moves on
    assert result.stop_reason == "steps"


def test_max_uncertainty_needs_a_calculator_that_gives_one():
    with pytest.raises(ValueError, match=r"max_uncertainty=0.1 needs .*LennardJones"):
        optimize(argon13(), LennardJones(), max_uncertainty=0.1, steps=2)


# -- resume ------------------------------------------------------------------------------

RESUME_CASES = {
    "parts": dict(schedule=[("shell", 3), ("core", 2)], hessian_reset=4),
    "round resets": dict(schedule=[("shell", 2), ("core", 3)], hessian_reset="round"),
    # the shell stops at frame 9, the core goes on until it stops too at frame 12
    "uncertainty": dict(schedule=[("shell", 3), ("core", 3)], max_uncertainty=0.25),
}


def _run(tmp_path, name, case, calc=None, **kwargs):
    atoms = core_and_shell()
    calc = UncertainLJ(atoms.positions, **GOLD_LJ) if calc is None else calc
    settings = dict(fmax=1e-3, steps=14, maxstep=0.05, trajectory=tmp_path / name)
    settings.update(RESUME_CASES[case], **kwargs)
    return optimize(atoms, calc, **settings)


class FailingUncertainLJ(UncertainLJ):
    def __init__(self, origin, fail_at, **lj):
        super().__init__(origin, **lj)
        self.fail_at, self.calls = fail_at, 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted(f"killed at force call {self.fail_at}")
        super().calculate(*args, **kwargs)


def _assert_same_run(resumed, reference, tmp_path, name):
    assert np.array_equal(resumed.atoms.positions, reference.atoms.positions)
    for field in ("fmax", "energies", "max_uncertainty", "parts", "rounds", "hessian_resets"):
        np.testing.assert_array_equal(getattr(resumed, field), getattr(reference, field))
    assert resumed.uncertainty_stops == reference.uncertainty_stops
    assert (resumed.stop_reason, resumed.n_steps) == (reference.stop_reason, reference.n_steps)
    text = (tmp_path / name).read_bytes()
    assert text == (tmp_path / "reference.extxyz").read_bytes()


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
@pytest.mark.parametrize("kill", [1, 2, 4, 6, 11])
def test_a_run_killed_at_a_force_call_resumes_to_the_same_end(tmp_path, case, kill):
    """Killed while computing frame ``kill - 1`` (call 1 is frame 0); resumed with a fresh
    calculator, the run ends bit for bit where the uninterrupted one does, with the same
    trajectory file byte for byte."""
    reference = _run(tmp_path, "reference.extxyz", case)
    assert reference.n_steps > 11
    if case == "uncertainty":
        assert reference.uncertainty_stops == [(9, "shell"), (12, "core")]
    origin = core_and_shell().positions
    with pytest.raises(Interrupted):
        _run(tmp_path, "run.extxyz", case, FailingUncertainLJ(origin, kill, **GOLD_LJ))
    counting = FailingUncertainLJ(origin, None, **GOLD_LJ)
    resumed = _run(tmp_path, "run.extxyz", case, counting, resume=True)
    _assert_same_run(resumed, reference, tmp_path, "run.extxyz")
    # it went on from the last checkpointed frame (kill - 2), recomputing only its forces
    done = max(kill - 2, 0)
    assert counting.calls == reference.n_steps - done + 1


@pytest.mark.parametrize("kill", [1, 3, 8])
def test_a_run_killed_between_frame_and_checkpoint_resumes(tmp_path, monkeypatch, kill):
    """Killed after a frame reached the trajectory and before its checkpoint, with a torn
    frame appended as an interrupted write leaves it: the extra bytes are cut off."""
    from mlmlearn.applications import optimize as module

    reference = _run(tmp_path, "reference.extxyz", "parts")
    original = module._Run._write_checkpoint
    calls = []

    def dying(self, opt):
        calls.append(1)
        if len(calls) == kill + 1:  # call 1 is the "nothing done" one, call k + 2 frame k's
            raise Interrupted("killed before the checkpoint")
        original(self, opt)

    monkeypatch.setattr(module._Run, "_write_checkpoint", dying)
    with pytest.raises(Interrupted):
        _run(tmp_path, "run.extxyz", "parts")
    monkeypatch.setattr(module._Run, "_write_checkpoint", original)
    with open(tmp_path / "run.extxyz", "ab") as fd:
        fd.write(b"21\nLattice=")
    counting = FailingUncertainLJ(core_and_shell().positions, None, **GOLD_LJ)
    resumed = _run(tmp_path, "run.extxyz", "parts", counting, resume=True)
    _assert_same_run(resumed, reference, tmp_path, "run.extxyz")
    # frame kill - 1 was on disk without its checkpoint: the run went on from frame kill - 2
    assert counting.calls == reference.n_steps - max(kill - 2, 0) + 1


def test_a_larger_step_limit_continues_a_finished_run(tmp_path):
    reference = _run(tmp_path, "reference.extxyz", "parts", steps=14)
    short = _run(tmp_path, "run.extxyz", "parts", steps=8)
    assert short.stop_reason == "steps" and short.n_steps == 8
    again = _run(tmp_path, "run.extxyz", "parts", steps=8, resume=True)  # nothing to do
    assert again.n_steps == 8 and np.array_equal(again.atoms.positions, short.atoms.positions)
    resumed = _run(tmp_path, "run.extxyz", "parts", steps=14, resume=True)
    _assert_same_run(resumed, reference, tmp_path, "run.extxyz")


def test_resume_without_a_checkpoint_starts_afresh(tmp_path):
    reference = _run(tmp_path, "reference.extxyz", "parts")
    resumed = _run(tmp_path, "run.extxyz", "parts", resume=True)
    _assert_same_run(resumed, reference, tmp_path, "run.extxyz")


def test_resume_refuses_a_changed_structure_or_setting(tmp_path):
    _run(tmp_path, "run.extxyz", "parts", steps=3)
    settings = dict(schedule=[("shell", 3), ("core", 2)], hessian_reset=4, fmax=1e-3,
                    maxstep=0.05, trajectory=tmp_path / "run.extxyz", resume=True)
    calc = LennardJones(**GOLD_LJ)
    fewer = core_and_shell()[:-1]
    with pytest.raises(ResumeError, match=r"atoms has 20 atoms .* written for 21 atoms"):
        optimize(fewer, calc, **settings)
    swapped = core_and_shell()
    swapped.numbers[-1] = 6  # a carbon for a sulfur: same count, another structure
    with pytest.raises(ResumeError, match="atoms has 21 atoms"):
        optimize(swapped, calc, **settings)
    moved = core_and_shell()
    moved.positions[5, 0] += 0.01
    with pytest.raises(ResumeError, match="atom 5 is 0.01 Å away from its start"):
        optimize(moved, calc, **settings)
    with pytest.raises(ResumeError, match=r"maxstep=0.1 differs from 0.05"):
        optimize(core_and_shell(), calc, **{**settings, "maxstep": 0.1})
    with pytest.raises(ResumeError, match=r"hessian_reset=None differs from 4"):
        optimize(core_and_shell(), calc, **{**settings, "hessian_reset": None})
    with pytest.raises(ResumeError, match="schedule="):
        optimize(core_and_shell(), calc, **{**settings, "schedule": [("shell", 4), ("core", 2)]})
    # a trajectory shorter than its checkpoint recorded, or frames with no checkpoint
    path = tmp_path / "run.extxyz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ResumeError, match="fewer than the .* its checkpoint recorded"):
        optimize(core_and_shell(), calc, **settings)
    os.remove(str(path) + ".checkpoint.npz")
    with pytest.raises(ResumeError, match="has frames but no checkpoint"):
        optimize(core_and_shell(), calc, **settings)


def test_checkpoint_is_replaced_atomically(tmp_path):
    """The checkpoint is complete after every frame, and no temporary file is left."""
    result = _run(tmp_path, "run.extxyz", "parts", steps=3)
    with np.load(result.checkpoint) as data:
        state = json.loads(str(data["state"]))
        assert state["k"] == 3 and state["traj_bytes"] == os.path.getsize(result.trajectory)
        assert np.array_equal(data["positions"], result.atoms.positions)
    assert sorted(os.listdir(tmp_path)) == ["run.extxyz", "run.extxyz.checkpoint.npz"]


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(schedule=[("ligands", 3)]), ValueError, r"schedule\[0\].*unknown part 'ligands'"),
        (dict(schedule=[("shell", 3), ("core", 0)]), ValueError,
         r"step count of schedule\[1\].* must be a positive integer"),
        (dict(schedule=[([0, 99], 3)]), ValueError, "atom index 99 is out of range for 21"),
        (dict(schedule=[(np.ones(5, bool), 3)]), ValueError, "one entry per atom"),
        (dict(schedule=[([], 3)]), ValueError, "part 'part0' is empty"),
        (dict(schedule=[]), ValueError, "schedule=.* non-empty list"),
        (dict(schedule="shell"), ValueError, "schedule='shell'"),
        (dict(schedule=[("shell", 3, 4, 5)]), ValueError, r"schedule\[0\]"),
        (dict(fmax=0), ValueError, "fmax=0"),
        (dict(steps=-1), ValueError, "steps=-1"),
        (dict(maxstep=float("nan")), ValueError, "maxstep=nan"),
        (dict(hessian_reset=0), ValueError, "hessian_reset=0"),
        (dict(hessian_reset="cycle"), ValueError, "hessian_reset='cycle'"),
        (dict(max_uncertainty=-1.0), ValueError, "max_uncertainty=-1.0"),
        (dict(trajectory="opt.traj"), ValueError, "trajectory='opt.traj'.*extended XYZ"),
        (dict(resume=True), ValueError, "resume=True needs the trajectory="),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimize(core_and_shell(), LennardJones(**GOLD_LJ), **kwargs)


def test_an_empty_named_part_names_its_types():
    ring = gold_thiolate_ring(4)  # unit gold only: no core
    with pytest.raises(ValueError, match=r"schedule\[1\].*'core' is empty.*\['Au_core'\]"):
        optimize(ring, LennardJones(), schedule=[("shell", 3), ("core", 2)])
    held = core_and_shell()
    held.set_constraint(FixAtoms(indices=range(13)))
    with pytest.raises(ValueError, match="'core' is empty: .*held by its own FixAtoms"):
        optimize(held, LennardJones(**GOLD_LJ), schedule=[("shell", 3), ("core", 2)])


def test_structure_and_calculator_are_checked():
    with pytest.raises(ValueError, match="calculator=None and atoms has no calculator"):
        optimize(argon13())
    with pytest.raises(TypeError, match="ase.Atoms"):
        optimize(argon13().positions, LennardJones())


# -- a real reference calculator -------------------------------------------------------


def test_gfn2_xtb_ring_steps_down_in_energy():
    """A few ML-sized steps (0.05 Å) of GFN2-xTB on the Au4(SCH3)4 ring: forces from tblite,
    the energy recorded, and it falls (a start 1 Å out of plane is far from the minimum)."""
    from threadpoolctl import threadpool_limits

    tblite = pytest.importorskip("tblite.ase")
    ring = gold_thiolate_ring(4)
    calc = tblite.TBLite(method="GFN2-xTB", verbosity=0)
    with threadpool_limits(1):  # 36 atoms: threads cost more than they give (0.08 s vs 2.7 s)
        result = optimize(ring, calc, schedule=[("shell", 3)], fmax=0.05, steps=3, maxstep=0.05)
    assert result.n_steps == 3 and np.all(np.isfinite(result.energies))
    assert result.energies[-1] < result.energies[0]
    assert np.all(np.linalg.norm(result.atoms.positions - ring.positions, axis=1) <= 0.15 + 1e-9)


def test_verbose_draws_a_progress_bar(capsys):
    optimize(argon13(), LennardJones(), fmax=1e-4, steps=3, maxstep=0.02, verbose=1)
    err = capsys.readouterr().err
    assert "optimize" in err and "3/3" in err


def test_a_smaller_step_limit_ends_an_interrupted_run_where_it_is(tmp_path):
    origin = core_and_shell().positions
    with pytest.raises(Interrupted):
        _run(tmp_path, "run.extxyz", "parts", FailingUncertainLJ(origin, 8, **GOLD_LJ))
    ended = _run(tmp_path, "run.extxyz", "parts", steps=4, resume=True)
    assert (ended.stop_reason, ended.n_steps) == ("steps", 6)  # frames 0-6 were checkpointed
