"""Apply one configuration: fuse QKV, quantize (at load or after it, as the backend's module says), compile.

The backend modules (``helpers/backends/``) hold everything backend-specific;
this module only walks a pipeline's components through them.
"""

from __future__ import annotations

import functools

from .backends import PUBLISHED
from .cells import Cell
from .registry import backend as backend_module
from .registry import model_spec, torch_dtype


class Rejected(Exception):
    """A library or the device refused this combination; the grid records it as ``skipped``."""


@functools.lru_cache(maxsize=None)
def fuse_unsupported(model: str) -> str | None:
    """Why this model's transformer cannot fuse its QKV projections, or ``None``: its class has no
    ``fuse_qkv_projections`` in the installed diffusers, or has one that fuses nothing (diffusers' generic
    method passes over attention modules that do not support fusion without a word). Tried on the tiny
    architecture built on the meta device: the same classes as at full size."""
    import diffusers
    import torch

    from .components import instantiate, tiny_components

    name = model_spec(model).full["transformer"][1]
    if not hasattr(getattr(diffusers, name), "fuse_qkv_projections"):
        return f"{name} has no fuse_qkv_projections in diffusers {diffusers.__version__}: nothing fuses its q, k and v"
    with torch.device("meta"):
        module = instantiate(tiny_components(model)["transformer"])
    before = {n for n, _ in module.named_modules()}
    module.fuse_qkv_projections()
    if not {n for n, _ in module.named_modules()} - before:
        kinds = sorted({type(m).__name__ for m in module.modules() if hasattr(m, "fuse_projections")})
        return (f"{name}.fuse_qkv_projections fuses nothing in diffusers {diffusers.__version__}: it passes over "
                f"its attention modules ({', '.join(kinds)}), which it does not take as supporting QKV fusion")
    return None


def unsupported(backend: str, config: Cell, device: str, compile_mode: bool | str = False,
                model: str | None = None) -> str | None:  # fmt: skip
    """Why this device or backend cannot run this configuration, or ``None`` (checked before anything loads).
    Its offload mode first: on the CPU every offloading configuration is skipped for that one reason.
    ``model``: also whether its transformer can fuse QKV at all."""
    from . import offload

    if reason := offload.unsupported(backend, config, device, compile_mode):
        return reason
    if config.fuse_qkv and model is not None and (reason := fuse_unsupported(model)):
        return reason
    b = backend_module(backend)
    encoder_qtype = config.encoder_qtype if config.quantize_te else "none"
    for qtype, fuse in ((config.qtype, config.fuse_qkv), (encoder_qtype, False)):  # encoders are never fused
        if qtype != "none" and (reason := b.unsupported(qtype, device, fuse)):
            return reason
    if config.quantize_te and config.encoder_qtype != "none" and not b.TEXT_ENCODERS:
        return b.TE_REASON
    return None


def load_config(model: str, backend: str, config: Cell, exclude: list[str], dtype: str):
    """The ``PipelineQuantizationConfig`` that quantizes at load time, or ``None`` (nothing does).

    The transformer gets diffusers' config of the backend, each text encoder that
    ``config`` quantizes transformers' config (at ``config.encoder_qtype``): what users of diffusers write.
    """
    b = backend_module(backend, config.qtype)
    parts = [("transformer", "diffusers", True, config.qtype)]
    parts += [(name, "transformers", False, config.encoder_qtype) for name in config.encoders(model)]
    mapping = {}
    for name, library, transformer, qtype in parts:
        if qtype == "none":
            continue
        q = b.load_time(qtype, library, torch_dtype(dtype), exclude if transformer else [], transformer, config.fuse_qkv)
        if q is not None:
            mapping[name] = q
    if not mapping:
        return None
    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(quant_mapping=mapping)


def apply_cell(pipe, model: str, config: Cell, exclude: list[str], backend: str = PUBLISHED) -> list[str]:
    """Fuse the transformer's QKV projections if asked, then the backend's after-load step on the
    transformer (with ``exclude``) and on each text encoder ``config`` quantizes (quanto quantizes here;
    torchao quantizes a fused transformer and int4wo here; what loaded quantized is left as it is).

    Returns the backend's ``notes`` for the qtypes it applied on the pipeline's device: what this
    configuration did that its name does not say, for the record's ``notes``."""
    b = backend_module(backend, config.qtype)  # an unknown name is a ValueError of ours, not a library's rejection
    if config.fuse_qkv:
        try:
            pipe.transformer.fuse_qkv_projections()
        except (ValueError, NotImplementedError, TypeError, RuntimeError) as e:  # e.g. GGUF's uint8 blocks
            raise Rejected(f"fuse_qkv_projections: {type(e).__name__}: {e}") from e
    try:
        b.after_load(pipe.transformer, config.qtype, exclude, True, config.fuse_qkv)
        for name in config.encoders(model):
            encoder = getattr(pipe, name, None)
            if encoder is not None:
                b.after_load(encoder, config.encoder_qtype, [], False, False)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise Rejected(f"{type(e).__name__}: {e}") from e
    device = next(pipe.transformer.parameters()).device.type
    qtypes = [config.qtype] + ([config.encoder_qtype] if config.encoders(model) else [])
    notes = [n for q in qtypes if q != "none" for n in b.notes(q, device)]
    return list(dict.fromkeys(notes))  # once each, in order


def compile_transformer(pipe, mode: str | bool) -> None:
    """``torch.compile`` the transformer in place (``False``: leave it eager).

    Every compiled configuration on equal terms (``measure.prepare_compile``):
    inductor's settings back to torch's defaults plus ``measure.INDUCTOR_SETTINGS``
    (a torchao load has set its own flags for the whole process), and a fresh
    cache folder of its own. The compile itself happens in the first call.
    """
    if mode is False:
        return
    from . import measure

    measure.prepare_compile(mode)
    pipe.transformer.compile(mode=mode)
