"""Where the project keeps what it computes once: tiny pipelines, estimate variants, module names."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$DQB_CACHE`` or ``~/.cache/diffusion-quant-bench``."""
    return Path(os.environ.get("DQB_CACHE", Path.home() / ".cache" / "diffusion-quant-bench"))
