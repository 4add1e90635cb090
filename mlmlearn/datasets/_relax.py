"""Reference relaxations with any ASE calculator, every BFGS step written to extxyz.

As in :mod:`~mlmlearn.datasets._md`, the output file is the checkpoint: each
frame carries positions, energy and forces, the optimizer step and where the
path started from. Beside it, ASE's BFGS restart file (``<output>.bfgs.json``:
Hessian, last positions and forces, step limit) lets an interrupted path resume
*exactly* — the next step taken is the one the uninterrupted run would have
taken (up to the SCC convergence of the first single point, which starts cold).
A finished path gets a summary file ``<output>.summary.json`` and is not rerun.

Single points that fail (an ``ase.calculators.calculator.CalculationFailed``,
e.g. "SCF not converged", or no result within ``timeout`` seconds — each path
runs in a child process that is killed then) are retried from the last good
frame with the same BFGS Hessian and a shorter step: ``maxstep`` becomes half the
largest atomic displacement of the failed step (at least ``min_maxstep``), and
the path is given up after ``max_failures`` failures.
"""

import json
import multiprocessing
import os
import time

import numpy as np

__all__ = ["run_relaxation"]


def run_relaxation(
    atoms,
    calculator,
    output,
    *,
    fmax,
    max_steps,
    maxstep=0.2,
    source_run="",
    source_step=-1,
    timeout=None,
    max_failures=4,
    min_maxstep=0.005,
    divergence=None,
):
    """Relax ``atoms`` with ASE's BFGS and append every step to ``output``.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (positions in Å). Not modified.
    calculator : ase.calculators.calculator.Calculator or callable
        An ASE calculator (energy in eV, forces in eV/Å), or a function of no
        arguments returning one (needed with ``timeout``, where the path runs
        in a child process; e.g. ``functools.partial(TBLite, method="GFN2-xTB")``).
    output : str or path-like
        Extended XYZ file; an existing one is continued.
    fmax : float
        Convergence: largest atomic force (eV/Å).
    max_steps : int
        Largest optimizer step (the start is step 0). A path that ended at an
        earlier ``max_steps`` is continued when asked for more.
    maxstep : float, default=0.2
        BFGS's largest atomic displacement per step (Å) at the start.
    source_run, source_step : str and int
        Where the start structure came from (an MD run and its step, or
        ``"built"`` and -1); written on every frame.
    timeout : float, default=None
        Seconds a single point may take before it counts as failed; the path
        then runs in a child process (spawned; ``calculator`` must be picklable).
    max_failures : int, default=4
        Failed single points tolerated before the path is given up.
    min_maxstep : float, default=0.005
        The shortest ``maxstep`` (Å) a retry is given.
    divergence : (float, float), default=None
        ``(reached, left)`` in eV/Å: stop the path (status ``"diverged"``) at
        the first frame whose largest force exceeds ``left`` once an earlier
        frame's was below ``reached``. GFN2-xTB drives some gold rings, after
        they have nearly relaxed, into a collapse of the gold atoms onto each
        other where the energy falls by eV per step under forces of 5–20 eV/Å
        until the SCF fails; that frame is kept, nothing after it is computed.

    Returns
    -------
    summary : dict
        ``converged``, ``fmax_reached`` (eV/Å, last frame), ``n_steps``, ``n_frames``,
        ``failures`` (one entry per failed single point: step, kind, message,
        the maxstep after it), ``final_maxstep``, ``status``
        (``"converged"``, ``"max_steps"``, ``"diverged"`` or ``"failed"``) and ``wall_time_s``
        (of the calls that ran it; an interrupted call's time is not counted).
        Also written to ``<output>.summary.json``.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from ase.calculators.emt import EMT
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "relax.extxyz")
    >>> summary = run_relaxation(molecule("CH4"), EMT(), path, fmax=0.05, max_steps=50,
    ...                          source_run="built")
    >>> summary["converged"], summary["n_frames"] == summary["n_steps"] + 1
    (True, True)
    """
    output = os.fspath(output)
    summary_path = output + ".summary.json"
    if os.path.exists(summary_path):
        with open(summary_path) as fd:
            summary = json.load(fd)
        done = summary.get("max_steps", summary.get("relax_max_steps"))
        if summary["status"] != "max_steps" or done >= max_steps:
            return summary
        previous_time = summary["wall_time_s"]
        os.remove(summary_path)  # a longer path asked for: continue it
    else:
        previous_time = 0.0
    state_path = output + ".failures.json"
    failures = _read_json(state_path, [])
    current_maxstep = failures[-1]["maxstep_after"] if failures else float(maxstep)
    settings = {
        "relax_fmax": float(fmax),
        "source_run": str(source_run),
        "source_step": int(source_step),
    }
    tic = time.perf_counter()
    status = None
    while status is None:
        if timeout is None:
            outcome = _relax(atoms, calculator, output, settings, current_maxstep, divergence,
                             max_steps)
        else:
            outcome = _relax_in_child(atoms, calculator, output, settings, current_maxstep,
                                      divergence, max_steps, timeout)
        if outcome["kind"] == "done":
            status = outcome["status"]
            break
        trial = _read_json(output + ".trial.json", {})
        failed_step = trial.get("step", -1)
        shorter = max(
            0.5 * min(current_maxstep, trial.get("max_displacement", current_maxstep)),
            min_maxstep,
        )
        failures.append({
            "step": failed_step,
            "kind": outcome["kind"],
            "message": outcome["message"][:200],
            "maxstep_after": shorter,
        })
        _write_json(state_path, failures)
        current_maxstep = shorter
        if len(failures) > max_failures:
            status = "failed"

    from ._md import read_frames

    frames = read_frames(output, repair=True) if os.path.exists(output) else []
    fmax_reached = (
        float(np.linalg.norm(frames[-1].get_forces(), axis=1).max()) if frames else float("nan")
    )
    summary = {
        "status": status,
        "converged": status == "converged",
        "fmax_reached": fmax_reached,
        "n_steps": int(frames[-1].info["step"]) if frames else 0,
        "n_frames": len(frames),
        "failures": failures,
        "final_maxstep": current_maxstep,
        "wall_time_s": round(previous_time + time.perf_counter() - tic, 1),
        "max_steps": int(max_steps),
        **settings,
    }
    _write_json(summary_path, summary)
    return summary


