"""Optional packages: a core install imports everything and says which extra each use needs.

The core install has numpy, scipy and scikit-learn (and joblib, threadpoolctl) only.
The subprocess test below blocks the optional packages with a meta-path finder
before ``mlmlearn`` is first imported — the state of a fresh core install, which
monkeypatching ``sys.modules`` after the package was imported cannot reproduce —
and checks three things:

* ``import mlmlearn.atoms`` (the issue's input) and every other subpackage import
  without touching an optional package: they are imported where used, so the
  module docstrings, the exceptions and the core estimators stay reachable;
* every public entry point that needs one raises ``ModuleNotFoundError`` naming
  the package, the extra and the ``pip install ".[extra]"`` command (never a bare
  ``No module named 'ase'``);
* the core estimators fit and predict with all of them missing.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlmlearn._optional import EXTRAS, import_optional

#: Blocked in the core-install subprocess (tqdm is left alone: it may be a core package).
BLOCKED = ("ase", "dscribe", "numba", "tblite", "mpi4py", "matplotlib")

#: The subpackages a user imports; none may import an optional package on import.
MODULES = [
    "mlmlearn",
    "mlmlearn.atoms",
    "mlmlearn.datasets",
    "mlmlearn.datasets.generate",
    "mlmlearn.oamlm",
    "mlmlearn.model_selection",
    "mlmlearn.applications.tem",
    "mlmlearn.metrics",
    "mlmlearn.plotting",
]

#: ``(name, call, package, extra)``: each public entry point and what it must name.
#: ``call`` is evaluated in the subprocess (see ``_SCRIPT`` for the names it uses).
ENTRY_POINTS = [
    ("load_alkanes", "datasets.load_alkanes()", "ase", "atoms"),
    ("load_gold_thiolate_rings", "datasets.load_gold_thiolate_rings()", "ase", "atoms"),
    ("load_au25", "datasets.load_au25(include_broken=True)", "ase", "atoms"),
    ("frame_integrity", "datasets.frame_integrity([])", "ase", "atoms"),
    ("linear_alkane", "datasets.linear_alkane(3)", "ase", "atoms"),
    ("gold_thiolate_ring", "datasets.gold_thiolate_ring(4)", "ase", "atoms"),
    ("read_frames", "datasets.read_frames('frames.extxyz')", "ase", "atoms"),
    ("run_md", "datasets.run_md(None, None, 'md.extxyz', n_steps=1)", "ase", "atoms"),
    (
        "python -m mlmlearn.datasets.generate",
        "generate.main(['alkanes', '--workdir', 'md', '--output', 'alkanes.npz'])",
        "ase",
        "atoms",
    ),
    ("generate_au25", "recipes.generate_au25('start.xyz', 'md')", "ase", "atoms"),
    ("AtomicEnvironments", "atoms.AtomicEnvironments([])", "ase", "atoms"),
    ("AtomicEnvironments.read", "atoms.AtomicEnvironments.read('frames.extxyz')", "ase", "atoms"),
    ("SOAP.fit", "atoms.SOAP().fit([])", "ase", "atoms"),
    ("MBTR.fit", "atoms.MBTR().fit([])", "ase", "atoms"),
    ("OAMLM.fit", "oamlm.OAMLM(atoms.SOAP()).fit(Environments(), np.ones((1, 3)))", "ase", "atoms"),
    (
        "PermutationAlignment.align",
        "oamlm.PermutationAlignment(2).align(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))",
        "numba",
        "atoms",
    ),
    ("GoldThiolateAlignment.align", "gold_align(0)", "numba", "atoms"),  # hydrogen rule
    ("GoldThiolateAlignment.align (core gold)", "gold_align(6)", "numba", "atoms"),
    ("MPIBackend", "model_selection.MPIBackend()", "mpi4py", "mpi"),
    ("joblib.parallel_backend('mpi')", "mpi_backend()", "mpi4py", "mpi"),
    ("plot_similarities", "tem.plot_similarities([0.5, 0.6], ['a', 'b'])", "matplotlib", "plot"),
    ("plot_scores", "tem.plot_scores([1.0, 0.5])", "matplotlib", "plot"),
    ("plot_angles", "tem.plot_angles([1.0, 2.0])", "matplotlib", "plot"),
    ("plot_directions", "tem.plot_directions(np.eye(3), [1.0, 0.5, 0.2])", "matplotlib", "plot"),
    ("plot_energy_trace", "plotting.plot_energy_trace([1.0, 0.5])", "matplotlib", "plot"),
    ("plot_force_parity", "plotting.plot_force_parity(np.eye(3), np.eye(3), list('SCH'))",
     "matplotlib", "plot"),
    ("plot_angle_vs_norm", "plotting.plot_angle_vs_norm(np.eye(3), np.eye(3), list('SCH'))",
     "matplotlib", "plot"),
    ("xTB calculator of the data recipes", "recipes._tblite('GFN2-xTB')", "tblite", "xtb"),
]

#: Core work that must run with every optional package missing.
CORE = {
    "EMLM": "EMLM(references=10).fit(X, y).predict(X[:3])",
    "MLM": "MLM(references=10).fit(X, y).predict(X[:3])",
    "HuberMLM": "HuberMLM(references=10).fit(X, y).predict(X[:3])",
    "RSMaximin": "RSMaximin(n_references=5).fit(X).transform(X[:3])",
    "RandomReferences": "RandomReferences(n_references=5, random_state=0).fit(X).transform(X[:3])",
    "weighted_average_angle": "metrics.weighted_average_angle(np.eye(3), np.eye(3))",
    "force_table": "str(metrics.force_table(np.eye(3), np.eye(3), list('SCH')))",
    "mlmlearn.OAMLM (lazy attribute)": "mlmlearn.OAMLM",
    "CW-SSIM": "tem.cw_ssim(np.outer(np.hanning(32), np.hanning(32)), "
    "np.outer(np.hanning(32), np.hanning(32)))",
}

_SCRIPT = r"""
import importlib, json, sys

