"""torchao: at load, through diffusers' and transformers' ``TorchAoConfig``.

To fuse QKV, the transformer loads unquantized, is fused, then quantized by
torchao's ``quantize_`` with the same config: diffusers cannot concatenate
torchao's quantized projections (it raises for int8 and fails for fp8).
"""

NAME = "torchao"
PACKAGE = "torchao"
QTYPES = ("none", "int8wo", "int8dq", "fp8wo", "fp8dq", "int4wo")
PREDICTED = True
TEXT_ENCODERS = True  # quantize_te can quantize the text encoders


def config(qtype: str):
    """torchao's config object for one of its names (``none``: ``None``)."""
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'torchao'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return None
    from torchao import quantization as q

    return {
        "int8wo": q.Int8WeightOnlyConfig,
        "int8dq": q.Int8DynamicActivationInt8WeightConfig,
        "fp8wo": q.Float8WeightOnlyConfig,
        "fp8dq": q.Float8DynamicActivationFloat8WeightConfig,
        "int4wo": q.Int4WeightOnlyConfig,
    }[qtype]()


def excludes(pattern: str, name: str) -> bool:
    """diffusers' rule for ``modules_to_not_convert``: a substring of the module's name."""
    return pattern in name


def unsupported(qtype: str, device: str) -> str | None:
    if qtype == "fp8dq":
        import torch

        if device != "cuda" or torch.cuda.get_device_capability() < (8, 9):
            return "torchao fp8dq (float8 activations) needs a CUDA device of compute capability 8.9 or newer"
    if qtype == "int4wo" and device != "cuda":
        return "torchao int4wo needs its CUDA int4 kernels (the mslk package), not available on the CPU"
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    if qtype == "none" or (transformer and fuse_qkv):
        return None
    import diffusers
    import transformers

    out = (diffusers if library == "diffusers" else transformers).TorchAoConfig(config(qtype))
    if transformer and exclude:
        out.modules_to_not_convert = list(exclude)
    return out


def linears(module, qtype: str, exclude: list[str]) -> None:
    """torchao's ``quantize_`` on every Linear not named in ``exclude`` (diffusers' rule: a substring match)."""
    import torch
    from torchao.quantization import quantize_

    cfg = config(qtype)
    if cfg is None:
        return
    quantize_(module, cfg, filter_fn=lambda m, name: isinstance(m, torch.nn.Linear) and not any(e in name for e in exclude))


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    if transformer and fuse_qkv:
        linears(module, qtype, exclude)


def on_meta(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """diffusers' TorchAoConfig quantizes a transformer's Linears (fused or not, the same rule); for a
    text encoder, transformers' own torchao quantizer decides which modules it leaves out (the last
    module such as CLIP's ``text_projection``, tied embeddings, ``_keep_in_fp32_modules`` such as T5's
    ``wo`` in fp16)."""
    if transformer:
        linears(module, qtype, exclude)
        return
    cfg = config(qtype)
    if cfg is None:
        return
    import transformers
    from torchao.quantization import quantize_
    from transformers.quantizers.auto import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(transformers.TorchAoConfig(cfg))
    quantizer._process_model_before_weight_loading(module)
    quantize_(module, cfg, filter_fn=lambda m, name: quantizer.param_needs_quantization(module, f"{name}.weight"))
