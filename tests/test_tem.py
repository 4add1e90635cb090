"""TEM image comparison: simulation, Ricker transform, CW-SSIM, rotation scan, scoring."""

import numpy as np
import pytest
from scipy import ndimage

from mlmlearn.applications.tem import (
    compare_images,
    comparison_mask,
    cw_ssim,
    preprocess_tem_image,
    relative_scores,
    ricker_transform,
    ricker_wavelet,
    simulate_tem_image,
    sphere_directions,
    top_directions,
)


def _blobs(shape=(64, 64), n=6, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape)
    for cy, cx, s in rng.uniform([16, 16, 2], [48, 48, 6], size=(n, 3)):
        image += 255 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
    return preprocess_tem_image(1 - np.clip(image, 0, 255) / 255)  # dark blobs, normalised


def _cw_ssim_oracle(x, y, widths, k, mask):
    """Eq. (2.5) term by term, with a direct (non-FFT) convolution."""
    values = []
    radius = int(np.ceil(4 * max(widths)))
    for w in widths:
        kernel = ricker_wavelet(w, radius)
        cx = ndimage.convolve(x, kernel, mode="constant")[mask]
        cy = ndimage.convolve(y, kernel, mode="constant")[mask]
        first = (2 * np.sum(np.abs(cx) * np.abs(cy)) + k) / (np.sum(cx**2) + np.sum(cy**2) + k)
        second = (2 * abs(np.sum(cx * np.conj(cy))) + k) / (2 * np.sum(np.abs(cx * cy)) + k)
        values.append(first * second)
    return np.mean(values)


def test_ricker_wavelet_is_eq_2_4():
    g = ricker_wavelet(3.0, 30)
    assert g[30, 30] == pytest.approx(2 / (np.sqrt(9.0) * np.pi**0.25))
    assert g[30, 33] == pytest.approx(0.0, abs=1e-15)  # |r| = β
    r2 = 2 * 36.0  # pixel (36, 36) from the centre (30, 30)
    expected = 2 / (np.sqrt(9.0) * np.pi**0.25) * (1 - r2 / 9) * np.exp(-r2 / 18)
    assert g[36, 36] == pytest.approx(expected)
    # eq. (2.4) is the 1-D Ricker profile used radially: in 2-D it integrates
    # to -2πβ²·(its peak), not to zero as the Laplacian of a Gaussian would
    assert g.sum() == pytest.approx(-2 * np.pi * 9 * g[30, 30], rel=1e-3)


def test_fft_transform_equals_direct_convolution():
    image = _blobs((40, 52))
    widths = [2.0, 5.0]
    fast = ricker_transform(image, widths)[0]
    radius = int(np.ceil(4 * max(widths)))  # every wavelet on the grid of the widest
    for j, w in enumerate(widths):
        direct = ndimage.convolve(image, ricker_wavelet(w, radius), mode="constant")
        np.testing.assert_allclose(fast[j], direct, atol=1e-9 * np.abs(direct).max())


@pytest.mark.parametrize("shape", [(40, 52), (33, 20), (31, 17), (5, 4), (2, 9), (1, 7)])
@pytest.mark.parametrize("mask_kind", ["disc", "random", "one corner"])
def test_masked_separable_transform_equals_the_fft_transform(shape, mask_kind):
    """cw_ssim's folded separable products give ricker_transform's coefficients at the
    masked pixels, in the mask's order, for even and odd sides, masks that are not
    mirror-symmetric, and the single-row fallback; to rounding of the largest one."""
    from mlmlearn.applications.tem._cwssim import _masked_ricker

    rng = np.random.default_rng(sum(shape))
    images = 255 * rng.random((3, *shape))
    if mask_kind == "disc" and min(shape) > 2:
        mask = comparison_mask(shape)
    elif mask_kind == "one corner":
        mask = np.zeros(shape, dtype=bool)
        mask[-1, 0] = True
    else:
        mask = rng.random(shape) < 0.3
        mask[0, -1] = True
    widths = np.array([1.5, 4.0, 11.0])
    expected = ricker_transform(images, widths)[:, :, mask]
    got = _masked_ricker(images, widths, mask)
    # each coefficient sums ≤ rows·cols products of pixels and wavelet entries (< 1):
    # rounding of those sums, relative to the largest pixel, in both methods
    scale = images.max() * np.prod(shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * np.finfo(float).eps * scale)


