"""Optional dependencies: imported where they are used, with the extra that installs them.

The core needs numpy, scipy, scikit-learn (with joblib and threadpoolctl) and
tqdm, whose progress bars every ``verbose`` switch draws. Everything heavier
is imported through :func:`import_optional`, so a missing package raises an
``ImportError`` that says which extra of mlmlearn brings it, instead of a bare
``No module named 'ase'``.
"""

import functools
import importlib
import threading

__all__ = ["EXTRAS", "compile_once", "import_optional"]

#: The setup.cfg extra that installs each optional top-level package.
EXTRAS = {
    "ase": "atoms",
    "dscribe": "atoms",
    "numba": "atoms",
    "mpi4py": "mpi",
    "matplotlib": "plot",
    "tblite": "xtb",
}


def import_optional(name, extra=None, *, purpose=None):
    """Import ``name`` (e.g. ``"ase.neighborlist"``), or say which extra installs it.

    Parameters
    ----------
    name : str
        Dotted module name; its top-level package must be a key of :data:`EXTRAS`
        unless ``extra`` is given.
    extra : str, default=None
        The extra of mlmlearn that installs the package; ``None`` looks it up.
    purpose : str, default=None
        What needs the package (``"SOAP"``, ``"the 'mpi' joblib backend"``), for
        the message.

    Returns
    -------
    module : module

    Raises
    ------
    ModuleNotFoundError
        If the package (or the named submodule of it) is not installed; the
        message names the package, the extra and the pip command. An import
        error raised *inside* an installed package (one of its own dependencies
        missing) propagates unchanged.

    Examples
    --------
    >>> import_optional("numpy.linalg", "core").__name__
    'numpy.linalg'
    """
    top = name.partition(".")[0]
    extra = EXTRAS.get(top) if extra is None else extra
    if extra is None:
        raise ValueError(f"name={name!r}: no extra is known for {top!r}; pass extra=")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing is not None and missing != top and not missing.startswith(top + "."):
            raise  # the package is there but one of its own dependencies is not
        who = purpose or "this part of mlmlearn"
        error = ModuleNotFoundError(
            f"{top} is needed by {who} ({name!r} could not be imported). It comes with mlmlearn's "
            f"'{extra}' extra: in the mlmlearn source tree run pip install \".[{extra}]\"",
            name=top,
        )
        raise error from exc


def compile_once(build):
    """Decorator: ``build(*args)`` runs once per process and argument set, thread-safe.

    For the builders of numba kernels: concurrent first calls wait for one compile
    step (or one load from numba's disk cache) and get the same objects; later calls
    return them. ``cache_clear()`` forgets them (tests that switch numba off).
    """
    cached = functools.cache(build)
    lock = threading.Lock()

    @functools.wraps(build)
    def once(*args, **kwargs):
        with lock:
            return cached(*args, **kwargs)

    once.cache_clear = cached.cache_clear
    return once
