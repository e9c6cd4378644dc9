"""Library noise that says nothing about a run, filtered where it is logged; every other warning still shows.

diffusers imports torchao whenever it is installed (its quantizer registry), even for a quanto run, and
that import logs lines a newcomer reads as a failure. Each filter below drops one exact message:

- torchao ``Failed to load .../_C_*.so``: optional prebuilt kernels for other Pythons or GPUs (``_C_mxfp8``
  for Python 3.10, ``_C_cutlass_90a`` for Hopper). A configuration that needs one fails on its own, and its
  record says so.
- torch ``... register_constant() on Enum subclasses is deprecated``: torchao registering its enums the old
  way, at import; nothing a run does.
- diffusers ``Unable to import `torchao` Tensor objects``: diffusers looking for classes this torchao
  version moved; it affects only loading checkpoints serialized with torchao, which no preset does.
"""

from __future__ import annotations

import logging
import re

# logger name -> the messages it logs that say nothing about a run
NOISE = {
    "torchao": re.compile(r"Failed to load .*/torchao/_C\w*\.[\w.-]*so\b"),
    "torch.utils._pytree": re.compile(r"is an Enum subclass .* register_constant\(\) on Enum subclasses is deprecated"),
    "diffusers.quantizers.torchao.torchao_quantizer": re.compile(r"^Unable to import `torchao` Tensor objects"),
}


class _Drop(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def install() -> None:
    """Add each filter to its logger once (before the library logs: a logger is the same object later)."""
    for name, pattern in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(pattern))