@pytest.mark.parametrize(
    "shape", [(128, 128), (40, 52), (33, 21), (31, 17), (5, 4), (2, 9), (337, 24)]
)
@pytest.mark.parametrize("mask_kind", ["disc", "mirrored random", "random"])
@pytest.mark.parametrize("widths", [(1.5, 4.0, 11.0, 30.0), (2.0, 7.0, 19.0), (5.0,)])
def test_masked_sums_equal_the_sums_of_the_fft_coefficients(shape, mask_kind, widths):
    """cw_ssim's sums Σw_x w_y, Σw_x², Σw_y² without the coefficients (mirror-symmetric
    masks: the folded blocks weighted by the mirrored pixels they stand for, 4, 2 on a
    middle row or column, 1 at the centre) equal those of ricker_transform's
    coefficients, for even and odd sides (337 px: above the general path's separable
    limit), and numbers of widths that fill the blocks of widths or leave the last one
    part-full; other masks take the general path."""
    from mlmlearn.applications.tem._cwssim import _masked_sums

    rng = np.random.default_rng(sum(shape))
    images = 255 * rng.random((2, *shape))
    if mask_kind == "disc" and min(shape) > 2:
        mask = comparison_mask(shape)
    else:
        mask = rng.random(shape) < 0.4
        mask[0, 0] = True
        if mask_kind == "mirrored random":
            mask = mask | mask[::-1] | mask[:, ::-1] | mask[::-1, ::-1]
    widths = np.array(widths)
    w = ricker_transform(images, widths)[:, :, mask]
    expected = (w[0] * w[1]).sum(1), (w[0] ** 2).sum(1), (w[1] ** 2).sum(1)
    # each sum of n_mask products of coefficients, each rounded relative to its
    # rows·cols terms: rounding relative to Σ|w_x||w_y| (Cauchy–Schwarz: ≤ the norms)
    scale = np.sqrt(expected[1] * expected[2])
    tol = 64 * np.finfo(float).eps * np.prod(shape)
    for got, want in zip(_masked_sums(images, widths, mask), expected, strict=True):
        np.testing.assert_array_less(np.abs(got - want), tol * scale)


@pytest.mark.parametrize("shape", [(64, 64), (33, 20)])
def test_cw_ssim_default_mask_by_shape_equals_the_mask_given(shape):
    """The default mask's operators, looked up by shape, are those of the same mask
    passed by the caller (a writeable copy, looked up by its pixels): equal values;
    and both equal the FFT transform's."""
    rng = np.random.default_rng(3)
    a, b = 255 * rng.random((2, *shape))
    mask = comparison_mask(shape)
    assert mask.flags.writeable
    by_shape, given = cw_ssim(a, b), cw_ssim(a, b, mask=mask)
    assert by_shape == given
    w = ricker_transform(np.stack([a, b]))[:, :, mask]
    oracle = ((2 * np.abs((w[0] * w[1]).sum(1)) + 0.01)
              / ((w[0] ** 2).sum(1) + (w[1] ** 2).sum(1) + 0.01)).mean()
    assert by_shape == pytest.approx(oracle, rel=1e-9)


def test_cw_ssim_matches_the_term_by_term_oracle_is_one_on_itself_and_symmetric():
    a, b = _blobs(seed=1), _blobs(seed=2)
    mask = np.ones(a.shape, dtype=bool)
    widths = [3.0, 6.0]
    assert cw_ssim(a, b, widths=widths, mask=mask) == pytest.approx(
        _cw_ssim_oracle(a, b, widths, 0.01, mask), rel=1e-9
    )
    assert cw_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cw_ssim(a, b) == pytest.approx(cw_ssim(b, a), rel=1e-12)
    assert cw_ssim(a, b) < 0.99


