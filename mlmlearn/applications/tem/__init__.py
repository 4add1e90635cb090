"""TEM image comparison by complex-wavelet structural similarity (paper I, thesis 2.1 and 3.1).

Simulate TEM images of candidate structures from many beam directions, preprocess them
and the experimental images the same way, compare every pair by CW-SSIM of 2-D Ricker
wavelet transforms over a rotation scan, and score the simulated images relative to each
other::

    directions = sphere_directions(200)
    simulated = [preprocess_tem_image(simulate_tem_image(atoms, d)) for d in directions]
    experimental = [preprocess_tem_image(image) for image in micrographs]
    similarity, angle = compare_images(experimental, simulated)
    scores = relative_scores(similarity)

Micrographs are read by dtype and range (:func:`preprocess_tem_image`): 8- and 16-bit
integer images on their dtype's range, float images as normalised to [0, 1], anything
else only with an explicit ``value_range=(black, white)``; ambiguous inputs are refused.

Simulated images have no saturation, experimental ones do (thick regions absorb the
whole beam, thesis figure 2.1). Model it with ``simulate_tem_image(..., saturation=)``.
In a synthetic check (Au25 micrographs saturated at 60 % of the peak, blurred, noisy,
rotated and shifted; 64×64 px at 0.45 Å/px; 40 directions per structure), unsaturated
simulations ranked the larger Au38 cluster above the true Au25 (mean relative score
0.40 vs 0.60), while simulations saturated at 50–80 % ranked Au25 first (0.73–0.55 vs
0.27–0.45).
"""

from ._cwssim import (
    DEFAULT_WIDTHS,
    ScaleMismatchWarning,
    compare_images,
    comparison_mask,
    cw_ssim,
    ricker_transform,
    ricker_wavelet,
)
from ._images import preprocess_tem_image, simulate_tem_image, sphere_directions
from ._plotting import plot_angles, plot_directions, plot_scores, plot_similarities
from ._scoring import relative_scores, top_directions

__all__ = [
    "DEFAULT_WIDTHS",
    "ScaleMismatchWarning",
    "comparison_mask",
    "compare_images",
    "cw_ssim",
    "plot_angles",
    "plot_directions",
    "plot_scores",
    "plot_similarities",
    "preprocess_tem_image",
    "relative_scores",
    "ricker_transform",
    "ricker_wavelet",
    "simulate_tem_image",
    "sphere_directions",
    "top_directions",
]
