"""One module per model; a new model is its module and one line here."""

from . import auraflow, flux2_dev, flux_dev, pixart, qwen_image, sd3, sd3_5_large, z_image_turbo
from .spec import ModelSpec

SPECS: dict[str, ModelSpec] = {m.SPEC.key: m.SPEC for m in (pixart, flux_dev, sd3, auraflow, qwen_image, flux2_dev, sd3_5_large, z_image_turbo)}