def test_cw_ssim_tolerates_a_shift_that_ruins_pixel_ssim():
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    a = _blobs(seed=3)
    shifted = np.roll(a, (2, 3), axis=(0, 1))
    pixel = structural_similarity(a, shifted, data_range=255.0)
    wavelet = cw_ssim(a, shifted)
    assert 1 - wavelet < 0.2 * (1 - pixel), (wavelet, pixel)


def test_rotation_scan_recovers_a_known_rotation_within_one_step():
    a = _blobs(seed=4)
    step = 360 / 50
    for true in (0.0, 43.0, 200.0):
        rotated = ndimage.rotate(a, true, reshape=False, order=1)
        _, angle = compare_images([rotated], [a])
        undo = (360 - true) % 360
        error = abs((angle[0, 0] - undo + 180) % 360 - 180)
        assert error <= step, (true, angle)


def test_compare_images_equals_cw_ssim_of_each_rotation():
    a, b = _blobs(seed=5), _blobs(seed=6)
    similarity, angle = compare_images([a], [a, b], n_rotations=4)
    expected = max(
        cw_ssim(ndimage.rotate(a, r, reshape=False, order=1), b) for r in (0, 90, 180, 270)
    )
    # compare_images rotates the transformed image, cw_ssim transforms the rotated one
    assert similarity[0, 1] == pytest.approx(expected, abs=0.02)
    assert similarity[0, 0] == pytest.approx(1.0) and angle[0, 0] == 0.0


def test_relative_scores_hand_computed():
    similarity = [[0.9, 0.5, 0.7, 0.1], [0.2, 0.8, 0.6, 0.4]]
    # ranks (0 = worst): row 1 -> 3, 1, 2, 0; row 2 -> 0, 3, 2, 1; / (2 * 3)
    np.testing.assert_allclose(relative_scores(similarity), [3 / 6, 4 / 6, 4 / 6, 1 / 6])
    by_isomer = relative_scores(similarity, groups=["a", "a", "b", "b"])
    # within a: (1 + 0)/2, (0 + 1)/2; within b: (1 + 1)/2, (0 + 0)/2
    np.testing.assert_allclose(by_isomer, [0.5, 0.5, 1.0, 0.0])


def test_sphere_directions_are_even():
    d = sphere_directions(200)
    np.testing.assert_allclose(d.mean(axis=0), 0.0, atol=0.01)
    cos = d @ d.T
    np.fill_diagonal(cos, -1)
    nearest = np.degrees(np.arccos(cos.max(axis=1)))
    assert nearest.max() / nearest.min() < 1.5


