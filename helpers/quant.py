"""Apply one configuration: quantize (optimum-quanto after load; torchao / bitsandbytes at load,
through diffusers' and transformers' own configs), fuse QKV, and compile."""

from __future__ import annotations

from .registry import model_spec, quantization_config, quanto_qtype


class Rejected(Exception):
    """A library or the device refused this combination; the grid records it as ``skipped``."""


def unsupported(backend: str, qtype: str, device: str) -> str | None:
    """Why this device cannot run this quantization, or ``None`` (checked before anything loads)."""
    if qtype == "none":
        return None
    if backend == "bnb" and device != "cuda":
        return "bitsandbytes nf4/int8 layers run on CUDA only in this project (device: cpu)"
    if backend == "torchao" and qtype == "fp8dq":
        import torch

        if device != "cuda" or torch.cuda.get_device_capability() < (8, 9):
            return "torchao fp8dq (float8 activations) needs a CUDA device of compute capability 8.9 or newer"
    if backend == "torchao" and qtype == "int4wo" and device != "cuda":
        return "torchao int4wo needs its CUDA int4 kernels (the mslk package), not available on the CPU"
    return None


def load_config(
    model: str, backend: str, qtype: str, quantize_te: bool, exclude: list[str], dtype: str, fuse_qkv: bool = False
):
    """The ``PipelineQuantizationConfig`` that quantizes at load time, or ``None`` (quanto, or ``none``).

    The transformer gets diffusers' config of the backend, each text encoder (with
    ``quantize_te``) transformers' config: what users of diffusers write. One
    exception: to fuse QKV with torchao, the transformer loads unquantized, is
    fused, then quantized by torchao's ``quantize_`` with the same config
    (diffusers cannot concatenate torchao's quantized projections).
    """
    if backend == "quanto" or qtype == "none":
        return None
    from diffusers import PipelineQuantizationConfig

    mapping = {}
    if not (backend == "torchao" and fuse_qkv):
        mapping["transformer"] = quantization_config(backend, qtype, "diffusers", dtype)
        if exclude and backend == "torchao":
            mapping["transformer"].modules_to_not_convert = list(exclude)
    if quantize_te:
        for name in model_spec(model).text_encoders:
            mapping[name] = quantization_config(backend, qtype, "transformers", dtype)
    return PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def torchao_linears(module, qtype: str, exclude: list[str]) -> None:
    """torchao's ``quantize_`` on every Linear not named in ``exclude`` (diffusers' rule: a substring match)."""
    import torch
    from torchao.quantization import quantize_

    from .registry import torchao_config

    config = torchao_config(qtype)
    if config is None:
        return
    quantize_(
        module,
        config,
        filter_fn=lambda m, name: isinstance(m, torch.nn.Linear) and not any(e in name for e in exclude),
    )


def quantize_module(module, qtype: str, exclude: list[str] | None = None) -> None:
    """quanto ``quantize`` + ``freeze`` of one module's weights; ``none`` leaves it as it is."""
    from optimum.quanto import freeze, quantize

    weights = quanto_qtype(qtype)
    if weights is None:
        return
    quantize(module, weights=weights, exclude=exclude or None)
    freeze(module)


def apply_config(
    pipe, model: str, qtype: str, quantize_te: bool, fuse_qkv: bool, exclude: list[str], backend: str = "quanto"
) -> None:
    """Fuse the transformer's QKV projections if asked, then (quanto) quantize.

    quanto: fuse first, then ``quantize`` + ``freeze`` the transformer (with
    ``exclude``) and, with ``quantize_te``, every text encoder. ``qtype: none``
    quantizes nothing. torchao / bitsandbytes quantized at load (``load_config``);
    to fuse with torchao the transformer came unquantized and is quantized here.
    """
    if backend == "quanto":
        quanto_qtype(qtype)  # an unknown name is a ValueError of ours, not a library's rejection
    try:
        if fuse_qkv:
            pipe.transformer.fuse_qkv_projections()
            if backend == "torchao":
                torchao_linears(pipe.transformer, qtype, exclude)
        if backend != "quanto":
            return
        quantize_module(pipe.transformer, qtype, exclude)
        if quantize_te:
            for name in model_spec(model).text_encoders:
                encoder = getattr(pipe, name, None)
                if encoder is not None:
                    quantize_module(encoder, qtype)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise Rejected(f"{type(e).__name__}: {e}") from e


def compile_transformer(pipe, mode: str | bool) -> None:
    """``torch.compile`` the transformer in place (``False``: leave it eager)."""
    if mode is not False:
        pipe.transformer.compile(mode=mode)
