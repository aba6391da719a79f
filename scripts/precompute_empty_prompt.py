"""Precompute the empty prompt's text embedding of a local Stable Diffusion folder, once, for
:func:`blindfast.models.diffusers_prior.load_stable_diffusion_prior` (which then needs neither transformers nor the
text encoder).

    python scripts/precompute_empty_prompt.py PATH

reads ``PATH/tokenizer`` (CLIPTokenizer) and ``PATH/text_encoder`` (CLIPTextModel), never downloading, and writes
``PATH/empty_prompt_embedding.safetensors``: key ``"embedding"``, the text encoder's last hidden state for ""
padded to the tokenizer's maximum length, (1, 77, 768) for SD 1.5, float32. As the Stable Diffusion pipeline's
``encode_prompt`` computes it for an empty prompt (its unconditional branch), without the attention mask unless the
text encoder's config asks for one. Needs ``pip install transformers``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save

from blindfast.atomic_file import save_atomic
from blindfast.models.diffusers_prior import EMPTY_PROMPT_FILE, EMPTY_PROMPT_KEY


def empty_prompt_embedding(folder: Path) -> torch.Tensor:
    """The (1, N, D) float32 text-encoder output for the empty prompt.

    Raises:
        ImportError: without transformers.
        FileNotFoundError: for a missing ``tokenizer`` or ``text_encoder`` subfolder.
    """
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as error:
        raise ImportError(f"computing the empty-prompt embedding needs transformers: pip install transformers "
                          f"({error})") from error
    for name in ("tokenizer", "text_encoder"):
        if not (folder / name).is_dir():
            raise FileNotFoundError(f"expected the Stable Diffusion subfolder {folder / name}, found none")
    tokenizer = CLIPTokenizer.from_pretrained(os.fspath(folder / "tokenizer"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(os.fspath(folder / "text_encoder"), local_files_only=True).eval()
    tokens = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    mask = tokens.attention_mask if getattr(text_encoder.config, "use_attention_mask", False) else None
    with torch.no_grad():
        return text_encoder(tokens.input_ids, attention_mask=mask)[0].float().contiguous()


def write_embedding(folder: Path, embedding: torch.Tensor) -> Path:
    """Writes ``folder/empty_prompt_embedding.safetensors`` atomically
    (:func:`blindfast.atomic_file.save_atomic`), so a crash never leaves a truncated file for the loader to find."""
    target = folder / EMPTY_PROMPT_FILE
    data = save({EMPTY_PROMPT_KEY: embedding})
    save_atomic(target, lambda f: f.write(data))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Writes PATH/{EMPTY_PROMPT_FILE}, the empty prompt's text "
                                                 "embedding of a local Stable Diffusion folder.")
    parser.add_argument("path", type=Path, help="the Stable Diffusion folder (with tokenizer/ and text_encoder/)")
    folder = parser.parse_args(argv).path.expanduser()
    if not folder.is_dir():
        raise SystemExit(f"no folder at {folder}")
    embedding = empty_prompt_embedding(folder)
    print(f"wrote {write_embedding(folder, embedding)}: {EMPTY_PROMPT_KEY!r}, shape {tuple(embedding.shape)}")


if __name__ == "__main__":
    main()
