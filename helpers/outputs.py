"""Where a record's images and latents live, and the check that a file is still the one it measured.

Every output file is named after its record's full identity (``Record.identity_key``: the configuration,
the call, the preset, the checkpoint, the device and, on CUDA, the GPU model): two parameter sets written
into one ``out_dir`` never share a file. Each file's SHA-256 is in its record; a file whose bytes differ is
refused (``Mismatch``) by everything that shows or compares it.

Records written before these fields existed name only ``image_path``: their files are found where that
version put them, and are used unchecked (there is no hash to check them against).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .cells import cell_of
from .records import Record, section_of


class Mismatch(ValueError):
    """An output file is missing or is not the file its record measured."""


def identity_hash(record: Record) -> str:
    """12 hex digits of the SHA-256 of the record's identity."""
    return hashlib.sha256(record.identity_key().encode()).hexdigest()[:12]


def names(record: Record) -> tuple[list[str], str]:
    """(image per prompt, latents file), relative to ``out_dir``, for a record being written now."""
    folder = section_of(record)
    stem = f"{cell_of(record).slug}-{identity_hash(record)}"
    images = [f"images/{folder}/{stem}" + ("" if i == 0 else f"_p{i}") + ".png" for i in range(len(record.prompts))]
    return images, f"latents/{folder}/{stem}.safetensors"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _legacy(record: Record) -> tuple[list[str], str | None]:
    """Where a version before the hashes put a record's files (named by configuration only)."""
    if not record.image_path:
        return [], None
    first = Path(record.image_path)
    images = [record.image_path] + [(first.parent / f"{first.stem}_p{i}.png").as_posix()
                                    for i in range(1, len(record.prompts))]  # fmt: skip
    latents = (Path("latents") / first.parent.name / f"{first.stem}.safetensors").as_posix()
    return images, latents


def files(record: Record) -> tuple[list[str], str | None]:
    """(images, latents) of a stored ``ok`` record, relative to ``out_dir``."""
    if record.image_paths:
        return list(record.image_paths), record.latents_path
    return _legacy(record)


def read(out_dir: str | Path, relative: str, expected: str | None) -> bytes:
    """A file's bytes, refused (``Mismatch``) when missing or when its SHA-256 is not ``expected``."""
    path = Path(out_dir) / relative
    if not path.is_file():
        raise Mismatch(f"{relative} is missing")
    data = path.read_bytes()
    if expected is not None and sha256(data) != expected:
        raise Mismatch(f"{relative} is not the image its record measured (SHA-256 differs): "
                       "another run wrote over it")  # fmt: skip
    return data


def image_bytes(out_dir: str | Path, record: Record, prompt: int = 0) -> bytes:
    """The PNG of one prompt of an ``ok`` record, checked against its hash."""
    images, _ = files(record)
    if prompt >= len(images):
        raise Mismatch(f"the record has no image for prompt {prompt}")
    return read(out_dir, images[prompt], record.image_sha256[prompt] if record.image_sha256 else None)


def image_problem(out_dir: str | Path, record: Record) -> str | None:
    """Why the first image of an ``ok`` record cannot be shown, or ``None``."""
    try:
        image_bytes(out_dir, record)
    except Mismatch as e:
        return str(e)
    return None


def load(out_dir: str | Path, record: Record):
    """(PIL image per prompt, latents tensor per prompt) of an ``ok`` record, every file checked."""
    import io

    from PIL import Image
    from safetensors.torch import load as load_tensors

    images, latents = files(record)
    if latents is None:
        raise Mismatch("the record names no output files")
    pictures = [Image.open(io.BytesIO(image_bytes(out_dir, record, i))).copy() for i in range(len(images))]
    tensors = load_tensors(read(out_dir, latents, record.latents_sha256))
    return pictures, [tensors[f"p{i}"] for i in range(len(images))]
