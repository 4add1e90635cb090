"""Simulated TEM images, beam directions and the preprocessing of paper I (thesis 2.1, 3.1)."""

import numbers

import numpy as np

__all__ = ["simulate_tem_image", "sphere_directions", "preprocess_tem_image"]


def sphere_directions(n_directions):
    """``n_directions`` unit vectors spread evenly over the sphere (Fibonacci lattice).

    Examples
    --------
    >>> d = sphere_directions(200)
    >>> d.shape, bool(np.allclose(np.linalg.norm(d, axis=1), 1.0))
    ((200, 3), True)
    """
    if not isinstance(n_directions, numbers.Integral) or n_directions < 1:
        raise ValueError(f"n_directions={n_directions!r} must be a positive integer")
    k = np.arange(n_directions) + 0.5
    z = 1.0 - 2.0 * k / n_directions
    phi = np.pi * (1.0 + 5**0.5) * k
    r = np.sqrt(1.0 - z**2)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def _plane_basis(direction):
    d = np.asarray(direction, dtype=float)
    if d.shape != (3,) or not np.all(np.isfinite(d)) or np.linalg.norm(d) == 0:
        raise ValueError(f"direction={direction!r} must be a finite, non-zero 3-vector")
    d = d / np.linalg.norm(d)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def simulate_tem_image(
    atoms, direction, *, shape=(128, 128), pixel_size=0.2, eta=1.0, exponent=1.5, saturation=None
):
    """Projected-potential TEM image of ``atoms`` seen along ``direction`` (thesis eq. 2.1).

    Every atom j projected on the plane perpendicular to the beam adds
    Z_j^1.5 · exp(−|r_j − p_i|²/η²) to pixel i; the image is scaled so the
    strongest pixel is black, and returned as 8-bit grayscale with dark =
    absorbing, as a microscope shows it. The structure's projected centre is
    the image centre.

    Parameters
    ----------
    atoms : ase.Atoms
        Positions in Å.
    direction : array-like of shape (3,)
        Beam direction (need not be normalised).
    shape : tuple of two ints, default=(128, 128)
        Image size in pixels (rows, columns); choose it and ``pixel_size`` to
        match the experimental images.
    pixel_size : float, default=0.2
        Å per pixel.
    eta : float, default=1.0
        Width η of each atom's Gaussian in Å.
    exponent : float, default=1.5
        Power of the atomic number.
    saturation : float, default=None
        If given, the projected potential is clipped at this fraction of its
        maximum before scaling: thick regions saturate to black, as in real
        micrographs (thesis figure 2.1).

    Returns
    -------
    image : ndarray of uint8, shape ``shape``

    Examples
    --------
    >>> from ase.build import molecule
    >>> img = simulate_tem_image(molecule("CH4"), [0, 0, 1], shape=(32, 32))
    >>> img.dtype, img.shape, int(img.min()), int(img.max())
    (dtype('uint8'), (32, 32), 0, 255)
    """
    u, v = _plane_basis(direction)
    rows, cols = _check_shape(shape)
    if not (pixel_size > 0 and eta > 0):
        raise ValueError(f"pixel_size={pixel_size!r} and eta={eta!r} must be positive (Å)")
    positions = np.asarray(atoms.positions, dtype=float)
    x, y = positions @ u, positions @ v
    x, y = x - x.mean(), y - y.mean()
    weight = np.asarray(atoms.numbers, dtype=float) ** exponent
    px = (np.arange(cols) - (cols - 1) / 2) * pixel_size
    py = (np.arange(rows) - (rows - 1) / 2) * pixel_size
    # the Gaussian separates in x and y: phi = Gy diag(w) Gx^T, one matrix product
    gx = np.exp(-((px[None, :] - x[:, None]) ** 2) / eta**2)
    gy = np.exp(-((py[None, :] - y[:, None]) ** 2) / eta**2)
    phi = (gy * weight[:, None]).T @ gx
    top = phi.max()
    if top <= 0:
        return np.full((rows, cols), 255, dtype=np.uint8)
    if saturation is not None:
        if not 0 < saturation <= 1:
            raise ValueError(f"saturation={saturation!r} must be in (0, 1]")
        top = saturation * top
        phi = np.minimum(phi, top)
    return np.rint(255.0 * (1.0 - phi / top)).astype(np.uint8)