config = json.load(sys.stdin)
blocked, attempts = set(config["blocked"]), []


class CoreInstall:
    '''Acts as if the blocked packages were not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, CoreInstall())
out = {"imports": {}, "entry_points": {}, "core": {}}


def outcome(call):
    try:
        call()
    except BaseException as exc:  # SystemExit of argparse included
        return {"type": type(exc).__name__, "message": str(exc),
                "name": getattr(exc, "name", None)}
    return {"type": None}


for module in config["modules"]:
    out["imports"][module] = outcome(lambda: importlib.import_module(module))
out["attempts_on_import"] = list(attempts)

import joblib
import numpy as np
from sklearn.datasets import make_regression

import mlmlearn
from mlmlearn import EMLM, MLM, HuberMLM, RandomReferences, RSMaximin
from mlmlearn import atoms, datasets, metrics, model_selection, oamlm, plotting
from mlmlearn.applications import tem
from mlmlearn.datasets import _recipes as recipes, generate
from mlmlearn.oamlm._gold_thiolate import GoldThiolateNeighborhoods


def gold_align(kind):
    hoods = GoldThiolateNeighborhoods(np.zeros((1, 13, 3)), np.array([4]), np.array([kind]))
    return oamlm.GoldThiolateAlignment().align(hoods, hoods)


def mpi_backend():
    with joblib.parallel_backend("mpi"):
        pass


class Environments:  # what OAMLM checks for; building real ones already needs ase
    structures, structure_index, atom_index = (None,), np.zeros(1, int), np.zeros(1, int)

    def __len__(self):
        return 1


X, y = make_regression(60, 4, noise=0.1, random_state=0)
for name, call, _, _ in config["entry_points"]:
    out["entry_points"][name] = outcome(lambda: eval(call))
for name, call in config["core"].items():
    out["core"][name] = outcome(lambda: eval(call))
out["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in blocked)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def core_install(tmp_path_factory):
    """What a core install does with every module, entry point and core estimator."""
    work = tmp_path_factory.mktemp("core_install")
    config = {"blocked": BLOCKED, "modules": MODULES, "entry_points": ENTRY_POINTS, "core": CORE}
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), work


def _message_pattern(package, extra):
    return (
        rf"{package} is needed by .* \(.*could not be imported\)\. "
        rf"It comes with mlmlearn's '{extra}' extra: "
        rf"in the mlmlearn source tree run pip install \"\.\[{extra}\]\""
    )


@pytest.mark.parametrize("module", MODULES)
def test_a_core_install_imports_every_subpackage_without_an_optional_package(
    core_install, module
):
    """``import mlmlearn.atoms`` after a core install: no bare ``No module named 'ase'``.

    The subpackages import their optional packages where they are used, so the
    import itself succeeds and the first use names the extra (next test).
    """
    out, _ = core_install
    assert out["imports"][module] == {"type": None}, out["imports"][module]
    assert out["attempts_on_import"] == [], "an optional package was imported on import"


@pytest.mark.parametrize(
    "name, package, extra",
    [(name, package, extra) for name, _, package, extra in ENTRY_POINTS],
    ids=[name for name, *_ in ENTRY_POINTS],
)
def test_every_entry_point_of_a_core_install_names_the_extra_it_needs(
    core_install, name, package, extra
):
    import re

    out, work = core_install
    got = out["entry_points"][name]
    assert got["type"] == "ModuleNotFoundError", got
    assert re.search(_message_pattern(package, extra), got["message"]), got["message"]
    assert got["name"] == package  # what `except ModuleNotFoundError as e: e.name` sees
    assert EXTRAS[package] == extra
    assert not (work / "md").exists(), "the data generator started before checking its extras"


@pytest.mark.parametrize("name", list(CORE))
def test_the_core_estimators_work_with_every_optional_package_missing(core_install, name):
    out, _ = core_install
    assert out["core"][name] == {"type": None}, out["core"][name]


def test_the_core_install_never_loaded_an_optional_package(core_install):
    out, _ = core_install
    assert out["loaded"] == []


def test_the_data_generator_checks_the_xtb_extra_before_any_run(monkeypatch, tmp_path):
    """With ase but not tblite: the xtb extra is named before an MD run starts."""
    pytest.importorskip("ase")
    from mlmlearn.datasets import generate

    for name in ("tblite", "tblite.ase"):
        monkeypatch.setitem(sys.modules, name, None)
    workdir = tmp_path / "md"
    argv = ["rings", "--workdir", str(workdir), "--output", str(tmp_path / "rings.npz")]
    with pytest.raises(ModuleNotFoundError, match=_message_pattern("tblite", "xtb")):
        generate.main(argv)
    assert not workdir.exists()


# ------------------------------------------------------------ the helper itself
@pytest.mark.parametrize("package, extra", sorted(EXTRAS.items()))
def test_a_missing_optional_package_names_its_extra(monkeypatch, package, extra):
    monkeypatch.setitem(sys.modules, package, None)
    pattern = (
        rf"{package} is needed by SOMETHING .*'{extra}' extra.*pip install \"\.\[{extra}\]\""
    )
    with pytest.raises(ModuleNotFoundError, match=pattern) as info:
        import_optional(f"{package}.sub", purpose="SOMETHING")
    assert info.value.name == package


def test_the_blocked_packages_have_the_extras_setup_cfg_installs_them_with():
    import configparser
    from pathlib import Path

    assert {p: EXTRAS[p] for p in BLOCKED} == {
        "ase": "atoms",
        "dscribe": "atoms",
        "numba": "atoms",
        "tblite": "xtb",
        "mpi4py": "mpi",
        "matplotlib": "plot",
    }
    setup = Path(__file__).resolve().parents[1] / "setup.cfg"
    if not setup.is_file():
        pytest.skip("not run from a source tree")
    config = configparser.ConfigParser()
    config.read(setup)
    extras = config["options.extras_require"]
    for package, extra in EXTRAS.items():
        assert extra in extras, f"{package}: no extra {extra!r} in setup.cfg"
        assert package in extras[extra], f"the {extra!r} extra does not install {package}"


def test_a_broken_dependency_inside_an_installed_package_is_not_disguised(monkeypatch):
    """A package that is there but fails on one of its own imports keeps that error."""
    import importlib

    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'sparse'", name="sparse")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="No module named 'sparse'") as info:
        import_optional("dscribe.descriptors")
    assert "extra" not in str(info.value)


def test_an_unknown_package_needs_its_extra_named():
    with pytest.raises(ValueError, match="name='notapackage.sub': no extra is known"):
        import_optional("notapackage.sub")
    assert import_optional("numpy.linalg", "core") is np.linalg
