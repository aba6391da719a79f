"""The contrastive encoder's shapes, normalisation, independence of the batch, and its errors; the dense embedding
and the two-encoder pair."""

import json

import pytest
import torch
from torch.nn import functional as F

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair, encoder_from_config


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


def test_dense_embedding_is_the_inference_feature_and_the_pair_rebuilds_from_its_config():
    torch.manual_seed(0)
    encoder = ContrastiveEncoder(widths=(8, 16), blocks=(1, 1), dense_dim=4)
    patches = torch.rand(3, 3, 16, 16) * 2 - 1
    embedding, _ = encoder.heads(patches)
    assert embedding.shape == (3, encoder.embedding_dim(16)) == (3, 4 * 4 * 4)
    torch.testing.assert_close(encoder.features(patches), embedding, rtol=0, atol=0)
    last = encoder.trunk(patches)   # a 1x1 convolution at every location, flattened, unit length
    dense = torch.einsum("dc,nchw->ndhw", encoder.projection.weight[:, :, 0, 0], last)
    expected = F.normalize((dense + encoder.projection.bias[:, None, None]).flatten(1), dim=1)
    torch.testing.assert_close(embedding, expected, rtol=1e-5, atol=1e-6)
    pair = EncoderPair(widths=(8, 16), blocks=(1, 1))
    rebuilt = encoder_from_config(json.loads(json.dumps(pair.config)))   # as a manifest stores it
    assert type(rebuilt) is EncoderPair and rebuilt.config == pair.config
    rebuilt.load_state_dict(pair.state_dict())
    torch.testing.assert_close(rebuilt.measurement_features(patches), pair.y_side.features(patches))
    assert "dense_dim" not in ContrastiveEncoder().config   # the one-encoder config (cl_tiny's manifest) as before
    with pytest.raises(ValueError, match="compare dense embeddings: expected dense_dim an int >= 1, got 0"):
        EncoderPair(dense_dim=0)
