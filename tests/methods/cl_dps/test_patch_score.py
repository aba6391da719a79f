"""CL-DPS's patch-wise score against a float64 loop over patches, its gradient (gradcheck, and the batched gradient
against autograd), the grid padding, and every bad input."""

import pytest
import torch
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair
from blindfast.methods.cl_dps.patch_score import PatchScore, grid_padding


def tiny_encoder(dtype=torch.float32, channels=3):
    """Two stages of 8 and 16 channels: downsampling 4, so 8 x 8 patches work."""
    torch.manual_seed(0)
    return ContrastiveEncoder(channels=channels, widths=(8, 16), blocks=(1, 1)).to(dtype).eval()


def reference_score(encoder, y, x, patch, stride, y_encoder=None):
    """-mean over patches of <F(y patch), F(x patch)>, one patch at a time in float64, after reflect-padding both to
    the smallest size whose grid fits (extra rows split as extra // 2 on top), computed here from its definition;
    y's patches through ``y_encoder``'s features when given."""
    y_encoder = encoder if y_encoder is None else y_encoder
    def pad(image):
        extras = []
        for length in (image.shape[-1], image.shape[-2]):
            extra = next(e for e in range(stride) if (length + e - patch) % stride == 0)
            extras += [extra // 2, extra - extra // 2]
        return F.pad(image, extras, mode="reflect")

    y, x = pad(y.double()), pad(x.double())
    similarities = []
    for top in range(0, y.shape[-2] - patch + 1, stride):
        for left in range(0, y.shape[-1] - patch + 1, stride):
            fy = y_encoder.features(y[..., top:top + patch, left:left + patch])
            fx = encoder.features(x[..., top:top + patch, left:left + patch])
            similarities.append((fy * fx).sum())
    return -torch.stack(similarities).mean()


@pytest.mark.parametrize("size", [(16, 16), (20, 24), (19, 27)])
@pytest.mark.parametrize("stride", [1, 4, 8])
def test_score_equals_the_loop_over_patches(size, stride):
    encoder = tiny_encoder()
    generator = torch.Generator().manual_seed(1)
    y, x = (torch.rand(1, 3, *size, generator=generator) * 2 - 1 for _ in range(2))
    scorer = PatchScore(encoder, y, patch=8, stride=stride, batch=5)
    expected = reference_score(tiny_encoder(torch.float64), y, x, 8, stride)
    torch.testing.assert_close(scorer.score(x).double(), expected, atol=1e-5, rtol=1e-5)
    value, _ = scorer.value_and_grad(x)
    torch.testing.assert_close(value.double(), expected, atol=1e-5, rtol=1e-5)
    rows = (size[0] + sum(grid_padding(size[0], 8, stride)) - 8) // stride + 1
    cols = (size[1] + sum(grid_padding(size[1], 8, stride)) - 8) // stride + 1
    assert scorer.patch_count == rows * cols


def test_score_of_the_measurement_itself_is_minus_one():
    encoder = tiny_encoder()
    y = torch.rand(1, 3, 20, 20) * 2 - 1
    scorer = PatchScore(encoder, y, patch=8, stride=4)
    torch.testing.assert_close(scorer.score(y), torch.tensor(-1.0))


def test_grid_padding_reaches_the_next_grid_size():
    for length in range(8, 40):
        for stride in range(1, 9):
            before, after = grid_padding(length, 8, stride)
            assert (length + before + after - 8) % stride == 0 and 0 <= before <= after < stride
            assert before + after == min(e for e in range(stride) if (length + e - 8) % stride == 0)


@pytest.mark.parametrize("size", [(16, 16), (17, 21)])
def test_score_gradcheck_float64(size):
    encoder = tiny_encoder(torch.float64)
    generator = torch.Generator().manual_seed(2)
    y = torch.rand(1, 3, *size, generator=generator, dtype=torch.float64) * 2 - 1
    x = (torch.rand(1, 3, *size, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    scorer = PatchScore(encoder, y, patch=8, stride=4, batch=3)
    assert torch.autograd.gradcheck(scorer.score, (x,))


def test_batched_gradient_equals_autograd_of_the_whole_score():
    encoder = tiny_encoder(torch.float64)
    generator = torch.Generator().manual_seed(3)
    y, x = (torch.rand(1, 3, 21, 18, generator=generator, dtype=torch.float64) * 2 - 1 for _ in range(2))
    expected = torch.autograd.grad(PatchScore(encoder, y, patch=8, stride=2).score(x.requires_grad_(True)), x)[0]
    for batch in (1, 7, 1000):
        value, grad = PatchScore(encoder, y, patch=8, stride=2, batch=batch).value_and_grad(x)
        torch.testing.assert_close(grad, expected, atol=1e-12, rtol=1e-10)
    assert all(p.grad is None for p in encoder.parameters())      # no work for the weights


def test_bad_inputs_name_what_was_expected_and_got():
    encoder = tiny_encoder()
    y = torch.zeros(1, 3, 16, 16)
    cases = [
        (dict(y=torch.zeros(1, 3, 6, 16), patch=8, stride=4), r"at least one patch \(8 x 8\), got 6 x 16"),
        (dict(y=y, patch=8, stride=0), "stride must be an int >= 1, got 0"),
        (dict(y=y, patch=8, stride=9), "stride must be at most the patch size 8 .*, got 9"),
        (dict(y=y, patch=6, stride=2), "multiple of the encoder's downsampling 4, got 6"),
        (dict(y=torch.zeros(1, 1, 16, 16), patch=8, stride=4), "takes 3-channel patches, got a 1-channel image"),
        (dict(y=torch.zeros(2, 3, 16, 16), patch=8, stride=4), r"\(1, C, H, W\) tensor, got \(2, 3, 16, 16\)"),
        (dict(y=y, patch=8, stride=4, batch=0), "batch must be an int >= 1 .*, got 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            PatchScore(encoder, **kwargs)
    wrong_size = r"expected a \(1, 3, 16, 16\) image like the measurement, got \(1, 3, 16, 20\)"
    with pytest.raises(ValueError, match=wrong_size):
        PatchScore(encoder, y, patch=8, stride=4).score(torch.zeros(1, 3, 16, 20))


def test_two_encoders_score_y_by_f_y_once_and_x_by_f_x():
    torch.manual_seed(0)
    pair = EncoderPair(channels=3, widths=(8, 16), blocks=(1, 1)).eval()
    calls = {"x": 0, "y": 0}
    # count each side's trunk calls (one per batch of patches)
    for side, name in ((pair.x_side, "x"), (pair.y_side, "y")):
        side.trunk_blocks.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    generator = torch.Generator().manual_seed(2)
    y, x = (torch.rand(1, 3, 20, 24, generator=generator) * 2 - 1 for _ in range(2))
    scorer = PatchScore(pair, y, patch=8, stride=4, batch=7)
    y_calls = calls["y"]
    assert y_calls == -(-scorer.patch_count // 7) and calls["x"] == 0   # y's batches through F_y, none through F_x
    pair64 = EncoderPair(channels=3, widths=(8, 16), blocks=(1, 1)).double()
    pair64.load_state_dict(pair.state_dict())
    expected = reference_score(pair64.x_side, y, x, 8, 4, y_encoder=pair64.y_side)
    torch.testing.assert_close(scorer.score(x).double(), expected, atol=1e-5, rtol=1e-5)
    value, grad = scorer.value_and_grad(x)
    torch.testing.assert_close(value.double(), expected, atol=1e-5, rtol=1e-5)
    x64 = x.double().requires_grad_(True)
    (reference_grad,) = torch.autograd.grad(reference_score(pair64.x_side, y, x64, 8, 4, y_encoder=pair64.y_side),
                                            x64)
    torch.testing.assert_close(grad.double(), reference_grad, atol=1e-6, rtol=1e-4)
    assert calls["y"] == y_calls   # scoring x never re-encodes y
    # the two sides differ: scoring y against itself is not the one-encoder optimum -1
    assert scorer.score(y).item() > -0.999
