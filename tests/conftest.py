"""Reusable physics checks, offered as fixtures (see ``assert_symmetries``), and the
hypothesis profiles.

Property-based tests draw their examples from a fixed seed by default, so the suite the
README and CI run gives the same verdict every time; ``HYPOTHESIS_PROFILE=explore`` draws
fresh random examples (and more of them) to look for new failures.
"""

import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
else:
    settings.register_profile("default", derandomize=True)
    settings.register_profile("explore", derandomize=False, max_examples=200)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _assert_symmetries(describe, atoms, *, local, seed=0, rtol=1e-7, atol=1e-9):
    """``describe`` is invariant under rotation, translation and atom permutation.

    ``describe(atoms)`` returns one row per atom (``local=True``; rows follow
    the atoms, so a permutation permutes them) or one vector per structure.
    """
    rng = np.random.default_rng(seed)
    reference = np.asarray(describe(atoms))
    assert np.all(np.isfinite(reference))
    scale = np.abs(reference).max()

    def check(other, order=None, what=""):
        got = np.asarray(describe(other))
        if local and order is not None:
            got = got[np.argsort(order)]
        np.testing.assert_allclose(
            got,
            reference,
            rtol=rtol,
            atol=atol * max(scale, 1.0),
            err_msg=f"not invariant under {what}",
        )

    rotated = atoms.copy()
    rotation = Rotation.random(random_state=seed)
    rotated.positions = rotation.apply(atoms.positions - atoms.positions.mean(0))
    check(rotated, what="rotation")

    moved = atoms.copy()
    moved.positions += rng.normal(scale=10.0, size=3)
    check(moved, what="translation")

    order = rng.permutation(len(atoms))
    check(atoms[order], order=order, what="permutation")

    mirrored = atoms.copy()
    mirrored.positions[:, 0] *= -1
    check(mirrored, what="reflection")


@pytest.fixture
def assert_symmetries():
    """The descriptor check: rotation, translation, permutation, reflection."""
    return _assert_symmetries


@pytest.fixture(scope="session")
def shared_structures():
    """Paths of ../shared/structures, or skip when the shared folder is absent."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1].parent / "shared" / "structures"
    if not root.is_dir():
        pytest.skip(f"{root} is not present (it sits beside the repository in CI)")
    return root