def test_simulated_image_follows_eq_2_1():
    from ase import Atoms

    atoms = Atoms("Au", positions=[[0, 0, 0]])
    img = simulate_tem_image(atoms, [0, 0, 1], shape=(21, 21), pixel_size=0.25, eta=1.0)
    assert img[10, 10] == 0  # the atom is black
    r = 0.25 * 4  # four pixels from the centre: exp(-r²/η²)
    assert img[10, 14] == round(255 * (1 - np.exp(-(r**2))))
    assert img[0, 0] == 255


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cw_ssim(np.ones((8, 8)), np.ones((8, 9))), "image_x has shape"),
        (lambda: cw_ssim(np.ones(8), np.ones(8)), "2-D grayscale"),
        (lambda: cw_ssim(np.ones((8, 8)), np.ones((8, 8)), mask=np.zeros((8, 8))), "no pixels"),
        (lambda: cw_ssim(np.ones((8, 8)), np.ones((8, 8)), widths=[0.0]), "widths="),
        (lambda: ricker_wavelet(0.0, 3), "width=0.0"),
        (lambda: compare_images(np.ones((1, 8, 8)), np.ones((1, 9, 9))), "experimental images"),
        (lambda: compare_images(np.ones((8, 8)), np.ones((8, 8)), n_rotations=0), "n_rotations"),
        (lambda: relative_scores([[0.5]]), "n_sim >= 2"),
        (lambda: cw_ssim(np.full((8, 8), np.nan), np.ones((8, 8))), "finite"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _micrograph(atoms, direction, rng, shape, pixel_size):
    """What a microscope adds: saturation, blur, noise, in-plane rotation and shift."""
    img = simulate_tem_image(atoms, direction, shape=shape, pixel_size=pixel_size, saturation=0.6)
    img = ndimage.gaussian_filter(img.astype(float), 1.0)
    img = ndimage.rotate(img, rng.uniform(0, 360), reshape=False, order=1, cval=255)
    img = ndimage.shift(img, rng.uniform(-2, 2, size=2), order=1, cval=255)
    img = img + rng.normal(scale=8.0, size=img.shape)
    return np.clip(img, 0, 255) / 255  # a float micrograph, normalised


def test_the_analysis_tells_isomers_apart(shared_structures):
    from ase.io import read

    true = read(shared_structures / "au25_sch3_18.xyz")
    other = read(shared_structures / "au38_sch3_24_q.xyz")
    rng = np.random.default_rng(0)
    shape, pixel_size = (56, 56), 0.45
    directions = sphere_directions(40)
    picked = rng.choice(40, size=3, replace=False)
    true_directions = directions[picked]
    experimental = [
        preprocess_tem_image(_micrograph(true, d, rng, shape, pixel_size)) for d in true_directions
    ]
    # the analyst models the saturation seen in the micrographs; without it a
    # larger cluster can out-score the true one (see the module docstring)
    simulated = [
        preprocess_tem_image(
            simulate_tem_image(a, d, shape=shape, pixel_size=pixel_size, saturation=0.6)
        )
        for a in (true, other)
        for d in directions
    ]
    isomer = np.repeat(["true", "other"], 40)
    similarity, _ = compare_images(experimental, simulated, widths=np.linspace(2, 12, 5))
    scores = relative_scores(similarity)
    assert scores[isomer == "true"].mean() > scores[isomer == "other"].mean() + 0.2
    # each micrograph's own beam direction is among the best of the true structure's 40
    # (symmetry-equivalent directions of the cluster can share the top places)
    own = similarity[:, isomer == "true"]
    rank = (own > own[np.arange(3), picked][:, None]).sum(axis=1)
    assert np.all(rank < 6), rank
    order, best = top_directions(relative_scores(own), directions, n_top=5)
    assert best.shape == (5, 3) and set(order) & set(picked)


def test_figures_draw():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlmlearn.applications.tem import (
        plot_angles,
        plot_directions,
        plot_scores,
        plot_similarities,
    )

    rng = np.random.default_rng(0)
    groups = np.repeat(["isomer 1", "isomer 2"], 10)
    scores = relative_scores(rng.random((3, 20)))
    assert plot_similarities(rng.random(20), groups).get_ylabel() == "CW-SSIM"
    assert len(plot_scores(scores, groups).lines) == 3
    plot_angles(rng.uniform(0, 360, 30))
    plot_directions(sphere_directions(20), scores, n_top=5)
    plt.close("all")


def test_rotation_operator_equals_ndimage_rotate_on_the_mask():
    from mlmlearn.applications.tem import comparison_mask
    from mlmlearn.applications.tem._cwssim import rotation_operator

    image = _blobs((30, 34), seed=7)
    mask = comparison_mask(image.shape)
    angles = [0.0, 7.2, 95.0, 250.0]
    rotated = (rotation_operator(image.shape, mask, angles) @ image.ravel()).reshape(4, -1)
    for a, got in zip(angles, rotated, strict=True):
        expected = ndimage.rotate(image, a, reshape=False, order=1)[mask]
        np.testing.assert_allclose(got, expected, atol=1e-9 * image.max())


def test_compare_images_equals_the_looped_scan():
    """The matrix-product scan against rotating each transformed image and summing by hand."""
    from mlmlearn.applications.tem import comparison_mask

    exp = [_blobs(seed=8), _blobs(seed=9)]
    sim = [_blobs(seed=10), _blobs(seed=11), exp[0]]
    widths, k, n_rot = [3.0, 7.0], 0.01, 5
    mask = comparison_mask(exp[0].shape)
    similarity, angle = compare_images(exp, sim, widths=widths, n_rotations=n_rot, k=k)
    w_sim = ricker_transform(np.stack(sim), widths)
    for e, image in enumerate(exp):
        w_exp = ricker_transform(image, widths)[0]
        for s in range(len(sim)):
            per_angle = []
            for a in np.arange(n_rot) * 360 / n_rot:
                values = []
                for j in range(len(widths)):
                    x = ndimage.rotate(w_exp[j], a, reshape=False, order=1)[mask]
                    y = w_sim[s, j][mask]
                    values.append((2 * abs(x @ y) + k) / (x @ x + y @ y + k))
                per_angle.append(np.mean(values))
            assert similarity[e, s] == pytest.approx(max(per_angle), rel=1e-10)
            assert angle[e, s] == np.argmax(per_angle) * 360 / n_rot


def _raw_micrograph(seed=0, shape=(64, 64)):
    """An 8-bit micrograph with grey levels throughout (blurred blobs and noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    dark = np.zeros(shape)
    for cy, cx, s in rng.uniform([16, 16, 2], [48, 48, 6], size=(6, 3)):
        dark += 230 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
    image = 250 - dark + rng.normal(scale=6.0, size=shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_one_micrograph_in_any_encoding_preprocesses_the_same():
    """uint8, 16-bit (×257, and within half an 8-bit level), int16 and [0, 1] float copies.

    preprocess_tem_image quantises to paper I's 256 levels, so every encoding whose
    error is below half a level gives the identical image and CW-SSIM 1 to rounding
    (before the dtype was read, the 16-bit copy scored 0.077 and the float one 0.400).
    """
    u8 = _raw_micrograph()
    rng = np.random.default_rng(1)
    x = u8.astype(np.int64)
    copies = {
        "uint16 x257": (x * 257).astype(np.uint16),
        # any 16-bit value that rounds to the same 8-bit level (|offset| / 257 < 1/2)
        "uint16 jittered": np.clip(x * 257 + rng.integers(-128, 129, x.shape), 0, 65535).astype(
            np.uint16
        ),
        "int16": np.rint(x * 32767 / 255).astype(np.int16),
        "float64 [0, 1]": x / 255,
        "float32 [0, 1]": (x / 255).astype(np.float32),
        "float jittered": np.clip(x / 255 + rng.uniform(-0.49, 0.49, x.shape) / 255, 0, 1),
        "list of uint8 rows": [np.asarray(row, dtype=np.uint8) for row in u8],
    }
    reference = preprocess_tem_image(u8)
    assert reference.max() > 200 and np.ptp(reference) > 200  # a real image, not a blank
    for name, copy in copies.items():
        got = preprocess_tem_image(copy)
        np.testing.assert_array_equal(got, reference, err_msg=name)
        assert cw_ssim(got, reference) == pytest.approx(1.0, abs=1e-12), name


def _smooth_float_image(seed=2, shape=(96, 96)):
    """A normalised image whose grey levels lie off the 8-bit grid."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    dark = np.zeros(shape)
    for cy, cx, s in rng.uniform([20, 20, 4], [76, 76, 12], size=(8, 3)):
        dark += 0.9 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
    return np.clip(1 - dark, 0, 1)


def test_a_16_bit_image_and_the_float_it_was_rounded_from_preprocess_alike():
    """65535 = 255·257 with 257 odd: an 8-bit half level is a 16-bit half integer, so the
    16-bit rounding never crosses an 8-bit rounding edge and the results are identical."""
    smooth = _smooth_float_image()
    np.testing.assert_array_equal(
        preprocess_tem_image(np.rint(smooth * 65535).astype(np.uint16)),
        preprocess_tem_image(smooth),
    )


def test_a_12_bit_image_matches_its_float_within_the_quantisation_bound():
    """A 12-bit camera image and the float it was rounded from differ on rounding edges only.

    For b = a + e, CW-SSIM (2.5) of one width is 1 − Σ(Wa − Wb)² / (Σ(Wa)² + Σ(Wb)² + K)
    (when Σ Wa Wb ≥ 0), and Young's inequality bounds Σ(We)² by ‖kernel‖₁² Σe²: the loss
    of similarity is bounded by the pixel differences the quantisation leaves.
    """
    from mlmlearn.applications.tem import DEFAULT_WIDTHS, comparison_mask

    smooth = _smooth_float_image()
    a = preprocess_tem_image(smooth)
    b = preprocess_tem_image(np.rint(smooth * 4095).astype(np.uint16), value_range=(0, 4095))
    e = a - b
    assert 0 < np.count_nonzero(e) < 0.02 * e.size  # only pixels on a rounding edge differ
    mask = comparison_mask(a.shape)
    w = ricker_transform(np.stack([a, b]))[:, :, mask]
    radius = min(int(np.ceil(4 * max(DEFAULT_WIDTHS))), max(a.shape) - 1)
    l1 = np.array([np.abs(ricker_wavelet(width, radius)).sum() for width in DEFAULT_WIDTHS])
    bound = np.mean(l1**2 * (e**2).sum() / ((w[0] ** 2).sum(-1) + (w[1] ** 2).sum(-1) + 0.01))
    loss = 1 - cw_ssim(a, b)
    assert -1e-12 <= loss <= bound, (loss, bound)


def test_value_range_reads_cameras_of_any_depth():
    u8 = _raw_micrograph(seed=4)
    reference = preprocess_tem_image(u8)
    twelve_bit = np.rint(u8.astype(float) * 4095 / 255).astype(np.uint16)
    got = preprocess_tem_image(twelve_bit, value_range=(0, 4095))
    np.testing.assert_array_equal(got, reference)
    counts = 100.0 + 3.0 * u8  # float electron counts, not normalised
    np.testing.assert_array_equal(preprocess_tem_image(counts, value_range=(100, 865)), reference)
    # beyond the range is clipped to black and white, as a display window
    window = preprocess_tem_image(np.clip((counts - 400) / 200, 0, 1))
    np.testing.assert_array_equal(preprocess_tem_image(counts, value_range=(400, 600)), window)


def test_comparisons_read_each_integer_image_on_its_own_range():
    """A list of a uint8 and a uint16 copy is not promoted to one uint16 stack."""
    u8 = _raw_micrograph(seed=5)
    similarity, angle = compare_images([u8, u8.astype(np.uint16) * 257], [u8], n_rotations=4)
    np.testing.assert_allclose(similarity, 1.0, atol=1e-12)
    np.testing.assert_array_equal(angle, 0.0)
    assert cw_ssim(u8, u8.astype(np.uint16) * 257) == pytest.approx(1.0, abs=1e-12)


_GOOD = np.full((16, 16), 0.5)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: preprocess_tem_image(np.full((8, 8), np.nan)), ValueError, "image must be finite"),
        (
            lambda: preprocess_tem_image(np.where(np.eye(8), np.inf, 0.5)),
            ValueError,
            r"image must be finite: 8 pixel\(s\).*index \(0, 0\)",
        ),
        (lambda: preprocess_tem_image(np.ones(8)), ValueError, "image must be a 2-D grayscale"),
        (
            lambda: preprocess_tem_image(np.ones((8, 8, 3), np.uint8)),
            ValueError,
            "convert colour images to grayscale",
        ),
        (lambda: preprocess_tem_image(np.ones((0, 8))), ValueError, "image is empty"),
        (
            lambda: preprocess_tem_image(np.full((8, 8), 200.0)),
            ValueError,
            r"image is a float image with values in \[200, 200\].*value_range",
        ),
        (
            lambda: preprocess_tem_image(np.full((8, 8), -0.1)),
            ValueError,
            r"image is a float image with values in \[-0.1, -0.1\]",
        ),
        (
            lambda: preprocess_tem_image(np.full((8, 8), -5, np.int16)),
            ValueError,
            r"image has negative values \(min -5\) in a int16 image",
        ),
        (
            lambda: preprocess_tem_image(np.full((8, 8), 7, np.int64)),
            ValueError,
            "image has dtype int64",
        ),
        (lambda: preprocess_tem_image([[1, 2], [3, 4]]), ValueError, "image has dtype int64"),
        (
            lambda: preprocess_tem_image(np.ones((8, 8), complex)),
            TypeError,
            "image must be a real-valued grayscale image, got dtype complex128",
        ),
        (
            lambda: preprocess_tem_image(_GOOD, value_range=(1, 1)),
            ValueError,
            "value_range=",
        ),
        (lambda: preprocess_tem_image(_GOOD, value_range=3), ValueError, "value_range=3"),
        (lambda: cw_ssim(_GOOD, np.full((16, 16), np.nan)), ValueError, "image_y must be finite"),
        (
            lambda: cw_ssim(np.ones((16, 16), np.uint64), _GOOD),
            ValueError,
            "image_x has dtype uint64",
        ),
        (
            lambda: compare_images([_GOOD, np.full((16, 16), np.inf)], [_GOOD]),
            ValueError,
            r"experimental\[1\] must be finite",
        ),
        (
            lambda: compare_images([_GOOD], [_GOOD, np.ones((16, 17))]),
            ValueError,
            "simulated holds images of different shapes",
        ),
        (
            lambda: compare_images(_GOOD, np.ones((2, 2, 16, 16))),
            ValueError,
            "simulated must be a stack",
        ),
        (lambda: compare_images(np.ones((0, 16, 16)), _GOOD), ValueError, "experimental holds no"),
        (
            lambda: ricker_transform(np.ones((16, 16), np.int32)),
            ValueError,
            "images has dtype int32",
        ),
    ],
)
def test_bad_images_are_refused_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_images_on_scales_apart_warn_naming_both():
    """The reported input: a raw uint8 micrograph against its [0, 1] float copy read as
    is scored 0.0078 silently. CW-SSIM of an image against itself times c is about
    2c/(1 + c²), so the scale alone decides the score; a ratio above 10 warns."""
    from mlmlearn.applications.tem import ScaleMismatchWarning

    u8 = _raw_micrograph(seed=6)
    with pytest.warns(ScaleMismatchWarning, match=r"image_x and image_y.*ratio 255 > 10"):
        score = cw_ssim(u8, u8 / 255.0)
    assert score < 0.02
    with pytest.warns(ScaleMismatchWarning, match=r"image_y and image_x.*image_y peaks at 255"):
        cw_ssim(u8 / 255.0, u8)
    a = _blobs()
    with pytest.warns(ScaleMismatchWarning, match=r"image_x peaks at 255 and image_y at 0 over"):
        cw_ssim(a, np.zeros_like(a))  # a blank image is no comparison either
    with pytest.warns(
        ScaleMismatchWarning, match=r"simulated\[1\] and experimental\[0\].*ratio 255"
    ):
        compare_images([u8 / 255.0], [u8 / 255.0, u8], n_rotations=2)


@pytest.mark.filterwarnings("error::mlmlearn.applications.tem.ScaleMismatchWarning")
def test_images_on_one_scale_do_not_warn():
    """Different structures, and the same one up to 10x apart in contrast, stay silent:
    at ratio c the score is at most 2c/(1 + c^2) (0.2 at c = 10), no silent failure."""
    a, b = _blobs(seed=0), _blobs(seed=1)
    cw_ssim(a, b)
    cw_ssim(a, a / 9.0)
    compare_images([a, b / 9.0], [a, b], n_rotations=2)
    u8 = _raw_micrograph(seed=7)
    cw_ssim(u8, u8.astype(np.uint16) * 257)  # integers are read on their own range
    assert cw_ssim(np.zeros((32, 32)), np.zeros((32, 32))) == pytest.approx(1.0)
