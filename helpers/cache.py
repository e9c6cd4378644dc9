"""Writing what the project computes once (under ``paths.cache_dir()``): named by a hash of its key, written
whole or not at all.

Every cache follows the same two steps: name the file by ``key_hash`` of everything its content depends on,
and, on a miss, ``write_atomic`` it. A reader, in this process or another one (a Ray worker, a notebook's
kernel), finds either no file or the whole file, never half of one; two writers of the same key each write
their own temporary file and the last ``os.replace`` wins with the same content.

Nothing here imports the rest of the package: any module may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def key_hash(key, length: int) -> str:
    """The first ``length`` hex digits of the sha256 of ``key`` as canonical JSON (sorted keys, ``str()`` of
    anything JSON does not know): the same key gives the same name on every machine and in every process."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def write_atomic(path: Path, data: str | bytes | Callable[[Path], object]) -> Path:
    """Put ``data`` at ``path`` atomically and return ``path``; the parent folders are made if needed.

    ``data``: the text (UTF-8) or bytes of the file, or a writer called with a temporary path beside ``path``
    (``.<name>.<pid>-<random>.tmp``, one per call) that writes the file, or builds a folder, there. The result
    is then ``os.replace``d into place. A folder cannot replace a folder that is already there: another
    process finished first, and its folder is kept. The temporary path is removed whatever happens, so a
    failed writer leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")  # this writer's alone
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():
                raise
    finally:
        _remove(tmp)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