def preprocess_tem_image(
    image, *, threshold=240, radius=None, edge_width=None, value_range=None
):
    """Paper I's preprocessing, the same for experimental and simulated images.

    The image is read on the 8-bit scale of paper I (0 black … 255 white, see
    below) and quantised to its 256 levels; values ≥ ``threshold`` become 255
    (removing the faint ligand signal and background), the image is inverted
    so dark features carry the weight, and the background is cut by a circle
    whose edge falls off as a Gaussian.

    How pixel values are read (dark = absorbing, as a microscope shows it):

    * unsigned and signed 8- and 16-bit integers (``uint8``, ``uint16``,
      ``int8``, ``int16``, e.g. 8- and 16-bit TIFF or PNG micrographs): 0 is
      black and the dtype's maximum (255, 65535, 127, 32767) white; negative
      values are refused. A 16-bit copy of an 8-bit image (×257) therefore
      gives the same result as the original;
    * floats: taken as normalised, 0 black and 1 white; values outside
      [0, 1] are ambiguous (counts? 0–255?) and refused;
    * ``bool``: False black, True white;
    * 32- and 64-bit integers (e.g. ``np.array`` of Python ints) carry no
      image range and are refused;
    * ``value_range=(low, high)`` overrides all of this for any real dtype:
      ``low`` is black, ``high`` white, values beyond are clipped (a 12-bit
      camera stored as uint16: ``value_range=(0, 4095)``; float counts:
      ``value_range=(image.min(), image.max())``).

    Parameters
    ----------
    image : array-like of shape (rows, cols)
        Grayscale image, dark = absorbing; read as described above.
    threshold : float, default=240
        On the 0–255 scale.
    radius : float, default=None
        Radius of the circular cut in pixels; defaults to 0.45 · min(rows, cols).
    edge_width : float, default=None
        Standard deviation in pixels of the Gaussian fall-off outside ``radius``;
        defaults to 0.05 · min(rows, cols).
    value_range : tuple of two floats, default=None
        The values shown as black and as white; None reads them from the
        dtype (see above).

    Returns
    -------
    processed : ndarray of float64, shape (rows, cols)
        0 for the background, up to 255 for the darkest features.

    Raises
    ------
    ValueError
        If ``image`` is not 2-D, is empty, has NaN or infinite pixels, is a
        float image outside [0, 1], has negative integer values, or has a
        32/64-bit integer dtype, without ``value_range``; if ``value_range``
        is not two finite numbers with low < high.
    TypeError
        If ``image`` is not real-valued (complex, object, strings).

    Examples
    --------
    >>> from ase.build import molecule
    >>> img = simulate_tem_image(molecule("CH4"), [0, 0, 1], shape=(32, 32))
    >>> a = preprocess_tem_image(img)
    >>> b = preprocess_tem_image(img.astype(np.uint16) * 257)  # 16-bit copy
    >>> c = preprocess_tem_image(img / 255.0)                   # normalised float copy
    >>> bool(np.array_equal(a, b) and np.array_equal(a, c))
    True
    """
    img = np.rint(image_intensities(image, "image", value_range=value_range))
    rows, cols = img.shape
    img[img >= threshold] = 255.0
    inverted = 255.0 - img
    size = min(rows, cols)
    radius = 0.45 * size if radius is None else float(radius)
    edge_width = 0.05 * size if edge_width is None else float(edge_width)
    if not (radius > 0 and edge_width > 0):
        raise ValueError(f"radius={radius!r} and edge_width={edge_width!r} must be positive")
    r = _radius_grid(rows, cols)
    window = np.exp(-(np.maximum(r - radius, 0.0) ** 2) / (2 * edge_width**2))
    return inverted * window


#: Integer dtypes that images come in; read on their whole range.
_IMAGE_INTEGERS = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.int8, np.int16))


def image_intensities(image, name, *, value_range=None, ndim=2, floats="normalised"):
    """Pixel values of a raw image on the 0 (black) – 255 (white) scale, read by dtype.

    The rules are those of :func:`preprocess_tem_image`. With ``floats="as is"``
    float images are returned unchanged (images already preprocessed); the
    integer and bool rules still apply. ``ndim=3`` accepts a stack of images.
    Every error names ``name``.
    """
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real-valued grayscale image, got dtype {array.dtype}")
    if array.ndim != ndim:
        what = "a 2-D grayscale image" if ndim == 2 else "a stack of 2-D grayscale images"
        colour = array.ndim == ndim + 1 and array.shape[-1] in (3, 4)
        hint = "; convert colour images to grayscale first" if colour else ""
        raise ValueError(f"{name} must be {what}, got shape {array.shape}{hint}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(
                f"{name} must be finite: {int(bad.sum())} pixel(s) are NaN or infinite, "
                f"the first at index {tuple(int(i) for i in np.argwhere(bad)[0])}"
            )
    if value_range is not None:
        low, high = _check_value_range(value_range)
        return np.clip((array.astype(float) - low) / (high - low), 0.0, 1.0) * 255.0
    kind = array.dtype.kind
    if kind == "b":
        return array * 255.0
    if kind in "iu":
        if array.dtype not in _IMAGE_INTEGERS:
            raise ValueError(
                f"{name} has dtype {array.dtype}, which is no image format's range: convert it "
                "(image.astype(np.uint8) for 8-bit values, np.uint16 for 16-bit ones) or "
                "give value_range=(black, white)"
            )
        if kind == "i" and array.min() < 0:
            raise ValueError(
                f"{name} has negative values (min {array.min()}) in a {array.dtype} image; "
                "give value_range=(black, white)"
            )
        return array * (255.0 / np.iinfo(array.dtype).max)
    array = array.astype(float)
    if floats == "as is":
        return array
    low, high = array.min(), array.max()
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name} is a float image with values in [{low:g}, {high:g}]; float images are "
            "read as normalised to [0, 1] (0 black, 1 white). Scale it (image / 255 for "
            "8-bit values) or give value_range=(black, white)"
        )
    return array * 255.0


def _check_value_range(value_range):
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"value_range={value_range!r} must be two numbers (black, white)"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"value_range={value_range!r} must be finite with black < white")
    return low, high


def check_image(image, name):
    """A preprocessed image as a finite 2-D float array (integer dtypes read by their range)."""
    return image_intensities(image, name, floats="as is")


def _radius_grid(rows, cols):
    y, x = np.mgrid[:rows, :cols]
    return np.hypot(y - (rows - 1) / 2, x - (cols - 1) / 2)


def _check_shape(shape):
    if len(shape) != 2 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r} must be two positive integers")
    return int(shape[0]), int(shape[1])
