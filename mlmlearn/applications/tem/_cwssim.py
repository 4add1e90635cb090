"""2-D Ricker wavelet transforms and CW-SSIM with a rotation scan (thesis eqs. 2.3–2.5)."""

import functools
import warnings

import numpy as np
from scipy import fft

from ..._progress import progress
from ._images import _radius_grid, check_image, image_intensities

__all__ = [
    "DEFAULT_WIDTHS",
    "ScaleMismatchWarning",
    "ricker_wavelet",
    "ricker_transform",
    "rotation_operator",
    "comparison_mask",
    "cw_ssim",
    "compare_images",
]

#: Ten wavelet widths β from 5 to 30 pixels, as paper I uses.
DEFAULT_WIDTHS = tuple(np.linspace(5.0, 30.0, 10))

#: Peak ratio above which two compared images are taken to be on different scales.
#: CW-SSIM (2.5) is not scale-invariant: an image against itself times c scores
#: (2c + K')/(1 + c² + K') ≈ 2c/(1 + c²), 0.2 at c = 10, below what different
#: structures on one scale score, so the scale alone would decide the comparison.
_SCALE_RATIO = 10.0


class ScaleMismatchWarning(UserWarning):
    """Two compared images are on value scales more than 10× apart.

    Typically a raw float micrograph normalised to [0, 1] compared with an
    integer or preprocessed image on 0–255: CW-SSIM compares float images as
    they are, so the score then measures the scale, not the structure. Pass
    both through :func:`preprocess_tem_image`, which reads each image by its
    dtype and range.
    """


def _peaks(stack, mask):
    """Largest absolute value over the compared pixels, per image of a stack."""
    return np.abs(stack[:, mask]).max(axis=1)


def _warn_scale_mismatch(peaks_x, names_x, peaks_y, names_y):
    """One ScaleMismatchWarning naming the most mismatched pair, if any pair of an
    x image and a y image has peaks more than ``_SCALE_RATIO`` apart (or one blank)."""
    i, j = int(np.argmax(peaks_x)), int(np.argmin(peaks_y))
    k, m = int(np.argmin(peaks_x)), int(np.argmax(peaks_y))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_xy = peaks_x[i] / peaks_y[j] if peaks_x[i] > 0 else 1.0
        ratio_yx = peaks_y[m] / peaks_x[k] if peaks_y[m] > 0 else 1.0
    if max(ratio_xy, ratio_yx) <= _SCALE_RATIO:
        return
    if ratio_xy >= ratio_yx:
        (a, pa), (b, pb), ratio = (names_x(i), peaks_x[i]), (names_y(j), peaks_y[j]), ratio_xy
    else:
        (a, pa), (b, pb), ratio = (names_y(m), peaks_y[m]), (names_x(k), peaks_x[k]), ratio_yx
    warnings.warn(
        f"{a} and {b} are on different value scales: {a} peaks at {pa:.4g} and {b} at "
        f"{pb:.4g} over the compared pixels (ratio {ratio:.3g} > {_SCALE_RATIO:g}). Float "
        "images are compared as they are and CW-SSIM is not scale-invariant, so the score "
        "would measure the scale; preprocess both with preprocess_tem_image, which reads "
        "each image by its dtype and range (floats as [0, 1], 8/16-bit integers on theirs).",
        ScaleMismatchWarning,
        stacklevel=3,
    )


def ricker_wavelet(width, radius):
    """The 2-D Ricker (Mexican hat) wavelet of eq. (2.4) on a (2·radius+1)² pixel grid.

    ``g(r) = 2 / (√(3β) π^¼) · (1 − (|r|/β)²) · exp(−|r|²/(2β²))``, β = ``width`` in pixels.
    """
    width = float(width)
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"width={width!r} must be a positive number of pixels")
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    q = (x**2 + y**2) / width**2
    return 2.0 / (np.sqrt(3.0 * width) * np.pi**0.25) * (1.0 - q) * np.exp(-q / 2.0)


def _check_widths(widths):
    widths = np.atleast_1d(np.asarray(widths, dtype=float))
    if widths.ndim != 1 or widths.size == 0 or not np.all(np.isfinite(widths) & (widths > 0)):
        raise ValueError(f"widths={widths!r} must be positive numbers of pixels")
    return widths


