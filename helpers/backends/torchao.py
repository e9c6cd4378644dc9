"""torchao: at load, through diffusers' and transformers' ``TorchAoConfig``.

To fuse QKV, the transformer loads unquantized, is fused, then quantized by
torchao's ``quantize_`` with the same config: diffusers cannot concatenate
torchao's quantized projections (it raises for int8 and fails for fp8).

``int4wo`` is quantized after loading by ``quantize_`` (every component it
quantizes, fused or not), in bfloat16 only, with the packing of the device the
module is on (``load_time`` is not told the device). torchao 0.18's default int4
format (``plain``, ``Int4Tensor``) needs the mslk package (PyPI's ``mslk`` is an
empty 0.0.0 placeholder). On CUDA it is therefore
``int4_packing_format="tile_packed_to_4d"`` (torch's own tinygemm
``_weight_int4pack_mm``, compute capability 8.0 or newer, bfloat16 weights),
whose packing torch has no CPU kernel for; on the CPU, torchao's
``PrototypeInt4WeightOnlyConfig`` (``Int4OpaqueTensor``,
``_weight_int4pack_mm_for_cpu``). Both use groups of 128 inputs (a Linear whose
input width is not a multiple is left alone, torchao's rule); records say which
in ``notes``.

``fp8dqrow`` is float8 dynamic activations and weights with a scale per row (``PerRow``), the diffusers-torchao
benchmark's fastest FLUX configuration. ``mxfp8``, ``mxfp4`` and ``nvfp4`` are Blackwell's microscaling formats
(torchao's prototype ``mx_formats``): float8 or float4 values in blocks of 32 (MX, an e8m0 scale each) or 16
(NVFP4, a float8 scale each, and one float32 scale per tensor), activations quantized the same way. The compute
capability each needs is torchao's own: float8 dynamic quantization asserts 8.9 (torchao/float8/inference.py,
``_check_hardware_support``: "requires CUDA compute capability >=8.9"), NVFP4's dynamic mode asserts 10.0
(prototype/mx_formats/inference_workflow.py: "NVFP4 DYNAMIC mode is only supported on sm100+ machines"), and
MX's config says "NVIDIA SM100+ hardware (Blackwell or newer) is required for execution" (same file,
``MXDynamicActivationMXWeightConfig``: its matmul is ``torch._scaled_mm`` with block scales). Below that a
configuration is ``n/a``. The estimate still builds their weights on the meta device, the capability checks
passed over there (``_on_any_device``): the bytes do not depend on the device that checks.
"""

import contextlib

from .gates import needs_capability

NAME = "torchao"
PACKAGE = "torchao"
QTYPES = ("none", "int8wo", "int8dq", "fp8wo", "fp8dq", "fp8dqrow", "int4wo", "mxfp8", "mxfp4", "nvfp4")
# Bits a weight takes as stored, scales included (fit ranks by it): int8 / fp8 a scale per row; int4wo
# groups of 128 with a 16-bit scale and zero point each; MX a byte of scale per 32 values; NVFP4 a byte of
# scale per 16 values.
BITS = {"none": 16, "int8wo": 8, "int8dq": 8, "fp8wo": 8, "fp8dq": 8, "fp8dqrow": 8, "int4wo": 4.25,
        "mxfp8": 8.25, "mxfp4": 4.25, "nvfp4": 4.5}  # fmt: skip
# The compute capability each qtype needs, and where torchao says so.
CAPABILITY = {
    "fp8dq": ((8, 9), "torchao/float8/inference.py, _check_hardware_support"),
    "fp8dqrow": ((8, 9), "torchao/float8/inference.py, _check_hardware_support"),
    "mxfp8": ((10, 0), "torchao/prototype/mx_formats/inference_workflow.py, MXDynamicActivationMXWeightConfig"),
    "mxfp4": ((10, 0), "torchao/prototype/mx_formats/inference_workflow.py, MXDynamicActivationMXWeightConfig"),
    "nvfp4": ((10, 0), "torchao/prototype/mx_formats/inference_workflow.py, NVFP4DynamicActivationNVFP4WeightConfig"),
}  # fmt: skip
PREDICTED = True
NOT_PREDICTED = ("int4wo",)  # its packing needs a device kernel (on_meta raises, the estimate says so)
# Where each runs, and what multiplies (torchao/quantization/quantize_/workflows/, prototype/mx_formats/).
RUNS_ON = {"none": "CPU, CUDA", "int8wo": "CPU, CUDA", "int8dq": "CPU, CUDA", "fp8wo": "CPU, CUDA",
           "fp8dq": "CUDA 8.9+", "fp8dqrow": "CUDA 8.9+ (bf16)", "int4wo": "CPU, CUDA 8.0+ (bf16)",
           "mxfp8": "CUDA 10.0+ (bf16)", "mxfp4": "CUDA 10.0+ (bf16)", "nvfp4": "CUDA 10.0+"}  # fmt: skip
