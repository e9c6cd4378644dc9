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

from .backends.gates import Requirement
from .components import build_on_meta, full_components, materialize
from .measure import GB, available_bytes, tensor_bytes
from .registry import model_spec, pipeline_class

# What else the build and one call hold beside the weights, at least: the process (torch, diffusers: about
# 1 GiB resident here) and the activations of a handful of tokens. A rule of thumb, not a prediction.
HEADROOM_BYTES = 2 * GB


def weight_bytes(model: str, dtype: str) -> int:
    """The bytes of the full-size pipeline's tensors as ``build`` makes them (unquantized: quantizing comes
    after the build, so the build holds them all at once)."""
    return sum(tensor_bytes([build_on_meta(c, dtype)]) for c in full_components(model).values())


def does_not_fit(model: str, dtype: str, device: str) -> Requirement | None:
    """Why ``build`` cannot hold this pipeline on ``device`` now (a requirement of the device: ``n/a``), or
    ``None``."""
    need, free = weight_bytes(model, dtype), available_bytes(device)
    if need + HEADROOM_BYTES > free:
        where = "GPU memory free" if device == "cuda" else "host memory available"
        return Requirement(f"random-full {model} {dtype} needs {need / GB:.1f} GiB for its weights (plus "
                           f"{HEADROOM_BYTES / GB:.0f} GiB headroom) and this machine has {free / GB:.1f} GiB of {where}")
    return None


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
