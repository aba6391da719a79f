"""The patch operator is sv_conv's blur at the patch centre: checked against sv_conv itself and by gradcheck."""

import torch

from blindfast.methods.ddm.patch_blur import blur_patches, kernels_at
from blindfast.ops import sv_conv
from blindfast.physics import lens_psf_grid, psf_at

SMALL_LENS = {"sigma0": 0.5, "field_blur": 0.3, "astigmatism": 0.2, "coma": 1.0, "lateral_ca": 0.3}  # reach < 3.5


def test_patch_blur_with_a_uniform_grid_is_sv_conv_valid():
    grid = lens_psf_grid((1, 1), 9, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64, **SMALL_LENS)
    crops = torch.rand(4, 3, 30, 26, dtype=torch.float64)
    kernels = kernels_at(grid, torch.rand(4, 2, dtype=torch.float64) * 20, (21, 21))
    torch.testing.assert_close(blur_patches(crops, kernels), sv_conv(crops, grid, padding="valid"),
                               rtol=0, atol=1e-14)


def test_kernels_at_are_psf_at_per_patch():
    grid = lens_psf_grid((4, 5), 9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64, **SMALL_LENS)
    centres = torch.tensor([[0.0, 0.0], [10.3, 77.9], [63.0, 99.0]], dtype=torch.float64)
    kernels = kernels_at(grid, centres, (64, 100))
    assert kernels.shape == (3, 3, 9, 9)
    for b in range(3):
        torch.testing.assert_close(kernels[b], psf_at(grid, centres[b:b + 1], (64, 100))[0, :, 0])


def test_patch_blur_at_a_pixel_matches_sv_conv_of_a_varying_grid_there():
    # sv_conv's output at pixel p is the convolution with the PSF at p: a patch centred at p, blurred with the
    # kernel at its centre, has sv_conv's value at its centre pixel
    grid = lens_psf_grid((3, 3), 9, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, **SMALL_LENS)
    image = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    full = sv_conv(image, grid, padding="valid")                  # (1, 3, 32, 32): frame of the valid output
    row, col = 13, 20                                              # a pixel of the valid output
    crop = image[:, :, row:row + 9, col:col + 9]                   # the 9 x 9 input window of that pixel
    kernel = kernels_at(grid, torch.tensor([[row, col]], dtype=torch.float64), (32, 32))
    torch.testing.assert_close(blur_patches(crop, kernel)[0, :, 0, 0], full[0, :, row, col], rtol=0, atol=1e-14)


def test_patch_blur_gradients():
    crops = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    kernels = torch.rand(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blur_patches, (crops, kernels))