def ricker_transform(images, widths=DEFAULT_WIDTHS, *, truncate=4.0):
    """Convolve each image with the Ricker wavelet of each width (eq. 2.3, zero padding).

    One FFT per image and one per wavelet; their products give every (image,
    width) pair, cropped to the image ("same" convolution). Images are
    processed in chunks so the spectra stay within a few hundred MB.

    Parameters
    ----------
    images : array-like of shape (n_images, rows, cols) or (rows, cols)
        Float images are transformed as they are (normally the output of
        :func:`preprocess_tem_image`, on its 0–255 scale); integer images are
        first read on their dtype's range as there (uint16 65535 → 255).
    widths : sequence of float, default=DEFAULT_WIDTHS
        Wavelet widths β in pixels.
    truncate : float, default=4.0
        The wavelets are cut at ``truncate * max(widths)`` pixels (where the
        Gaussian factor is below 4e-4 of its peak) or at the image size, beyond
        which a wavelet cannot reach any pixel.

    Returns
    -------
    coefficients : ndarray of shape (n_images, n_widths, rows, cols)

    Raises
    ------
    ValueError
        If ``images`` is not one or a stack of 2-D images, is empty, has NaN or
        infinite pixels, or has an integer dtype without an image range (see
        :func:`preprocess_tem_image`); if a width is not positive.
    """
    images = _check_stack(images, "images")
    widths = _check_widths(widths)
    n_images, rows, cols = images.shape
    radius = min(int(np.ceil(truncate * widths.max())), max(rows, cols) - 1)
    # a circular convolution of length n + radius leaves the "same" window unaliased
    shape = tuple(fft.next_fast_len(n + radius, real=True) for n in (rows, cols))
    spectrum_k = _kernel_spectra(tuple(widths.tolist()), radius, shape)
    out = np.empty((n_images, len(widths), rows, cols))
    per_image = len(widths) * shape[0] * (shape[1] // 2 + 1) * 16
    chunk = max(1, int(256e6 // per_image))
    for start in range(0, n_images, chunk):
        block = fft.rfft2(images[start : start + chunk], s=shape)
        full = fft.irfft2(block[:, None] * spectrum_k[None], s=shape)
        out[start : start + chunk] = full[..., radius : radius + rows, radius : radius + cols]
    return out


@functools.lru_cache(maxsize=8)
def _kernel_spectra(widths, radius, shape):
    """Spectra of the wavelets, reused by every call with the same sizes (read-only)."""
    kernels = np.stack([ricker_wavelet(w, radius) for w in widths])
    spectra = fft.rfft2(kernels, s=shape)
    spectra.flags.writeable = False
    return spectra


def rotation_operator(shape, mask, angles):
    """Sparse bilinear rotation of an image, evaluated at the ``mask`` pixels.

    Row ``a * n_mask + m`` holds the weights that give masked pixel ``m`` of
    the image rotated by ``angles[a]`` degrees about its centre, exactly as
    ``scipy.ndimage.rotate(image, angle, reshape=False, order=1)`` would
    (inputs falling outside the image count as 0).

    Returns
    -------
    operator : scipy.sparse.csr_matrix of shape (n_angles * n_mask, rows * cols)
    """
    from scipy import sparse

    rows, cols = shape
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    y, x = np.nonzero(mask)
    y, x = y - cy, x - cx
    t = np.radians(np.asarray(angles, dtype=float))[:, None]
    yi = (cy + np.cos(t) * y + np.sin(t) * x).ravel()
    xi = (cx - np.sin(t) * y + np.cos(t) * x).ravel()
    y0, x0 = np.floor(yi).astype(np.int64), np.floor(xi).astype(np.int64)
    fy, fx = yi - y0, xi - x0
    out_rows, cols_idx, weights = [], [], []
    row_index = np.arange(len(yi))
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < rows) & (xx >= 0) & (xx < cols)
        out_rows.append(row_index[inside])
        cols_idx.append(yy[inside] * cols + xx[inside])
        weights.append(w[inside])
    return sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(out_rows), np.concatenate(cols_idx))),
        shape=(len(yi), rows * cols),
    )


def comparison_mask(shape, radius=None):
    """The pixels compared: a disc of ``radius`` pixels (default 0.45 · min size), corners out."""
    rows, cols = shape
    radius = 0.45 * min(rows, cols) if radius is None else float(radius)
    mask = _radius_grid(rows, cols) <= radius
    if not mask.any():
        raise ValueError(f"the comparison mask of radius {radius!r} px contains no pixels")
    return mask


