"""What the tests of stored files share: a copy of shipped weights to spoil, and one spoilt byte."""

import shutil
from pathlib import Path

from blindfast.models.shipped import WEIGHTS_DIR


def copy_shipped(name: str, folder: Path) -> Path:
    """Copies the shipped ``<name>.json`` and ``<name>.safetensors`` into ``folder``; returns the weights' path."""
    for suffix in (".json", ".safetensors"):
        shutil.copy(WEIGHTS_DIR / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.safetensors"


def flip_bits(path: Path, index: int, mask: int) -> bytes:
    """XORs the byte at ``index`` of the file with ``mask`` in place; returns the file's new bytes."""
    data = bytearray(path.read_bytes())
    data[index] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)