def _read_json(path, default):
    if not os.path.exists(path):
        return default
    try:
        with open(path) as fd:
            return json.load(fd)
    except ValueError:  # cut short by an interruption
        return default


def _write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as fd:
        json.dump(data, fd, indent=1)
    os.replace(tmp, path)


def _relax_in_child(atoms, calculator, output, settings, maxstep, divergence, max_steps,
                    timeout):
    """Run :func:`_relax` in a spawned process; a failure if no frame comes for ``timeout`` s."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    ready = context.Event()
    process = context.Process(
        target=_child,
        args=(queue, ready, atoms, calculator, output, settings, maxstep, divergence, max_steps),
    )
    process.start()
    while process.is_alive() and not ready.wait(1.0):
        pass  # start-up (imports) is not a single point: the clock starts when it is done
    last_size, last_change = -1, time.monotonic()
    while process.is_alive():
        process.join(1.0)
        size = os.path.getsize(output) if os.path.exists(output) else 0
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > timeout:
            process.kill()
            process.join()
            return {"kind": "timeout", "message": f"no new frame within {timeout} s"}
    if not queue.empty():
        return queue.get()
    # not a failed single point but an error (its traceback is on stderr): stop here
    raise RuntimeError(f"relaxation of {output!r} stopped: child exited with code "
                       f"{process.exitcode}")


def _child(queue, ready, atoms, calculator, output, settings, maxstep, divergence, max_steps):
    from ase.optimize import BFGS  # noqa: F401 - imported before the clock starts
    from threadpoolctl import threadpool_limits

    from ._md import read_frames  # noqa: F401

    ready.set()
    with threadpool_limits(1):
        queue.put(_relax(atoms, calculator, output, settings, maxstep, divergence, max_steps))


def _relax(atoms, calculator, output, settings, maxstep, divergence, max_steps):
    """One attempt: continue the path of ``output`` until it ends or a single point fails."""
    from ase.calculators.calculator import CalculationFailed, Calculator
    from ase.optimize import BFGS

    from ._md import _set_total_charge, _total_charge, read_frames

    if not isinstance(calculator, Calculator):
        calculator = calculator()
    frames = read_frames(output, repair=True) if os.path.exists(output) else []
    atoms = atoms.copy()
    atoms.info = {}
    charge = _total_charge(atoms, calculator)
    _set_total_charge(atoms, charge)
    restart = output + ".bfgs.json"
    if frames:
        last = frames[-1]
        for key, value in settings.items():
            if last.info.get(key) != value:
                raise ValueError(
                    f"{output!r} holds a path with {key}={last.info.get(key)!r}, not {value!r}"
                )
        if len(last) != len(atoms) or np.any(last.numbers != atoms.numbers):
            raise ValueError(f"{output!r} holds frames of a different structure")
        atoms.set_positions(_full_precision(last.positions, output))
        step = int(last.info["step"])
    else:
        step = 0
        if os.path.exists(restart):
            os.remove(restart)
    atoms.calc = calculator

    trial_path = output + ".trial.json"

    class _BFGS(BFGS):
        def determine_step(self, dpos, steplengths):
            dpos = super().determine_step(dpos, steplengths)
            _write_json(trial_path, {
                "step": self.nsteps + 1,
                "max_displacement": float(np.max(self.optimizable.gradient_norm(dpos))),
                "positions": (atoms.positions + dpos.reshape(-1, 3)).tolist(),
            })
            return dpos

    try:
        opt = _BFGS(atoms, logfile=None, maxstep=maxstep, restart=restart)
    except Exception:  # an unreadable restart file: start the Hessian afresh at the last frame
        os.remove(restart)
        opt = _BFGS(atoms, logfile=None, maxstep=maxstep, restart=restart)
    opt.maxstep = maxstep  # a retry's shorter step wins over the restart file's
    opt.nsteps = step

    written = [step if frames else -1]
    lowest = [min((_fmax(f.get_forces()) for f in frames), default=np.inf)]
    with open(output, "a") as fd:

        def write():
            if opt.nsteps > written[0]:  # irun calls the observers at step 0 of every run
                _write_relaxation_frame(fd, atoms, opt.nsteps, settings, charge, opt.maxstep)
                written[0] = opt.nsteps
                fmax = _fmax(atoms.get_forces())
                lowest[0] = min(lowest[0], fmax)
                if _diverged(fmax, lowest[0], divergence):
                    raise _Diverged

        try:
            opt.attach(write)
            converged = opt.run(fmax=settings["relax_fmax"], steps=max(max_steps - step, 0))
        except CalculationFailed as error:
            return {"kind": "scf", "message": str(error)}
        except _Diverged:
            return {"kind": "done", "status": "diverged"}
    last = read_frames(output)[-1]
    if _diverged(_fmax(last.get_forces()), lowest[0], divergence):  # ended so before
        return {"kind": "done", "status": "diverged"}
    if not converged:
        forces = last.get_forces()
        converged = float(np.linalg.norm(forces, axis=1).max()) < settings["relax_fmax"]
    return {"kind": "done", "status": "converged" if converged else "max_steps"}


def _full_precision(positions, output):
    """``positions`` of the last frame (8 decimals in extxyz) as the optimizer had them.

    They are the trial positions of the last step taken, or BFGS's last
    positions in the restart file; either is used where it rounds to
    ``positions``. Resuming from rounded positions would perturb every later
    step by about 1e-8 Å, which BFGS amplifies to 1e-5 Å over tens of steps.
    """
    candidates = [_read_json(output + ".trial.json", {}).get("positions")]
    if os.path.exists(output + ".bfgs.json"):
        from ase.io.jsonio import read_json

        try:
            with open(output + ".bfgs.json") as fd:
                candidates.append(read_json(fd, always_array=False)[1])
        except Exception:  # an unreadable restart file is started afresh by the caller
            pass
    for candidate in candidates:
        if candidate is None:
            continue
        candidate = np.reshape(np.asarray(candidate, dtype=float), np.shape(positions))
        if np.abs(candidate - positions).max() < 1e-7:
            return candidate
    return positions


class _Diverged(Exception):
    """The path left the basin it had nearly reached (see ``divergence``)."""


def _fmax(forces):
    return float(np.linalg.norm(forces, axis=1).max())


def _diverged(fmax, lowest, divergence):
    return divergence is not None and lowest < divergence[0] and fmax > divergence[1]


def _write_relaxation_frame(fd, atoms, step, settings, charge, maxstep):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from ._md import _set_total_charge

    frame = atoms.copy()
    _set_total_charge(frame, charge)
    frame.calc = SinglePointCalculator(
        frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
    )
    frame.info.update(settings)
    frame.info.update(step=int(step), temperature_K=0.0, bfgs_maxstep=float(maxstep))
    write(fd, frame, format="extxyz")
    fd.flush()
    os.fsync(fd.fileno())
