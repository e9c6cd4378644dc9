"""One module per model; a new model is its module and one line here."""

from . import auraflow, flux_dev, pixart, sd3
from .spec import ModelSpec

SPECS: dict[str, ModelSpec] = {m.SPEC.key: m.SPEC for m in (pixart, flux_dev, sd3, auraflow)}
