"""Recognise structures passed where descriptor rows are expected.

The distance models and the reference selectors work on arrays of descriptor
rows. Atomic environments or ``ase.Atoms`` objects handed to them directly would
otherwise fail deep inside numpy ("setting an array element with a sequence");
this check says what is missing instead. It never imports ase: environments are
recognised by their class name or their ``structures`` attribute, structures by
their ``positions`` attribute.
"""

import numpy as np

__all__ = ["reject_structures"]


def _describe_structures(X):
    """``(phrase naming X, suggested descriptor)`` when ``X`` holds structures, else ``None``."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        return None
    if type(X).__name__ == "AtomicEnvironments" or (
        hasattr(X, "structures") and not hasattr(X, "__array__")
    ):
        return f"{type(X).__name__} (atomic environments)", "SOAP"
    if hasattr(X, "positions") and hasattr(X, "numbers"):
        return f"a single structure ({type(X).__name__})", "MBTR"
    if isinstance(X, np.ndarray):  # an object array
        items = X.ravel()
    elif isinstance(X, (list, tuple)):
        items = X
    else:
        return None
    for i, item in enumerate(items):
        if hasattr(item, "positions") or type(item).__name__ == "AtomicEnvironments":
            return f"a sequence of structures (item {i} is {type(item).__name__})", "MBTR"
    return None


def reject_structures(X, owner):
    """Raise a TypeError when ``X`` holds structures rather than descriptor rows.

    Parameters
    ----------
    X : object
        What was passed as ``X``.
    owner : str
        Class name of the estimator, for the message.

    Raises
    ------
    TypeError
        Naming a descriptor to put in front (SOAP for environments, MBTR for
        whole structures), if ``X`` is an ``AtomicEnvironments`` (or any object with a
        ``structures`` attribute that is not array-like), one ``ase.Atoms``-like
        object (``positions`` and ``numbers``), or a list, tuple or object array
        containing one.

    Examples
    --------
    >>> import numpy as np
    >>> reject_structures(np.zeros((2, 3)), "EMLM")  # arrays pass
    >>> class Atoms:
    ...     positions, numbers = np.zeros((2, 3)), np.ones(2)
    >>> reject_structures([Atoms()], "EMLM")
    Traceback (most recent call last):
    ...
    TypeError: EMLM takes descriptor rows, an array of shape (n_samples, n_features), not a sequence of structures (item 0 is Atoms). Put a descriptor in front: make_pipeline(MBTR(...), MinMaxScaler(), EMLM()) with MBTR from mlmlearn.atoms.
    """  # noqa: E501
    found = _describe_structures(X)
    if found is not None:
        what, descriptor = found
        raise TypeError(
            f"{owner} takes descriptor rows, an array of shape (n_samples, n_features), "
            f"not {what}. Put a descriptor in front: make_pipeline({descriptor}(...), "
            f"MinMaxScaler(), {owner}()) with {descriptor} from mlmlearn.atoms."
        )