KERNEL = {"none": "matmul in the dtype", "int8wo": "dequantize, then matmul",
          "int8dq": "int8 matmul (torch._int_mm), activations quantized per token",
          "fp8wo": "dequantize, then matmul", "fp8dq": "float8 matmul (torch._scaled_mm), per-tensor scales",
          "fp8dqrow": "float8 matmul (torch._scaled_mm), per-row scales",
          "int4wo": "int4 matmul: _weight_int4pack_mm (CUDA), _weight_int4pack_mm_for_cpu (CPU)",
          "mxfp8": "MX float8 matmul (torch._scaled_mm, e8m0 block scales)",
          "mxfp4": "MX float4 matmul (scaled_mm, e8m0 block scales)",
          "nvfp4": "NVFP4 float4 matmul (torch._scaled_mm, e4m3 block scales)"}  # fmt: skip
QUANTIZES = "load"  # when weights become quantized, for the estimate's loading trace: quantizes each weight as it loads: the unquantized weight passes through the device first
TEXT_ENCODERS = True  # quantize_te can quantize the text encoders
INT4_NOTES = {
    "cuda": "torchao int4wo on CUDA: Int4WeightOnlyConfig(int4_packing_format='tile_packed_to_4d') (torch's "
            "_weight_int4pack_mm; the default format needs mslk), quantized after loading, on the GPU",
    "cpu": "torchao int4wo on the CPU: torchao's prototype PrototypeInt4WeightOnlyConfig (Int4OpaqueTensor, "
           "torch's _weight_int4pack_mm_for_cpu), quantized after loading",
}  # fmt: skip


def config(qtype: str, device: str | None = None):
    """torchao's config object for one of its names (``none``: ``None``); ``int4wo`` needs the
    ``device`` it quantizes on (``cuda`` or ``cpu``: each has its own packing)."""
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'torchao'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return None
    from torchao import quantization as q

    if qtype == "int4wo":
        if device == "cuda":
            return q.Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")
        if device == "cpu":
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig()
        raise NotImplementedError(f"torchao int4wo packs weights for a CUDA or CPU kernel, not on {device!r}")
    if qtype == "fp8dqrow":
        return q.Float8DynamicActivationFloat8WeightConfig(granularity=q.PerRow())
    if qtype in ("mxfp8", "mxfp4", "nvfp4"):
        import torch
        from torchao.prototype import mx_formats as mx

        if qtype == "nvfp4":
            # use_triton_kernel=True (torchao's default) quantizes activations with mslk's Triton kernel, and
            # mslk is not installable (PyPI's is an empty placeholder, see int4wo above): torchao's torch path.
            return mx.NVFP4DynamicActivationNVFP4WeightConfig(use_triton_kernel=False)
        element = torch.float8_e4m3fn if qtype == "mxfp8" else torch.float4_e2m1fn_x2
        return mx.MXDynamicActivationMXWeightConfig(activation_dtype=element, weight_dtype=element)
    return {
        "int8wo": q.Int8WeightOnlyConfig,
        "int8dq": q.Int8DynamicActivationInt8WeightConfig,
        "fp8wo": q.Float8WeightOnlyConfig,
        "fp8dq": q.Float8DynamicActivationFloat8WeightConfig,
    }[qtype]()


def excludes(pattern: str, name: str) -> bool:
    """diffusers' rule for ``modules_to_not_convert``: a substring of the module's name."""
    return pattern in name


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    if qtype in CAPABILITY:
        capability, source = CAPABILITY[qtype]
        return needs_capability(f"torchao {qtype}", capability, source, device)
    if qtype == "int4wo" and device == "cuda":
        return needs_capability("torchao int4wo (tile_packed_to_4d, torch's tinygemm _weight_int4pack_mm)", (8, 0),
                                "torch's tinygemm kernel", device)  # fmt: skip
    return None


def notes(qtype: str, device: str) -> list[str]:
    return [INT4_NOTES[device]] if qtype == "int4wo" and device in INT4_NOTES else []


def files(checkpoint, qtype, dtype, exclude) -> None:
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def _device(module) -> str:
    return next(module.parameters()).device.type  # the module's, where quantize_ runs


def _int4_dtype(dtype) -> None:
    import torch

    if dtype != torch.bfloat16:
        raise NotImplementedError(f"torchao int4wo quantizes bfloat16 weights only (tile_packed_to_4d), not {dtype}")


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    if qtype == "int4wo":
        _int4_dtype(dtype)  # refused here, before anything loads; it quantizes after loading
        return None
    if qtype == "none" or (transformer and fuse_qkv):
        return None
    import diffusers
    import transformers

    out = (diffusers if library == "diffusers" else transformers).TorchAoConfig(config(qtype))
    if transformer and exclude:
        out.modules_to_not_convert = list(exclude)
    return out


def _quantize(module, cfg, exclude: list[str], transformer: bool) -> None:
    """``quantize_`` with the rule of the config that would load it: a transformer's Linears not named
    in ``exclude`` (diffusers: a substring), a text encoder's as transformers' own torchao quantizer
    decides (it leaves the last module such as CLIP's ``text_projection``, tied embeddings and
    ``_keep_in_fp32_modules`` such as T5's ``wo`` in fp16)."""
    import torch
    from torchao.quantization import quantize_

    if transformer:
        keep = lambda m, name: isinstance(m, torch.nn.Linear) and not any(e in name for e in exclude)  # noqa: E731
        quantize_(module, cfg, filter_fn=keep)
        return
    import transformers
    from transformers.quantizers.auto import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(transformers.TorchAoConfig(cfg))
    quantizer._process_model_before_weight_loading(module)
    quantize_(module, cfg, filter_fn=lambda m, name: quantizer.param_needs_quantization(module, f"{name}.weight"))


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """``quantize_`` on the module's device: ``int4wo`` on every component it quantizes, other qtypes
    on a fused transformer (the rest loaded quantized)."""
    if qtype == "int4wo":
        _int4_dtype(next(module.parameters()).dtype)
    elif not (transformer and fuse_qkv):
        return
    cfg = config(qtype, _device(module))
    if cfg is not None:
        _quantize(module, cfg, exclude, transformer)


def on_meta(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """What loading (diffusers' TorchAoConfig quantizes a transformer's Linears, fused or not, the same
    rule; transformers' its own way) plus ``after_load`` do, on the meta device. ``int4wo`` packs its
    weights with a device's kernel, so it raises here: the estimate says it does not predict it."""
    cfg = config(qtype, _device(module))
    if cfg is not None:
        with _on_any_device():
            _quantize(module, cfg, exclude, transformer)


@contextlib.contextmanager
def _on_any_device():
    """torchao's compute-capability checks, passed over: they guard the kernels a call would run, and the
    weights they quantize are the same tensors whatever device asks (float8's ``_check_hardware_support``,
    NVFP4's ``is_sm_at_least_100``, as each module looks them up)."""
    from torchao.prototype.mx_formats import inference_workflow
    from torchao.quantization import quant_api

    saved = quant_api._check_hardware_support, inference_workflow.is_sm_at_least_100
    quant_api._check_hardware_support = lambda *args, **kwargs: None
    inference_workflow.is_sm_at_least_100 = lambda: True
    try:
        yield
    finally:
        quant_api._check_hardware_support, inference_workflow.is_sm_at_least_100 = saved


# Offloading (helpers/offload.py) with torchao's weights, read from the libraries' source.
OFFLOAD_INT4 = (
    "torchao int4wo with offloading: int4wo packs its weights for the device it quantizes on "
    "(helpers/backends/torchao.py), and an offloading pipeline is quantized on the CPU, which gives "
    "Int4OpaqueTensor, whose linear asserts a CPU input (torchao/prototype/quantization/int4/"
    "int4_opaque_tensor.py: 'For CPU device only'), while offloading runs every layer on the GPU"
)
OFFLOAD_MODEL_COMPILE = (
    "torchao with model offload and compile: the offload hooks move the compiled transformer with Module.to, "
    "which swaps torchao's wrapper-subclass weights (torch/nn/modules/module.py _apply) and fails with "
    "'RuntimeError: _apply(): Couldn't swap Linear.weight' (diffusers' test suite, tests/pipelines/testing_utils/"
    "quantization.py: its torchao model-offload test runs uncompiled for this reason)"
)


def offload_unsupported(mode: str, qtypes: list[str], compile_mode) -> str | None:
    """Why an offload mode cannot move this configuration's quantized weights (CUDA), or ``None``."""
    if "int4wo" in qtypes:
        return OFFLOAD_INT4
    if mode == "model" and compile_mode is not False:
        return OFFLOAD_MODEL_COMPILE
    return None
