"""The shipped encoder cl_tiny: on held-out pairs of the embedded test photos it scores each matching (x_t, y) pair
above the non-matching ones, its manifest matches its weights, and the loader refuses a missing, corrupt or foreign
file."""

import json

import pytest
import torch
from _files import copy_shipped, flip_bits

from blindfast.data import embedded_images
from blindfast.methods.cl_dps import ContrastiveEncoder, PairConfig, draw_pairs, load_encoder
from blindfast.methods.cl_dps.shipped_encoder import DEFAULT_NAME, MANIFEST_FORMAT
from blindfast.models.shipped import WEIGHTS_DIR, ShippedPriorError, file_sha256, shipped_priors

MANIFEST = json.loads((WEIGHTS_DIR / f"{DEFAULT_NAME}.json").read_text())


@pytest.mark.parametrize("family", ["rotation", "zoom", "motion", "gaussian"])
def test_matching_pairs_score_above_non_matching_ones_on_test_photos(family):
    """32 pairs from the test photos, drawn from a seed neither training nor the manifest used: each x_t patch's
    cosine similarity to its own y patch exceeds its mean similarity to the other 31, and beats all 31 for most."""
    encoder = load_encoder()
    pairs = draw_pairs(embedded_images("test"), 32, PairConfig(families=(family,)),
                       torch.Generator().manual_seed(20261207))
    with torch.no_grad():
        similarity = encoder.features(pairs.x_t) @ encoder.features(pairs.y).T  # (32, 32)
    matching = similarity.diagonal()
    others = (similarity.sum(dim=1) - matching) / 31
    assert bool((matching > others).all()), (matching - others).min()
    top1 = (similarity.argmax(dim=1) == torch.arange(32)).double().mean().item()
    assert top1 >= 0.75, top1  # chance: 1/32


def test_manifest_matches_the_weights():
    weights = WEIGHTS_DIR / MANIFEST["weights"]
    assert MANIFEST["format"] == MANIFEST_FORMAT and MANIFEST["name"] == DEFAULT_NAME
    assert file_sha256(weights) == MANIFEST["sha256"]
    assert weights.stat().st_size < 3_000_000
    encoder = load_encoder()
    assert isinstance(encoder, ContrastiveEncoder) and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert sum(p.numel() for p in encoder.parameters()) == MANIFEST["parameters"]
    assert MANIFEST["commands"][0].startswith("blindfast train-cl --data embedded")
    assert [row["family"] for row in MANIFEST["retrieval"]] == ["rotation", "zoom", "motion", "gaussian"]
    assert DEFAULT_NAME not in shipped_priors()  # the priors' listing skips this sibling format


def test_loader_refuses_a_corrupt_weights_file(tmp_path):
    weights = copy_shipped(DEFAULT_NAME, tmp_path)
    flip_bits(weights, -5, 0xFF)
    with pytest.raises(ShippedPriorError, match=f"is corrupt: expected SHA-256 {MANIFEST['sha256']}"):
        load_encoder(DEFAULT_NAME, directory=tmp_path)


def test_loader_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shipped contrastive encoder 'absent'"):
        load_encoder("absent", directory=tmp_path)
    with pytest.raises(ValueError, match="expected a shipped encoder's name .* got '../up'"):
        load_encoder("../up", directory=tmp_path)
    copy_shipped(DEFAULT_NAME, tmp_path)
    (tmp_path / f"{DEFAULT_NAME}.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="its weights file .* does not exist"):
        load_encoder(DEFAULT_NAME, directory=tmp_path)
    (tmp_path / "prior.json").write_text(json.dumps({"format": "blindfast-shipped-prior", "version": 1}))
    with pytest.raises(ShippedPriorError, match="expected format 'blindfast-cl-encoder' version 1"):
        load_encoder("prior", directory=tmp_path)
