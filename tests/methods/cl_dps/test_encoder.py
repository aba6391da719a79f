"""The contrastive encoder's shapes, normalisation, independence of the batch, and its errors."""

import pytest
import torch

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder


def test_features_are_the_normalised_last_stage_map_and_do_not_mix_the_batch():
    torch.manual_seed(0)
    encoder = ContrastiveEncoder().eval()
    patches = torch.rand(4, 3, 64, 64) * 2 - 1
    features = encoder.features(patches)
    assert features.shape == (4, 128 * 8 * 8)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(4))
    last = encoder.trunk(patches)
    torch.testing.assert_close(features, last.flatten(1) / last.flatten(1).norm(dim=1, keepdim=True))
    torch.testing.assert_close(encoder.features(patches[1:2]), features[1:2], atol=1e-6, rtol=1e-5)
    embedding, colour = encoder.heads(patches)
    assert embedding.shape == (4, 128) and colour.shape == (4, 3, 8, 8)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(4))
    assert ContrastiveEncoder(**encoder.config).config == encoder.config


def test_bad_patches_and_settings_are_refused():
    encoder = ContrastiveEncoder()
    with pytest.raises(ValueError, match=r"expected \(N, 3, n, n\) patches .* got \(2, 1, 64, 64\)"):
        encoder.features(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="divisible by 8 .* got \\(60, 60\\)"):
        encoder.features(torch.zeros(2, 3, 60, 60))
    with pytest.raises(ValueError, match="one block count"):
        ContrastiveEncoder(widths=(32, 64), blocks=(1,))
