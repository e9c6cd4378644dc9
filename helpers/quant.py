"""Apply one configuration to a loaded pipeline: fuse QKV, then quantize with optimum-quanto."""

from __future__ import annotations

from .registry import model_spec, quanto_qtype


class Rejected(Exception):
    """A library refused this combination; the grid records it as ``skipped``."""


def quantize_module(module, qtype: str, exclude: list[str] | None = None) -> None:
    """quanto ``quantize`` + ``freeze`` of one module's weights; ``none`` leaves it as it is."""
    from optimum.quanto import freeze, quantize

    weights = quanto_qtype(qtype)
    if weights is None:
        return
    quantize(module, weights=weights, exclude=exclude or None)
    freeze(module)


def apply_config(pipe, model: str, qtype: str, quantize_te: bool, fuse_qkv: bool, exclude: list[str]) -> None:
    """Fuse the transformer's QKV projections if asked, then quantize.

    The transformer gets ``exclude`` (quanto module-name patterns); with
    ``quantize_te`` every text encoder of the pipeline is quantized to the same
    type. ``qtype: none`` quantizes nothing, whatever ``quantize_te`` says.
    """
    quanto_qtype(qtype)  # an unknown name is a ValueError of ours, not a library's rejection
    try:
        if fuse_qkv:
            pipe.transformer.fuse_qkv_projections()
        quantize_module(pipe.transformer, qtype, exclude)
        if quantize_te:
            for name in model_spec(model).text_encoders:
                encoder = getattr(pipe, name, None)
                if encoder is not None:
                    quantize_module(encoder, qtype)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise Rejected(f"{type(e).__name__}: {e}") from e
