"""The ``random-full`` preset: full-size pipelines with random weights, no checkpoint needed.

Latency and memory depend on the architecture, the dtype and the kernels, not on
the weights' values, so a GPU can be benchmarked at full size without downloading
(or being granted) a checkpoint. Each component is built from the shipped
architecture (its model module's ``full``) exactly as the memory estimate builds it —
the dtypes ``from_pretrained`` would give every tensor — with the parameters on
the meta device; then each parameter is allocated once, directly in its dtype on
the target device, and filled with seeded N(0, 0.02) values, tiled from one
block per dtype (no float32 copy in host memory). Buffers the model computes
itself (position ids, sin-cos tables) are kept as computed. Costs are real; images are noise.
"""

from __future__ import annotations

import torch

from .components import build_on_meta, full_components, materialize
from .registry import model_spec, pipeline_class


def build(model: str, dtype: str, device: str, seed: int = 0):
    """The full-size pipeline of ``model`` with seeded random weights, in ``dtype`` on ``device``."""
    from . import tiny

    spec = model_spec(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    modules = {}
    for name, component in full_components(model).items():
        module = build_on_meta(component, dtype, buffers_on_meta=False)
        materialize(module, device, generator)
        modules[name] = module.eval()
    assert set(spec.text_encoders) <= set(modules)
    tokenizers = tiny.tokenizers(full_components(model))  # at the real vocabulary sizes
    pipe = pipeline_class(model)(**modules, **tokenizers, scheduler=tiny.scheduler(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe
