"""Molecular dynamics with any ASE calculator, written frame by frame to extxyz.

The output file *is* the checkpoint: each frame carries positions, momenta,
energy and forces, and the step it was taken at. Running the same call again
continues from the last complete frame, so an interrupted run loses at most the
frame being written.
"""

import io
import numbers
import os

import numpy as np

from .._progress import progress

__all__ = ["run_md", "read_frames"]

_INTEGRATORS = ("verlet", "langevin")


def run_md(
    atoms,
    calculator,
    output,
    *,
    n_steps,
    timestep=1.0,
    temperature=300.0,
    integrator="verlet",
    friction=0.01,
    initial_temperature=None,
    write_interval=1,
    seed=0,
    verbose=0,
):
    """Run molecular dynamics and append every ``write_interval``-th frame to ``output``.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (positions in Å). Not modified.
    calculator : ase.calculators.calculator.Calculator
        Any ASE calculator giving energy (eV) and forces (eV/Å), e.g.
        ``tblite.ase.TBLite(method="GFN2-xTB")``. Every frame written carries
        the total charge of the calculation — the calculator's ``charge``
        parameter if it has one, else the sum of ``atoms``' initial charges —
        as ``info["charge"]`` and as initial charges summing to it, so that a
        fresh calculator attached to a frame computes the same system.
    output : str or path-like
        Extended XYZ file. If it already holds frames of this run, the run
        continues from the last complete one (a truncated last frame from an
        interrupted write is discarded).
    n_steps : int
        Total number of MD steps of the run (including those already on disk).
    timestep : float, default=1.0
        Time step in fs.
    temperature : float, tuple of two floats or callable, default=300.0
        Target temperature in K for ``integrator="langevin"``: a constant, a
        linear ramp ``(T_start, T_end)`` over the run (a heating run), or a
        function ``step -> T``. For ``"verlet"`` (NVE) it only sets the
        Maxwell–Boltzmann start unless ``initial_temperature`` is given.
    integrator : {"verlet", "langevin"}, default="verlet"
        ASE's ``VelocityVerlet`` (NVE) or ``Langevin`` (NVT).
    friction : float, default=0.01
        Langevin friction in 1/fs.
    initial_temperature : float, default=None
        Temperature in K of the Maxwell–Boltzmann start (momenta drawn with
        ``seed``, centre-of-mass motion and rotation removed). Defaults to the
        target temperature at step 0.
    write_interval : int, default=1
        Write a frame every this many steps (step 0 is always written).
    seed : int, default=0
        Seed of the start velocities and of the Langevin noise. The noise of
        step ``k`` depends only on ``(seed, k)``, so a resumed run draws the
        same noise as an uninterrupted one.
    verbose : int, default=0
        Show a progress bar.

    Returns
    -------
    n_frames : int
        Number of frames in ``output`` when the run ends.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from ase.calculators.emt import EMT
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "md.extxyz")
    >>> run_md(molecule("CH4"), EMT(), path, n_steps=4, timestep=0.5,
    ...        temperature=300.0, seed=1)
    5
    >>> frames = read_frames(path)
    >>> frames[-1].info["step"], frames[-1].get_forces().shape
    (4, (5, 3))
    """
    from .._optional import import_optional

    units = import_optional("ase.units", purpose="run_md")
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import (
        MaxwellBoltzmannDistribution,
        Stationary,
        ZeroRotation,
    )
    from ase.md.verlet import VelocityVerlet

    if integrator not in _INTEGRATORS:
        raise ValueError(f"integrator={integrator!r} is not one of {_INTEGRATORS}")
    for name, value in (("n_steps", n_steps), ("write_interval", write_interval)):
        if not isinstance(value, numbers.Integral) or value < (name == "write_interval"):
            raise ValueError(f"{name}={value!r} must be a non-negative integer")
    if not timestep > 0:
        raise ValueError(f"timestep={timestep!r} must be positive (fs)")
    target = _temperature_schedule(temperature, n_steps)

    output = os.fspath(output)
    frames = read_frames(output, repair=True) if os.path.exists(output) else []
    signature = {
        "md_integrator": integrator,
        "md_timestep_fs": float(timestep),
        "md_seed": int(seed),
        "md_n_steps": int(n_steps),
    }
    atoms = atoms.copy()
    charge = _total_charge(atoms, calculator)
    if frames:
        last = frames[-1]
        for key, value in signature.items():
            if last.info.get(key) != value:
                raise ValueError(
                    f"{output!r} holds a run with {key}={last.info.get(key)!r}, not {value!r}; "
                    "use another output file or the original settings to continue it"
                )
        if len(last) != len(atoms) or np.any(last.numbers != atoms.numbers):
            raise ValueError(f"{output!r} holds frames of a different structure")
        if "charge" in last.info and last.info["charge"] != charge:
            raise ValueError(
                f"{output!r} holds a run with charge={last.info['charge']!r}, not {charge!r}"
            )
        atoms.set_positions(last.positions)
        atoms.set_momenta(last.get_momenta())
        step = int(last.info["step"])
    else:
        t0 = target(0) if initial_temperature is None else initial_temperature
        rng = np.random.default_rng([int(seed), 2**31 - 1])
        MaxwellBoltzmannDistribution(atoms, temperature_K=t0, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
        step = 0

    atoms.calc = calculator
    dt = timestep * units.fs
    if integrator == "verlet":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        dyn = Langevin(
            atoms,
            timestep=dt,
            temperature_K=target(step),
            friction=friction / units.fs,
            rng=_StepNoise(seed, lambda: step),
        )

    n_frames = len(frames)
    with open(output, "a") as fd:
        if not frames:
            _write_frame(fd, atoms, step, timestep, target(step), signature, charge)
            n_frames += 1
        bar = progress(
            range(step, n_steps),
            verbose=verbose,
            total=n_steps - step,
            desc=os.path.basename(output),
        )
        for step in bar:
            if integrator == "langevin":
                dyn.set_temperature(temperature_K=target(step))
            dyn.run(1)
            if (step + 1) % write_interval == 0 or step + 1 == n_steps:
                _write_frame(fd, atoms, step + 1, timestep, target(step + 1), signature, charge)
                n_frames += 1
    return n_frames


def read_frames(path, *, repair=False):
    """Read all complete frames of an extxyz file written by :func:`run_md`.

    Parameters
    ----------
    path : str or path-like
        Extended XYZ file.
    repair : bool, default=False
        Cut an incomplete last frame (from an interrupted write) off the file
        instead of ignoring it.

    Returns
    -------
    frames : list of ase.Atoms
        With energy (eV) and forces (eV/Å) as single-point results, momenta,
        and ``info`` keys ``step``, ``time_fs``, ``temperature_K`` and the
        total ``charge`` (e; also the sum of the initial charges, where a
        calculator reads it).
    """
    from .._optional import import_optional

    read = import_optional("ase.io", purpose="read_frames").read

    path = os.fspath(path)
    end = _complete_length(path)
    if repair and end < os.path.getsize(path):
        with open(path, "r+b") as fd:
            fd.truncate(end)
    if end == 0:
        return []
    with open(path, "rb") as fd:
        text = fd.read(end).decode()
    frames = read(io.StringIO(text), index=":", format="extxyz")
    for frame in frames:  # numpy scalars from the extxyz parser -> Python numbers
        frame.info = {
            k: v.item() if isinstance(v, np.generic) else v for k, v in frame.info.items()
        }
    return frames


def _complete_length(path):
    """Byte length of the leading complete XYZ frames of ``path``."""
    good = 0
    with open(path, "rb") as fd:
        while True:
            header = fd.readline()
            if not header.strip():
                return good
            try:
                n_atoms = int(header)
            except ValueError:
                return good
            lines = [fd.readline() for _ in range(n_atoms + 1)]
            if not lines or not all(line.endswith(b"\n") for line in lines):
                return good
            good = fd.tell()


def _write_frame(fd, atoms, step, timestep, temperature, signature, charge):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frame = atoms.copy()
    _set_total_charge(frame, charge)
    frame.calc = SinglePointCalculator(
        frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
    )
    frame.info.update(signature)
    frame.info.update(
        step=int(step), time_fs=float(step * timestep), temperature_K=float(temperature)
    )
    write(fd, frame, format="extxyz")
    fd.flush()
    os.fsync(fd.fileno())


def _set_total_charge(atoms, charge):
    """Give ``atoms`` the total ``charge`` (e) the way ASE calculators and extxyz read it.

    tblite's (and xtb-python's) ASE calculator takes the total charge from
    ``sum(atoms.get_initial_charges())`` when it is given none; extxyz codes use
    ``atoms.info["charge"]``. Both are set. Initial charges that already sum to
    ``charge`` are kept; otherwise the whole charge is put on atom 0 (only the
    sum has a meaning here, and a whole number survives text formats exactly).
    Removing atom 0 afterwards removes that charge with it while
    ``info["charge"]`` stays (documented in the loaders' Notes and the data README).

    Call it *before* attaching a calculator's results: ASE counts a change of
    the initial charges as a change of the structure.
    """
    current = atoms.get_initial_charges()
    if abs(current.sum() - charge) > 1e-9:
        if len(atoms) == 0:
            raise ValueError(f"an empty structure cannot carry a charge of {charge!r} e")
        initial = np.zeros(len(atoms))
        initial[0] = charge
        atoms.set_initial_charges(initial)
    atoms.info["charge"] = charge


def _total_charge(atoms, calculator):
    """The total charge (e) ``calculator`` computes ``atoms`` with.

    A ``charge`` parameter of the calculator (tblite's, xtb's) wins; otherwise
    the sum of the initial charges, as those calculators read it.
    """
    parameters = getattr(calculator, "parameters", None) or {}
    charge = parameters.get("charge")
    if charge is None:
        charge = atoms.get_initial_charges().sum()
    charge = float(charge)
    return int(round(charge)) if abs(charge - round(charge)) < 1e-9 else charge


def _temperature_schedule(temperature, n_steps):
    if callable(temperature):
        return lambda step: float(temperature(step))
    if np.ndim(temperature) == 1 and len(temperature) == 2:
        t_start, t_end = map(float, temperature)
        _check_temperature(t_start)
        _check_temperature(t_end)
        return lambda step: t_start + (t_end - t_start) * step / max(n_steps, 1)
    if np.ndim(temperature) != 0:
        raise ValueError(
            f"temperature={temperature!r} must be a number, a (start, end) pair or a callable"
        )
    _check_temperature(temperature)
    return lambda step: float(temperature)


def _check_temperature(value):
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"temperature={value!r} must be a finite, non-negative number (K)")


class _StepNoise:
    """Gaussian noise for ASE's Langevin that depends only on ``(seed, step)``."""

    def __init__(self, seed, current_step):
        self.seed = int(seed)
        self.current_step = current_step
        self._calls = {}

    def standard_normal(self, size=None):
        step = self.current_step()
        call = self._calls.get(step, 0)
        self._calls = {step: call + 1}
        return np.random.default_rng([self.seed, step, call]).standard_normal(size)
