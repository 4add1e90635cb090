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
    pixels = np.take(stack.reshape(len(stack), -1), np.flatnonzero(mask), axis=1)
    return np.abs(pixels, out=pixels).max(axis=1)


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


#: Largest image side transformed by separable matrix products in :func:`_masked_ricker`;
#: their cost grows as the side cubed, the FFT's as its square (times a log). Measured on
#: one core for two images and ten widths: 32 ms against 106 ms at 256 px, 100 against
#: 90 ms at 384 px.
_SEPARABLE_MAX_SIDE = 320
#: The same for the mirror-symmetric masks of :func:`_masked_sums`, whose products are
#: blocked for the cache: 47 against 71 ms at 320 px, 80 against 91 at 384, 111 against
#: 203 at 448, 135 against 140 at 480, 177 against 165 at 512 (loaded machine).
_SUMS_MAX_SIDE = 448
#: Widths per pass of :func:`_masked_ricker`'s products.
_WIDTHS_PER_PASS = 2


def _masked_ricker(images, widths, mask):
    """The Ricker coefficients of :func:`ricker_transform` at the ``mask`` pixels only.

    Returns an array of shape (n_images, n_widths, n_mask), the pixels in the order
    of ``coefficients[:, :, mask]``; equal to it to rounding. The wavelet (2.4) on its
    truncated square grid is separable into two rank-one terms,
    g = c[(a − b) ⊗ a − a ⊗ b] with a(t) = exp(−t²/2β²) and b(t) = (t/β)² a(t), so
    each width's "same" convolution is a product with Toeplitz matrices along each
    axis, computed only for the rows and columns the mask touches and their mirror
    images. The factors are even, so both passes run on the sums and differences of
    mirrored rows and columns (:func:`_folded_factors`), half the work each. Up to
    ``_SEPARABLE_MAX_SIDE`` pixels this is several times faster than the FFTs of
    :func:`ricker_transform`; larger images (and single rows or columns) go through
    them.
    """
    n_images, rows, cols = images.shape
    if max(rows, cols) > _SEPARABLE_MAX_SIDE or min(rows, cols) < 2:
        return ricker_transform(images, widths)[:, :, mask]
    radius = min(int(np.ceil(4.0 * widths.max())), max(rows, cols) - 1)
    key = tuple(widths.tolist()), radius
    r_plus, r_minus, r_half, r_lo = _folded_factors(
        *key, rows, tuple(np.flatnonzero(mask.any(axis=1)).tolist()), "rows")
    c_plus, c_minus, c_half, c_lo = _folded_factors(
        *key, cols, tuple(np.flatnonzero(mask.any(axis=0)).tolist()), "columns")
    # the passes leave the mirrored outputs of each axis after the first half, in
    # mirrored order: the masked pixels' places in that layout, in the mask's order
    y, x = np.nonzero(mask)
    r_top, c_top = len(r_half), len(c_half)
    n_r, n_c = r_top + r_lo, c_top + c_lo
    place = _places(r_half, r_lo, rows)[y] * n_c + _places(c_half, c_lo, cols)[x]
    n_w = len(widths)
    s, d = _fold_rows(images.transpose(1, 0, 2))  # (·, n_images, cols)
    # and their columns: each part (·, n_images · folded columns)
    folded = [
        np.ascontiguousarray(part.reshape(-1, n_images, z.shape[0]).transpose(2, 1, 0))
        .reshape(z.shape[0], -1)
        for z in (s, d)
        for part in _fold_rows(z.transpose(2, 1, 0).reshape(cols, -1))
    ]
    r_plus = r_plus.reshape(n_w, 2 * r_top, -1)
    r_minus = r_minus.reshape(n_w, 2 * r_top, -1)
    out = np.empty((n_images, n_w, len(place)))
    # a few widths at a time, so that the intermediates stay in cache: the row pass's
    # results, folded along the columns, sums (s) and differences (d)
    k = _WIDTHS_PER_PASS
    u_s = np.empty((k, n_images, n_r, 2, cols - cols // 2))
    u_d = np.empty((k, n_images, n_r, 2, cols // 2))
    w = np.empty((k, n_images, n_r, n_c))
    for j in range(0, n_w, k):
        b = min(k, n_w - j)
        for u, z_s, z_d in ((u_s[:b], folded[0], folded[2]), (u_d[:b], folded[1], folded[3])):
            # rows: c(a − b) X and c a X, on the column-folded images
            p = (r_plus[j : j + b].reshape(-1, z_s.shape[0]) @ z_s).reshape(
                b, r_top, 2, n_images, -1)
            m = (r_minus[j : j + b].reshape(-1, z_d.shape[0]) @ z_d).reshape(
                b, r_top, 2, n_images, -1)
            u = u.transpose(0, 2, 3, 1, 4)  # the same layout
            np.add(p, m, out=u[:, :r_top])
            np.subtract(p[:, :r_lo], m[:, :r_lo], out=u[:, r_top:])
        # columns: [c(a − b) X, c a X] @ [aᵀ; −bᵀ], both terms summed by one product
        p = np.matmul(u_s[:b].reshape(b, n_images * n_r, -1), c_plus[j : j + b])
        m = np.matmul(u_d[:b].reshape(b, n_images * n_r, -1), c_minus[j : j + b])
        p, m = p.reshape(b, n_images, n_r, -1), m.reshape(b, n_images, n_r, -1)
        np.add(p, m, out=w[:b, ..., :c_top])
        np.subtract(p[..., :c_lo], m[..., :c_lo], out=w[:b, ..., c_top:])
        out[:, j : j + b] = np.take(w[:b].reshape(b, n_images, -1), place, axis=2).transpose(
            1, 0, 2)
    return out


def _masked_sums(images, widths, mask):
    """Σ w_x w_y, Σ w_x² and Σ w_y² over the ``mask`` pixels, per width, of two images.

    With a mask that is its own mirror image along both axes (as the default disc
    is), the coefficients need not be assembled: write the sums and differences of
    mirrored rows (index a) and columns (b) of an image as X_ab; the coefficient
    block Y_ab = Σ_t F₊/₋ X_ab G₊/₋ᵀ (the folded factors of :func:`_folded_factors`)
    enters the four mirrored pixels with the signs of a Hadamard pattern, so over
    them Σ w_x w_y = Σ_ab mult · Y_x,ab Y_y,ab (mult the number of distinct mirrored
    pixels: 4, 2 on a middle row or column, 1 at the centre). With Z = √(mult·mask)
    ∘ Y the three sums of a width are dot products of Z_x and Z_y.
    Other masks go through :func:`_masked_ricker`.

    The widths are taken a block at a time, through both passes and the dot products,
    so that a block's factors and intermediates (up to ``_BLOCK_BYTES``; about 0.7 MB a
    width at 128 px) stay in the core's cache: the row pass is one product per image, fold
    and block (the block's widths and both terms t stacked in the factor's rows,
    :func:`_symmetric_operators`), writing each width's (row, t, column) block; the
    column pass contracts t and the column together, one product per (image, fold,
    width); then the block's dot products. The operators come from :func:`_sums_plan`.
    Returns three arrays of shape (n_widths,).
    """
    plan = _sums_plan(widths, mask)
    if plan is None:
        wx, wy = _masked_ricker(images, widths, mask)
        return tuple(np.einsum("ij,ij->i", u, v) for u, v in ((wx, wy), (wx, wx), (wy, wy)))
    r_folds, c_folds, root_weight = plan
    n_w, n_images = len(widths), len(images)
    n_o, n_c = root_weight.shape[1:]
    parts = _fold_both(images)  # parts[a][b]: (n_images, folded rows a, folded columns b)
    # doubles a width adds to a block: its row and column factors, row-pass results
    # (of one column fold) and coefficient blocks
    rows, cols = images.shape[1:]
    per_width = 2 * n_o * rows + 2 * cols * n_c + 2 * n_images * n_o * (cols + 2 * n_c)
    k = max(1, min(n_w, int(_BLOCK_BYTES // (8 * per_width))))
    # per block: the row pass (image, a, width, o, t, folded column) for each b, then
    # the coefficient blocks (width, image, ab, o, c)
    u = [np.empty((n_images, 2, k, n_o, 2, c_fold.shape[1] // 2)) for c_fold in c_folds]
    y = np.empty((k, n_images, 4, n_o, n_c))
    sums = np.empty((3, n_w))
    for j in range(0, n_w, k):
        m = min(k, n_w - j)
        for b, c_fold in enumerate(c_folds):
            u_b = u[b][:, :, :m]
            n_col = u_b.shape[-1]
            for a, r_fold in enumerate(r_folds):
                f = r_fold[j : j + m].reshape(-1, r_fold.shape[2])  # (width · o · t, rows)
                for i in range(n_images):
                    np.matmul(f, parts[a][b][i], out=u_b[i, a].reshape(-1, n_col))
            np.matmul(u_b.reshape(n_images, 2, m, n_o, 2 * n_col), c_fold[j : j + m],
                      out=y[:m, :, 2 * b : 2 * b + 2].transpose(1, 2, 0, 3, 4))
        z = y[:m].reshape(m, n_images, -1)
        z *= root_weight.reshape(-1)
        for w, (z_x, z_y) in enumerate(z, start=j):
            sums[:, w] = np.vdot(z_x, z_y), np.vdot(z_x, z_x), np.vdot(z_y, z_y)
    return sums[0], sums[1], sums[2]


#: Bytes of factors and intermediates per block of widths in :func:`_masked_sums`, so
#: that they stay in a core's cache (2 MB of L2 where measured): two widths at 128 px,
#: one from 160 px on.
_BLOCK_BYTES = 1.5e6


def _sums_plan(widths, mask):
    """:func:`_masked_sums`'s operators for these widths and mask, or None where it
    takes the general path (a mask that is not its own mirror image, images above
    ``_SUMS_MAX_SIDE`` or below 2 pixels a side). The default mask of a shape
    (:func:`_default_mask`, read-only) is looked up by shape, without reading it."""
    rows, cols = mask.shape
    if max(rows, cols) > _SUMS_MAX_SIDE or min(rows, cols) < 2:
        return None
    radius = min(int(np.ceil(4.0 * widths.max())), max(rows, cols) - 1)
    key = tuple(widths.tolist()), radius
    if not mask.flags.writeable and mask is _default_mask(mask.shape):
        return _default_plan(*key, mask.shape)
    if not (np.array_equal(mask, mask[::-1]) and np.array_equal(mask, mask[:, ::-1])):
        return None
    return _symmetric_operators(
        *key, rows, cols, tuple(np.flatnonzero(mask.any(axis=1)).tolist()),
        tuple(np.flatnonzero(mask.any(axis=0)).tolist()), mask.tobytes())


@functools.lru_cache(maxsize=8)
def _default_plan(widths, radius, shape):
    """:func:`_sums_plan` of the default mask of ``shape`` (computed once)."""
    mask = _default_mask(shape)
    return _symmetric_operators(
        widths, radius, *shape, tuple(np.flatnonzero(mask.any(axis=1)).tolist()),
        tuple(np.flatnonzero(mask.any(axis=0)).tolist()), mask.tobytes())


@functools.lru_cache(maxsize=8)
def _symmetric_operators(widths, radius, rows, cols, row_out, col_out, mask_bytes):
    """The folded factors of both passes and √(mult · mask) over the first-half block
    (see :func:`_masked_sums`); read-only.

    Returns ``(F₊, F₋)`` of the rows, each (n_widths, o · 2 terms, folded rows);
    ``(G₊, G₋)`` of the columns, each (n_widths, 2 terms · folded columns, c); and
    the weights' roots, (o, c), repeated for the four folds ab: (4, o, c).
    """
    n_w = len(widths)
    r_plus, r_minus, r_half, _ = _folded_factors(widths, radius, rows, row_out, "rows")
    c_plus, c_minus, c_half, _ = _folded_factors(widths, radius, cols, col_out, "columns")
    r_folds = tuple(f.reshape(n_w, -1, f.shape[1]) for f in (r_plus, r_minus))
    mask = np.frombuffer(mask_bytes, dtype=bool).reshape(rows, cols)
    mult_r = np.where(2 * r_half == rows - 1, 1.0, 2.0)
    mult_c = np.where(2 * c_half == cols - 1, 1.0, 2.0)
    root_weight = np.sqrt(mask[np.ix_(r_half, c_half)] * mult_r[:, None] * mult_c[None, :])
    # repeated, so that the weighting is one flat product per image and width
    root_weight = np.ascontiguousarray(np.broadcast_to(root_weight, (4, *root_weight.shape)))
    root_weight.flags.writeable = False
    return r_folds, (c_plus, c_minus), root_weight


def _fold_both(images):
    """Sums and differences of mirrored rows, then of mirrored columns, of a stack:
    ``parts[a][b]`` of shape (n_images, ⌈rows/2⌉ or ⌊rows/2⌋, ⌈cols/2⌉ or ⌊cols/2⌋)
    (a, b = 0 the sums, with the middle row or column of an odd side; 1 the
    differences), each C-contiguous."""
    return [_fold_axis(z, 2) for z in _fold_axis(images, 1)]


def _fold_axis(x, axis):
    """:func:`_fold_rows` along ``axis`` of x, into new C-contiguous arrays."""
    n = x.shape[axis]
    h = n // 2
    lo, hi = _slice(x, axis, 0, h), _slice(np.flip(x, axis=axis), axis, 0, h)
    shape = list(x.shape)
    shape[axis] = n - h
    s = np.empty(shape)
    np.add(lo, hi, out=_slice(s, axis, 0, h))
    if n % 2:
        _slice(s, axis, h, h + 1)[...] = _slice(x, axis, h, h + 1)
    return s, np.subtract(lo, hi)


def _slice(x, axis, start, stop):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _fold_rows(x):
    """Sums and differences of mirrored rows of x: s_i = x_i + x_{n−1−i} (with the
    middle row of odd n) and d_i = x_i − x_{n−1−i}, i < n/2."""
    n = x.shape[0]
    h = n // 2
    lo, hi = x[:h], x[::-1][:h]
    s = lo + hi
    if n % 2:
        s = np.concatenate([s, x[h : h + 1]])
    return s, lo - hi


def _places(top, n_lo, n):
    """Where each index 0 … n − 1 lands in a pass's output: the first-half outputs
    ``top`` in order, then the mirror images of the first ``n_lo`` of them (−1 if
    not computed)."""
    place = np.full(n, -1)
    place[top] = np.arange(len(top))
    place[n - 1 - top[:n_lo]] = len(top) + np.arange(n_lo)
    return place


def _gauss_factors(widths, radius, n, out_index):
    """a(t) and b(t) = (t/β)² a(t) of every width at t = out − in, zero beyond ``radius``."""
    t = np.asarray(out_index, dtype=float)[:, None] - np.arange(n)[None, :]
    beta = np.asarray(widths)[:, None, None]
    q = (t / beta) ** 2
    a = np.where(np.abs(t) <= radius, np.exp(-q / 2.0), 0.0)
    return a, q * a  # each (n_widths, n_out, n)


@functools.lru_cache(maxsize=8)
def _folded_factors(widths, radius, n, out_index, axis):
    """One pass's Toeplitz factors, folded by their mirror symmetry; read-only.

    The row pass has c(a − b) and c a (c = 2/(√(3β) π^¼)), the column pass aᵀ and −bᵀ.
    For an even factor f, output indices closed under o → n − 1 − o and the first half
    of them (up to the middle), (F x)[o] = (F₊ s)[o] + (F₋ d)[o] and
    (F x)[n − 1 − o] = (F₊ s)[o] − (F₋ d)[o], with s and d of :func:`_fold` and
    F₊ = (F_lo + F_hi)/2, F₋ = (F_lo − F_hi)/2 (F₊ also holds the middle column of
    odd n).

    Returns F₊ and F₋ — rows: (w·o·2, ⌈n/2⌉) and (w·o·2, ⌊n/2⌋), o the first-half
    outputs; columns: (w, 2⌈n/2⌉, o) and (w, 2⌊n/2⌋, o) — the first-half outputs o
    (of ``out_index`` and its mirror images, up to the middle) and how many of them
    lie below the middle.
    """
    out = np.asarray(out_index)
    every = np.union1d(out, n - 1 - out)
    top = every[2 * every <= n - 1]
    a, b = _gauss_factors(widths, radius, n, top)
    if axis == "rows":
        c = (2.0 / (np.sqrt(3.0 * np.asarray(widths)) * np.pi**0.25))[:, None, None, None]
        factors = c * np.stack([a - b, a], axis=2)  # (w, top, 2, n)
    else:
        factors = np.stack([a, -b], axis=1)  # (w, 2, top, n)
    h = n // 2
    lo, hi = factors[..., :h], factors[..., ::-1][..., :h]
    plus = 0.5 * (lo + hi)
    if n % 2:
        plus = np.concatenate([plus, factors[..., h : h + 1]], axis=-1)
    minus = 0.5 * (lo - hi)
    if axis == "rows":
        n_rows = int(np.prod(factors.shape[:-1]))
        plus, minus = plus.reshape(n_rows, n - h), minus.reshape(n_rows, h)
    else:  # (w, 2 terms · folded columns, top): both terms summed by one product
        plus = plus.transpose(0, 1, 3, 2).reshape(len(widths), -1, len(top))
        minus = minus.transpose(0, 1, 3, 2).reshape(len(widths), -1, len(top))
    plus, minus = np.ascontiguousarray(plus), np.ascontiguousarray(minus)
    plus.flags.writeable = minus.flags.writeable = False
    return plus, minus, top, int(np.sum(2 * top < n - 1))


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


@functools.lru_cache(maxsize=8)
def _default_mask(shape):
    """:func:`comparison_mask` of ``shape``, computed once (read-only)."""
    mask = comparison_mask(shape)
    mask.flags.writeable = False
    return mask


def _check_mask(mask, shape):
    if mask is None:
        return _default_mask(tuple(shape))
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
    images = np.stack([x, y])
    peaks = _peaks(images, mask)
    _warn_scale_mismatch(peaks[:1], lambda i: "image_x", peaks[1:], lambda i: "image_y")
    s = _cw_ssim_real(*_masked_sums(images, _check_widths(widths), mask), k)
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
