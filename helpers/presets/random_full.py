"""``random-full``: the full-size architectures with seeded random weights, built in memory
(helpers/random_full.py): real memory and latency without a download; the images are noise."""

from .full import TIMEOUT_S as _FULL_TIMEOUT_S
from .full import call_defaults  # noqa: F401 (the published call, as full's)

NAME = "random-full"
WEIGHTS = "memory"
SIZE = "full"
EXECUTOR = "ray"
TIMEOUT_S = _FULL_TIMEOUT_S  # it builds the same sizes
NOTE = "random weights: costs are real, images are noise (fidelity is not meaningful)"
