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


def preprocess_tem_image(image, *, threshold=240, radius=None, edge_width=None):
    """Paper I's preprocessing, the same for experimental and simulated images.

    8-bit values ≥ ``threshold`` become 255 (removing the faint ligand signal
    and background), the image is inverted so dark features carry the weight,
    and the background is cut by a circle whose edge falls off as a Gaussian.

    Parameters
    ----------
    image : array-like of shape (rows, cols)
        Grayscale image, 0–255 (dark = absorbing).
    threshold : int, default=240
    radius : float, default=None
        Radius of the circular cut in pixels; defaults to 0.45 · min(rows, cols).
    edge_width : float, default=None
        Standard deviation in pixels of the Gaussian fall-off outside ``radius``;
        defaults to 0.05 · min(rows, cols).

    Returns
    -------
    processed : ndarray of float64, shape (rows, cols)
        0 for the background, up to 255 for the darkest features.
    """
    image = check_image(image, "image")
    rows, cols = image.shape
    img = np.clip(np.rint(image), 0, 255)
    img[img >= threshold] = 255
    inverted = 255.0 - img
    size = min(rows, cols)
    radius = 0.45 * size if radius is None else float(radius)
    edge_width = 0.05 * size if edge_width is None else float(edge_width)
    if not (radius > 0 and edge_width > 0):
        raise ValueError(f"radius={radius!r} and edge_width={edge_width!r} must be positive")
    r = _radius_grid(rows, cols)
    window = np.exp(-(np.maximum(r - radius, 0.0) ** 2) / (2 * edge_width**2))
    return inverted * window


def check_image(image, name):
    """A finite 2-D float array, or a ValueError naming ``name``."""
    array = np.asarray(image, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grayscale image, got shape {array.shape}")
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be non-empty and finite")
    return array


def _radius_grid(rows, cols):
    y, x = np.mgrid[:rows, :cols]
    return np.hypot(y - (rows - 1) / 2, x - (cols - 1) / 2)


def _check_shape(shape):
    if len(shape) != 2 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r} must be two positive integers")
    return int(shape[0]), int(shape[1])