def _check_mask(mask, shape):
    if mask is None:
        return comparison_mask(shape)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}, the images {shape}")
    if not mask.any():
        raise ValueError("mask selects no pixels")
    return mask


def cw_ssim(image_x, image_y, *, widths=DEFAULT_WIDTHS, k=0.01, mask=None):
    """CW-SSIM of two images (eq. 2.5), averaged over the wavelet widths.

    For real wavelet coefficients (the Ricker wavelet is real)
    Σ|w_x||w_y| = Σ|w_x w_y*|, so the two factors of eq. (2.5) share a term
    and the product is (2|Σ w_x w_y| + K) / (Σ w_x² + Σ w_y² + K).

    Parameters
    ----------
    image_x, image_y : array-like of shape (rows, cols)
        Images of the same size, preprocessed alike (:func:`preprocess_tem_image`:
        raw micrographs of different dtypes or ranges are not on one scale).
        Float images are compared as they are; integer images are read on
        their dtype's range onto the 0–255 scale of the preprocessed ones.
        Images whose peaks over the compared pixels differ more than 10×
        (a [0, 1] float against a 0–255 image) raise a
        :class:`ScaleMismatchWarning` naming both.
    widths : sequence of float, default=DEFAULT_WIDTHS
    k : float, default=0.01
        The stabilising constant K.
    mask : array-like of bool, shape (rows, cols), default=None
        Pixels compared; default :func:`comparison_mask`.

    Returns
    -------
    similarity : float
        1 for identical images.

    Raises
    ------
    ValueError
        Naming ``image_x`` or ``image_y``: not 2-D, empty, NaN or infinite
        pixels, an integer dtype without an image range, or different shapes;
        a mask of the wrong shape or with no pixels.

    Warns
    -----
    ScaleMismatchWarning
        If the peaks of the two images over the mask differ more than 10×
        (or one image is blank there).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((48, 48))
    >>> round(cw_ssim(a, a), 12)
    1.0
    """
    x = check_image(image_x, "image_x")
    y = check_image(image_y, "image_y")
    if x.shape != y.shape:
        raise ValueError(f"image_x has shape {x.shape} but image_y {y.shape}")
    mask = _check_mask(mask, x.shape)
    _warn_scale_mismatch(_peaks(x[None], mask), lambda i: "image_x",
                         _peaks(y[None], mask), lambda i: "image_y")
    w = ricker_transform(np.stack([x, y]), widths)[:, :, mask]
    wx, wy = w[0], w[1]
    s = _cw_ssim_real((wx * wy).sum(1), (wx**2).sum(1), (wy**2).sum(1), k)
    return float(s.mean())


def _cw_ssim_real(cross, norm_x, norm_y, k):
    """Eq. (2.5) for real coefficients from Σxy, Σx², Σy² (see :func:`cw_ssim`)."""
    return (2 * np.abs(cross) + k) / (norm_x + norm_y + k)


