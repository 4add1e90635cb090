"""Progress bars for long loops, off unless the caller asks (``verbose``)."""

__all__ = ["progress"]


def progress(iterable, *, verbose=0, total=None, desc=None):
    """Wrap ``iterable`` in a tqdm bar when ``verbose`` is truthy.

    tqdm is imported only when a bar is asked for, so the core package does
    not depend on it.
    """
    if not verbose:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "verbose progress bars need tqdm: pip install tqdm (or verbose=0)"
        ) from exc
    return tqdm(iterable, total=total, desc=desc)
