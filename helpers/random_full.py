"""The ``random-full`` preset: full-size pipelines with random weights, no checkpoint needed.

Latency and memory depend on the architecture, the dtype and the kernels, not on
the weights' values, so a GPU can be benchmarked at full size without downloading
(or being granted) a checkpoint. Each component is built from the shipped
architecture (``architectures.py``) exactly as the memory estimate builds it —
the dtypes ``from_pretrained`` would give every tensor — with the parameters on
the meta device; then each parameter is allocated once, directly in its dtype on
the target device, and filled with seeded N(0, 0.02) values, tiled from one
block per dtype (no float32 copy in host memory). Buffers the model computes itself (position ids, sin-cos tables) are
kept as computed. Costs are real; images are noise.
"""

from __future__ import annotations

import torch

from .estimate import build_on_meta, full_components
from .registry import model_spec, pipeline_class

INIT_STD = 0.02  # every float parameter ~ N(0, 0.02); integers would be zeros (none here)
# Drawing 5-12 billion normal numbers took most of a build on the CPU (52 s for T5-XXL alone on 2 cores).
# Instead each dtype gets one seeded block of N(0, INIT_STD) values, and every parameter is that block
# tiled, starting at its own seeded offset: memory-bound copies, the same bytes for the same seed.
BLOCK = 1 << 22


def _fill(flat: torch.Tensor, block: torch.Tensor, generator: torch.Generator) -> None:
    offset = int(torch.randint(0, BLOCK, (1,), generator=generator, device=block.device))
    source = torch.cat([block[offset:], block[:offset]])
    whole, rest = divmod(flat.numel(), BLOCK)
    if whole:
        flat[: whole * BLOCK].view(whole, BLOCK).copy_(source.expand(whole, BLOCK))
    if rest:
        flat[whole * BLOCK :].copy_(source[:rest])


def materialize(module: torch.nn.Module, device: str, generator: torch.Generator) -> None:
    """Give every meta parameter real, seeded storage on ``device``; a shared parameter stays shared."""
    blocks: dict[torch.dtype, torch.Tensor] = {}
    done: dict[int, torch.nn.Parameter] = {}
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is None:
                continue
            if id(p) not in done:
                data = torch.empty(p.shape, dtype=p.dtype, device=device)
                if data.is_floating_point():
                    if p.dtype not in blocks:
                        block = torch.empty(BLOCK, dtype=torch.float32, device=device)
                        blocks[p.dtype] = block.normal_(0.0, INIT_STD, generator=generator).to(p.dtype)
                    _fill(data.view(-1), blocks[p.dtype], generator)
                else:
                    data.zero_()
                done[id(p)] = torch.nn.Parameter(data, requires_grad=False)
            sub._parameters[name] = done[id(p)]
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = b.to(device)


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
    t5 = tiny._t5_tokenizer(vocab_size=32128)
    clip = tiny._clip_tokenizer(vocab_size=49408)
    tokenizers = {"pixart": {"tokenizer": t5},
                  "flux-dev": {"tokenizer": clip, "tokenizer_2": t5},
                  "sd3": {"tokenizer": clip, "tokenizer_2": clip, "tokenizer_3": t5}}[model]  # fmt: skip
    assert set(spec.text_encoders) <= set(modules)
    pipe = pipeline_class(model)(**modules, **tokenizers, scheduler=tiny.scheduler(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe
