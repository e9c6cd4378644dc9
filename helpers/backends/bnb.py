"""bitsandbytes: at load, through diffusers' and transformers' ``BitsAndBytesConfig`` (CUDA only here).

The estimate (``on_meta``) takes a component built on the meta device through the same steps as loading:

- which Linears are replaced: the library's own quantizer decides, ``_process_model_before_weight_loading``
  with the config ``load_time`` gives. diffusers (diffusers/quantizers/bitsandbytes/bnb_quantizer.py,
  ``BnB4BitDiffusersQuantizer`` / ``BnB8BitDiffusersQuantizer``; ``_replace_with_bnb_linear`` in
  diffusers/quantizers/bitsandbytes/utils.py): every ``isinstance(m, nn.Linear)`` not in
  ``llm_int8_skip_modules`` + the class's ``_keep_in_fp32_modules`` (``ModelMixin.from_pretrained``
  passes them, ``use_keep_in_fp32_modules = True``). transformers (quantizers/quantizer_bnb_4bit.py,
  quantizer_bnb_8bit.py; ``replace_with_bnb_linear`` in integrations/bitsandbytes.py): every
  ``type(m) is nn.Linear`` except ``get_keys_to_not_convert`` (tied weights, the last parameter's module,
  the output embeddings: quantizers/base.py) and ``model._keep_in_fp32_modules`` in every dtype (T5's
  ``wo`` stays unquantized, in bf16 too).
- what each replaced layer holds: bitsandbytes' own quantization functions run on the meta tensor, where
  its ``register_fake`` kernels (bitsandbytes/_ops.py) give the shapes and dtypes the CUDA kernels allocate
  (bitsandbytes/backends/cuda/ops.py, the same ``torch.empty`` calls):
  nf4 (``Params4bit._quantize`` -> ``functional.quantize_4bit``, blocksize 64): the weight packed two
  values a byte, uint8 ``[(n + 1) // 2, 1]``; ``QuantState.absmax`` float32, one per 64 values
  (``ceil(n / 64)``); ``QuantState.code``, the 16-value float32 table, a tensor of its own per layer
  (``get_4bit_type`` builds it on each call); with double quantization (not this project's config) also
  the 0-d float32 ``offset`` and ``state2``'s absmax and 256-value code. int8 (``Int8Params._quantize`` ->
  ``functional.int8_vectorwise_quant``): ``CB`` int8 ``[out, in]`` that is also ``weight.data`` (one
  storage), ``SCB`` float32 ``[out]``. The bias is the layer's own, in the loading dtype.
- ``QuantState``'s tensors and ``SCB`` are attributes, not parameters or buffers, so ``measure.tensor_bytes``
  would not see them: the estimate registers them on their layer as non-persistent buffers (``weight_absmax``,
  ``weight_code``, ...; ``weight_SCB``), the same tensor objects, so each counts once.

What the CPU cannot show: the CUDA caching allocator rounds each of these small tensors up (512 bytes at
least), so ``max_memory_reserved`` on the GPU is above these bytes by about 2 x 512 bytes per nf4 layer
(absmax of a small layer, code) and 512 per int8 layer (SCB); ``tensor_bytes`` counts ``nbytes``, as it does
on a real run. bitsandbytes' CPU kernels (bitsandbytes/backends/default/ops.py) give the same shapes and
dtypes as CUDA's; tests/test_bnb_estimate.py checks the meta layers against them, byte for byte.
"""

from .gates import Requirement

NAME = "bnb"
PACKAGE = "bitsandbytes"
QTYPES = ("none", "nf4", "int8")
# Bits a weight takes as stored, scales included (fit ranks by it): nf4 blocks of 64 with a float32 absmax
# (no double quantization here); LLM.int8 a scale per row.
BITS = {"none": 16, "nf4": 4.5, "int8": 8}
PREDICTED = True  # on_meta: checked against bitsandbytes' CPU kernels (tests/test_bnb_estimate.py)
# Where each runs here, and what multiplies (bitsandbytes/autograd/_functions.py, backends/cuda/ops.py).
RUNS_ON = {"none": "CPU, CUDA", "nf4": "CUDA", "int8": "CUDA"}
KERNEL = {"none": "matmul in the dtype",
          "nf4": "a fused 4-bit kernel for a few tokens; beyond them dequantize, then matmul",
          "int8": "LLM.int8: int8 matmul (cuBLASLt), outlier columns in 16 bits"}  # fmt: skip
QUANTIZES = "load"  # when weights become quantized, for the estimate's loading trace: quantizes each weight as it loads: the unquantized weight passes through the device first
TEXT_ENCODERS = True  # quantize_te can quantize the text encoders
FUSE_REASON = ("the bnb backend cannot fuse QKV: diffusers' fuse_qkv_projections makes a plain Linear in its "
               "weights' dtype, and bitsandbytes' are packed uint8 / int8")  # fmt: skip


def excludes(pattern: str, name: str) -> bool:
    """diffusers' rule for ``modules_to_not_convert``: a substring of the module's name."""
    return pattern in name


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    if qtype != "none" and device != "cuda":
        return Requirement(f"bitsandbytes nf4/int8 layers need CUDA in this project (device: {device})")
    if qtype != "none" and fuse_qkv:
        return FUSE_REASON
    return None


def notes(qtype: str, device: str) -> list[str]:
    return []


def files(checkpoint, qtype, dtype, exclude) -> None:
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'bnb'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return None
    import diffusers
    import transformers

    lib = diffusers if library == "diffusers" else transformers
    if qtype == "nf4":
        return lib.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return lib.BitsAndBytesConfig(load_in_8bit=True)


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    return None


def _library(module) -> str:
    """Which library loads ``module``: transformers' models are ``PreTrainedModel`` (the text encoders),
    diffusers' ``ModelMixin`` (the transformer); the one ``quant.load_config`` names for that component."""
    import diffusers
    import transformers

    if isinstance(module, transformers.PreTrainedModel):
        return "transformers"
    if isinstance(module, diffusers.ModelMixin):
        return "diffusers"
    raise TypeError(f"bnb on_meta: {type(module).__name__} is neither a transformers nor a diffusers model")


def _replace_linears(module, cfg, library: str) -> None:
    """The library's own ``_process_model_before_weight_loading``: the Linears it loads as bitsandbytes layers
    become empty ``Linear4bit`` / ``Linear8bitLt`` (rules in the module docstring)."""
    if library == "diffusers":
        from diffusers.quantizers.auto import DiffusersAutoQuantizer

        quantizer = DiffusersAutoQuantizer.from_config(cfg, pre_quantized=False)  # from_pretrained's, for a plain checkpoint
        # ModelMixin.from_pretrained (diffusers/models/modeling_utils.py): the class's _keep_in_fp32_modules,
        # the bnb quantizers having use_keep_in_fp32_modules = True
        keep = type(module)._keep_in_fp32_modules
        keep = [keep] if isinstance(keep, str) else list(keep or [])
        quantizer._process_model_before_weight_loading(module, device_map=None, keep_in_fp32_modules=keep)
    else:
        from transformers.quantizers.auto import AutoHfQuantizer

        quantizer = AutoHfQuantizer.from_config(cfg, pre_quantized=False)  # from_pretrained's, for a plain checkpoint
        quantizer._process_model_before_weight_loading(module, device_map=None)


def _quant_state_tensors(qs) -> dict:
    """The tensors a ``QuantState`` holds (bitsandbytes/functional.py, ``quantize_4bit``): absmax, code and,
    nested, offset and state2's absmax and code."""
    out = {"absmax": qs.absmax, "code": qs.code}
    if qs.nested:
        out.update(offset=qs.offset, state2_absmax=qs.state2.absmax, state2_code=qs.state2.code)
    return out


def on_meta(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """What loading with ``load_time``'s config does, on the meta device: the library's quantizer replaces the
    Linears, each replaced layer's weight is quantized by bitsandbytes' own ``Params4bit._quantize`` /
    ``Int8Params._quantize`` (meta tensors: bitsandbytes' fake kernels), and the tensors bitsandbytes keeps
    beside the weight (QuantState, SCB) are registered as non-persistent buffers so ``tensor_bytes`` counts
    them."""
    if qtype == "none":
        return
    if fuse_qkv:
        raise NotImplementedError(FUSE_REASON)
    import bitsandbytes as bnb
    import torch

    library = _library(module)
    cfg = load_time(qtype, library, module.dtype, exclude, transformer, fuse_qkv)
    meta = torch.device("meta")
    linears = {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    _replace_linears(module, cfg, library)
    for name, layer in module.named_modules():
        if not isinstance(layer, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            continue
        old = linears.get(name)
        if old is None or old.weight.device.type != "meta":
            raise RuntimeError(f"bnb on_meta: {name} was replaced but was not a meta Linear before")
        if isinstance(layer, bnb.nn.Linear4bit):
            # diffusers' create_quantized_param / transformers' Bnb4bitQuantize.convert:
            # Params4bit(value, requires_grad=False, **old_value.__dict__).to(device) quantizes there
            weight = bnb.nn.Params4bit(old.weight.data, requires_grad=False, **layer.weight.__dict__)
            weight = weight._quantize(meta)
            extra = _quant_state_tensors(weight.quant_state)
        else:
            # diffusers' BnB8BitDiffusersQuantizer.create_quantized_param / transformers' Bnb8bitQuantize:
            # Int8Params(value, requires_grad=False, has_fp16_weights=...).to(device) quantizes there
            weight = bnb.nn.Int8Params(old.weight.data, requires_grad=False,
                                       has_fp16_weights=layer.weight.has_fp16_weights)  # fmt: skip
            if weight.has_fp16_weights:
                raise NotImplementedError("bnb on_meta: llm_int8_has_fp16_weight keeps fp16 weights; not this project's config")
            weight = weight._quantize(meta)
            if weight.data.dtype != torch.int8 or weight.SCB is None:
                raise RuntimeError(f"bnb on_meta: {name} int8 quantization gave {weight.data.dtype}, SCB {weight.SCB}")
            extra = {"SCB": weight.SCB}  # CB is weight.data: counted as the weight
        layer.weight = weight
        if isinstance(layer, bnb.nn.Linear4bit):
            layer.quant_state = weight.quant_state  # what the fake call's weight needs back (fake_call)
        layer.bias = old.bias  # the layer's own bias, loaded unquantized in its dtype
        for key, t in extra.items():
            if t.device.type != "meta":
                raise RuntimeError(f"bnb on_meta: {name}'s {key} is on {t.device}, not meta")
            layer.register_buffer(f"weight_{key}", t, persistent=False)


def fake_call(components: dict, qtype: str):
    """The estimate's fake call (``estimate.phase_trace``) runs bitsandbytes' own layers and kernels (their
    fake kernels, bitsandbytes/_ops.py) on the layout ``on_meta`` made. A fake tensor cannot be a
    ``Params4bit`` or an ``Int8Params`` (torch keeps one Python class per tensor), so for the call each layer
    gets back what its forward reads of its weight: a 4-bit layer its ``QuantState`` around the fake absmax,
    code (and nested) buffers, an 8-bit layer its ``state.CB`` (the int8 weight) and ``state.SCB``, as
    ``init_8bit_state`` leaves them. A 4-bit layer takes the CUDA path (``support_avx512bf16_for_cpu``
    off: the fake call's device is the CPU, the prediction is for CUDA)."""
    import contextlib
    import copy

    import bitsandbytes as bnb

    layers = [m for c in components.values() for m in c.modules()
              if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]  # fmt: skip

    def fake_state(layer):
        qs = copy.copy(layer.quant_state)
        qs.absmax, qs.code = layer.weight_absmax, layer.weight_code
        if qs.nested:
            qs.offset, qs.state2 = layer.weight_offset, copy.copy(qs.state2)
            qs.state2.absmax, qs.state2.code = layer.weight_state2_absmax, layer.weight_state2_code
        return qs

    @contextlib.contextmanager
    def patched():
        for layer in layers:
            if isinstance(layer, bnb.nn.Linear4bit):
                layer.weight.quant_state = fake_state(layer)
                layer.support_avx512bf16_for_cpu = False
            else:
                layer.weight.CB = layer.weight.SCB = None
                layer.state.CB, layer.state.SCB = layer.weight, layer.weight_SCB
        yield

    return patched()


# Offloading (helpers/offload.py) with bitsandbytes' weights, read from the libraries' source.
def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "0"


def _int8_model_reason() -> str | None:
    """diffusers 0.42's ``enable_model_cpu_offload`` (pipelines/pipeline_utils.py, "Skipping the hook placement")
    places no hook on a component loaded in bitsandbytes 8-bit unless transformers >= 4.58.0 and bitsandbytes
    >= 0.48.0, and the pipeline's ``.to("cpu")`` before it moves such a component only with transformers >
    4.58.0 and bitsandbytes >= 0.48.0 (else it logs "moving it to cpu via .to() is not supported. Module is
    still on cuda:0", diffusers issue #10653). Older, the 8-bit weights stay on the GPU for the whole run."""
    from packaging.version import Version

    transformers, bnb = _version("transformers"), _version("bitsandbytes")
    if Version(transformers) > Version("4.58.0") and Version(bnb) >= Version("0.48.0"):
        return None
    return (f"bitsandbytes int8 with model offload: diffusers' enable_model_cpu_offload skips the hook of a "
            f"component loaded in 8-bit and its .to('cpu') leaves it on the GPU unless transformers > 4.58.0 "
            f"and bitsandbytes >= 0.48.0 (installed: transformers {transformers}, bitsandbytes {bnb}; diffusers "
            f"issue #10653): the record would say offloaded while its 8-bit weights stayed on the GPU")  # fmt: skip


OFFLOAD_INT8_GROUP = (
    "bitsandbytes int8 with group offload: Linear8bitLt keeps its 8-bit weight in state.CB after the first "
    "call and sets weight.data = state.CB after every call (bitsandbytes/nn/modules.py), while diffusers' group "
    "offloading moves weight.data only: every layer's 8-bit weight stays on the GPU, and the record would say "
    "offloaded"
)


def offload_unsupported(mode: str, qtypes: list[str], compile_mode) -> str | None:
    """Why an offload mode cannot move this configuration's quantized weights (CUDA), or ``None``."""
    if mode == "model" and "int8" in qtypes:
        return _int8_model_reason()
    if mode in ("group-block", "group-leaf") and "int8" in qtypes:
        return OFFLOAD_INT8_GROUP
    return None