def compare_images(
    experimental,
    simulated,
    *,
    widths=DEFAULT_WIDTHS,
    n_rotations=50,
    k=0.01,
    mask=None,
    verbose=0,
):
    """Best CW-SSIM of every (experimental, simulated) pair over a rotation scan.

    Each image is wavelet-transformed once; each transformed experimental
    image is rotated through 360° in ``n_rotations`` steps (paper I); the
    similarities of all rotations with all simulated images are matrix
    products over the masked pixels, one per width, averaged over the widths.

    Parameters
    ----------
    experimental : array-like of shape (n_exp, rows, cols)
        Experimental images, preprocessed as the simulated ones
        (:func:`preprocess_tem_image` reads raw micrographs by dtype and range).
        Float images are compared as they are; integer images are read on
        their dtype's range onto the 0–255 scale of the preprocessed ones.
    simulated : array-like of shape (n_sim, rows, cols)
        Simulated images, preprocessed the same way. An experimental and a
        simulated image whose peaks over the mask differ more than 10× raise a
        :class:`ScaleMismatchWarning` naming the pair.
    widths : sequence of float, default=DEFAULT_WIDTHS
    n_rotations : int, default=50
    k : float, default=0.01
    mask : array-like of bool, default=None
        Pixels compared (default :func:`comparison_mask`: the corners, where
        rotation interpolates, are left out).
    verbose : int, default=0
        Progress bar over the experimental images.

    Returns
    -------
    similarity : ndarray of shape (n_exp, n_sim)
        Highest width-averaged CW-SSIM over the rotations.
    angle : ndarray of shape (n_exp, n_sim)
        The rotation of the experimental image (degrees, counter-clockwise)
        that gives it.

    Raises
    ------
    ValueError
        Naming ``experimental`` or ``simulated``: not a stack of 2-D images,
        empty, NaN or infinite pixels, an integer dtype without an image
        range, or images of different sizes; ``n_rotations`` not a positive
        integer.

    Warns
    -----
    ScaleMismatchWarning
        If an experimental and a simulated image are on value scales more than
        10× apart (their peaks over the mask), naming the most mismatched pair.
    """
    exp = _check_stack(experimental, "experimental")
    sim = _check_stack(simulated, "simulated")
    if exp.shape[1:] != sim.shape[1:]:
        raise ValueError(
            f"experimental images are {exp.shape[1:]} but simulated images {sim.shape[1:]}"
        )
    if int(n_rotations) != n_rotations or n_rotations < 1:
        raise ValueError(f"n_rotations={n_rotations!r} must be a positive integer")
    widths = _check_widths(widths)
    mask = _check_mask(mask, exp.shape[1:])
    _warn_scale_mismatch(_peaks(exp, mask), lambda i: f"experimental[{i}]",
                         _peaks(sim, mask), lambda i: f"simulated[{i}]")
    angles = np.arange(int(n_rotations)) * 360.0 / n_rotations
    n_angles, n_pixels = len(angles), int(mask.sum())

    w_sim = ricker_transform(sim, widths)[:, :, mask]  # (n_sim, n_widths, n_pixels)
    sim_norm = (w_sim**2).sum(-1)  # (n_sim, n_widths)
    w_sim = np.ascontiguousarray(w_sim.transpose(1, 0, 2))  # (n_widths, n_sim, n_pixels)
    rotate = rotation_operator(exp.shape[1:], mask, angles)

    best = np.empty((len(exp), len(sim)))
    best_angle = np.empty((len(exp), len(sim)))
    chunk = max(1, int(2**27 // (n_angles * n_pixels * 8)))  # ~128 MB of rotated pixels
    starts = range(0, len(exp), chunk)
    for start in progress(starts, verbose=verbose, total=len(starts), desc="CW-SSIM"):
        block = ricker_transform(exp[start : start + chunk], widths)  # (b, n_widths, rows, cols)
        b = len(block)
        flat = block.reshape(b * len(widths), -1).T  # (rows*cols, b*n_widths)
        rotated = (rotate @ flat).reshape(n_angles, n_pixels, b, len(widths))
        mean = np.zeros((b * n_angles, len(sim)))
        for j in range(len(widths)):
            x = np.ascontiguousarray(rotated[:, :, :, j].transpose(2, 0, 1)).reshape(-1, n_pixels)
            cross = x @ w_sim[j].T
            norm = np.einsum("ij,ij->i", x, x)
            mean += _cw_ssim_real(cross, norm[:, None], sim_norm[None, :, j], k)
        mean = mean.reshape(b, n_angles, len(sim)) / len(widths)
        r = mean.argmax(axis=1)
        best[start : start + b] = np.take_along_axis(mean, r[:, None, :], axis=1)[:, 0]
        best_angle[start : start + b] = angles[r]
    return best, best_angle


def _check_stack(images, name):
    """A non-empty stack of preprocessed images (one 2-D image is a stack of one).

    A sequence of images is read image by image, so each keeps its own dtype's
    range (numpy would promote a list of uint8 and uint16 images to uint16).
    """
    if not isinstance(images, np.ndarray) and len(images) and np.ndim(images[0]) == 2:
        stack = [
            image_intensities(image, f"{name}[{i}]", floats="as is")
            for i, image in enumerate(images)
        ]
        shapes = sorted({image.shape for image in stack})
        if len(shapes) > 1:
            raise ValueError(f"{name} holds images of different shapes {shapes}")
        return np.stack(stack)
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3 and array.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {array.shape})")
    return image_intensities(array, name, ndim=3, floats="as is")
