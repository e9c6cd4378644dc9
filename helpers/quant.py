"""Apply one configuration: fuse QKV, quantize (at load or after it, as the backend's module says), compile.

The backend modules (``helpers/backends/``) hold everything backend-specific;
this module only walks a pipeline's components through them.
"""

from __future__ import annotations

from .registry import backend as backend_module
from .registry import model_spec, torch_dtype


class Rejected(Exception):
    """A library or the device refused this combination; the grid records it as ``skipped``."""


def unsupported(backend: str, qtype: str, device: str) -> str | None:
    """Why this device cannot run this quantization, or ``None`` (checked before anything loads)."""
    return None if qtype == "none" else backend_module(backend).unsupported(qtype, device)


def load_config(
    model: str, backend: str, qtype: str, quantize_te: bool, exclude: list[str], dtype: str, fuse_qkv: bool = False
):
    """The ``PipelineQuantizationConfig`` that quantizes at load time, or ``None`` (nothing does).

    The transformer gets diffusers' config of the backend, each text encoder (with
    ``quantize_te``) transformers' config: what users of diffusers write.
    """
    b = backend_module(backend, qtype)
    if qtype == "none":
        return None
    parts = [("transformer", "diffusers", True)]
    if quantize_te:
        parts += [(name, "transformers", False) for name in model_spec(model).text_encoders]
    mapping = {}
    for name, library, transformer in parts:
        config = b.load_time(qtype, library, torch_dtype(dtype), exclude if transformer else [], transformer, fuse_qkv)
        if config is not None:
            mapping[name] = config
    if not mapping:
        return None
    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(quant_mapping=mapping)


def apply_config(
    pipe, model: str, qtype: str, quantize_te: bool, fuse_qkv: bool, exclude: list[str], backend: str = "quanto"
) -> None:
    """Fuse the transformer's QKV projections if asked, then the backend's after-load step on the
    transformer (with ``exclude``) and, with ``quantize_te``, on every text encoder (quanto quantizes here;
    torchao quantizes a fused transformer here; what loaded quantized is left as it is)."""
    b = backend_module(backend, qtype)  # an unknown name is a ValueError of ours, not a library's rejection
    try:
        if fuse_qkv:
            pipe.transformer.fuse_qkv_projections()
        b.after_load(pipe.transformer, qtype, exclude, True, fuse_qkv)
        if quantize_te:
            for name in model_spec(model).text_encoders:
                encoder = getattr(pipe, name, None)
                if encoder is not None:
                    b.after_load(encoder, qtype, [], False, False)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise Rejected(f"{type(e).__name__}: {e}") from e


def compile_transformer(pipe, mode: str | bool) -> None:
    """``torch.compile`` the transformer in place (``False``: leave it eager)."""
    if mode is not False:
        pipe.transformer.compile(mode=mode)
