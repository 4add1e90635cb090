"""Replica exchange: Boltzmann at every temperature, exact resumption, MPI equals serial."""

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ase")

from ase import units  # noqa: E402
from ase.calculators.calculator import Calculator, all_changes  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.cluster import Icosahedron  # noqa: E402

from mlmlearn.applications.montecarlo import AtomMoves, ReplicaExchange  # noqa: E402
from mlmlearn.datasets import gold_thiolate_ring  # noqa: E402


class HarmonicWells(Calculator):
    implemented_properties = ["energy"]

    def __init__(self, centres, k, wells):
        super().__init__()
        self.centres, self.k, self.wells = centres.copy(), k, np.asarray(wells)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions[self.wells] - self.centres[self.wells]
        self.results = {"energy": 0.5 * self.k * float(np.sum(d * d))}


def test_every_temperature_keeps_its_boltzmann_distribution():
    atoms = gold_thiolate_ring(4)
    heavy = np.flatnonzero(atoms.numbers != 1)
    temperatures = [300.0, 420.0, 600.0]
    rex = ReplicaExchange(atoms, temperatures,
                          calculator=lambda: HarmonicWells(atoms.positions, 5.0, heavy),
                          exchange_interval=5, step_size=0.05, random_state=3)
    rex.equilibrate(100)
    rex.run(1500)
    assert np.all(rex.accepted > 0) and np.all(rex.accepted < rex.attempts)
    for i, T in enumerate(temperatures):
        e = np.array(rex.energies[i][100:]) / (units.kB * T)
        blocks = np.array([b.mean() for b in np.array_split(e, 20)])
        error = blocks.std(ddof=1) / math.sqrt(20)
        # 36 harmonic coordinates: <E> = 18 kT at each temperature
        assert abs(e.mean() - 18.0) < 4 * error + 0.05, (T, e.mean(), error)


class _Interrupting(EMT):
    calls = 0

    def __init__(self, at):
        super().__init__()
        self.at = at

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == self.at:
            raise KeyboardInterrupt
        super().calculate(*args, **kwargs)


def _run(folder, calculator, steps=(6, 14)):
    start = Icosahedron("Cu", 2)
    start.rattle(0.02, seed=1)
    rex = ReplicaExchange(start, [300.0, 340.0, 380.0], calculator=calculator,
                          moves=AtomMoves(), exchange_interval=4,
                          trajectory=str(folder / "rex_{temperature:.0f}K.extxyz"),
                          random_state=7)
    rex.equilibrate(steps[0])
    rex.run(steps[1])
    return rex


@pytest.mark.parametrize("at", [100, 400, 760])  # of 783 calculations
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, at):
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole = _run(tmp_path / "whole", EMT)
    _Interrupting.calls = 0
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", lambda: _Interrupting(at))
    resumed = _run(tmp_path / "cut", EMT)
    for T in (300, 340, 380):
        name = f"rex_{T}K.extxyz"
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert resumed.energies == whole.energies
    assert resumed.accepted.tolist() == whole.accepted.tolist()
    assert whole.accepted.sum() > 0  # swaps happened: the resumption covered them


def test_refused_settings():
    atoms = Icosahedron("Cu", 2)
    with pytest.raises(ValueError, match="increasing"):
        ReplicaExchange(atoms, [500.0, 300.0], calculator=EMT, moves=AtomMoves())
    with pytest.raises(ValueError, match="one of them"):
        ReplicaExchange(atoms, [300.0, 500.0], moves=AtomMoves())
    with pytest.raises(ValueError, match="temperature"):
        ReplicaExchange(atoms, [300.0, 500.0], calculator=EMT, moves=AtomMoves(),
                        trajectory="rex.extxyz")


JOB = """
import sys
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron
from mpi4py import MPI
from mlmlearn.applications.montecarlo import AtomMoves, ReplicaExchange

start = Icosahedron("Cu", 2)
start.rattle(0.02, seed=1)
rex = ReplicaExchange(start, [300.0, 340.0, 380.0], calculator=EMT, moves=AtomMoves(),
                      exchange_interval=4, comm=MPI.COMM_WORLD, random_state=7,
                      trajectory=sys.argv[1] + "/rex_{temperature:.0f}K.extxyz")
rex.equilibrate(6)
rex.run(14)
if MPI.COMM_WORLD.Get_rank() == 0:
    print(sorted(rex.replicas), rex.accepted.tolist(), repr(rex.energies[2][-1]))
"""


def test_two_mpi_ranks_give_the_serial_run(tmp_path):
    pytest.importorskip("mpi4py")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip(f"no mpiexec beside {sys.executable}")
    import mlmlearn

    (tmp_path / "serial").mkdir()
    (tmp_path / "mpi").mkdir()
    serial = _run(tmp_path / "serial", EMT)
    assert serial.accepted.sum() > 0
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(JOB))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [str(Path(mlmlearn.__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH", "")] if p)}
    with subprocess.Popen([str(mpiexec), "-n", "2", sys.executable, str(script),
                           str(tmp_path / "mpi")], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as job:
        try:
            out, err = job.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
            raise
    assert job.returncode == 0, err
    # rank 0 ran temperatures 0 and 2, rank 1 temperature 1; the results are the serial ones
    assert out.strip() == f"[0, 2] {serial.accepted.tolist()} {serial.energies[2][-1]!r}"
    for T in (300, 340, 380):
        name = f"rex_{T}K.extxyz"
        assert (tmp_path / "mpi" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()
