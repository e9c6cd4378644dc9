"""SDNQ (SD.Next Quantization Engine, the ``sdnq`` package; diffusers 0.42's ``SDNQConfig`` is its config):
``sdnq_post_load_quant`` on each component after loading, on the device it runs on.

What a quantized layer holds (sdnq 0.2.8, ``SDNQLinear``: plain parameters, not a tensor subclass, so the
estimate's meta-device run of the same function gives the same tensors):

- the weight, packed: int8 and float8_e4m3fn one byte a weight, int6 three bytes for four (``pack_uint6``),
  uint4 two weights a byte (``pack_uint4``);
- a float32 scale per group of inputs (``group_size`` 0, SDNQ's default, picks the group from the bits:
  ``2 ** (1 + bits + 1 (a Linear) + 1 (with SVD))``, so 1024 inputs for int8 and fp8, 256 for int6, 64 for
  uint4, 128 for uint4 with SVD; a row is one group where it is shorter; row-wise where the quantized matmul
  runs, ``quantizer.py``), and for the unsigned types a float32 zero point per group;
- with ``use_svd``: SVDQuant's low-rank branch, ``svd_up`` (out x rank) and ``svd_down`` (rank x in) in the
  compute dtype, rank ``SVD_RANK``; the quantized weight is the residual.

Layers SDNQ leaves alone: under 16384 weights or 32 inputs (``minimum_allowed_numel``,
``minimum_allowed_channel_size``), and the modules its own per-class skip lists name (``add_skip_keys``:
embedders, final projections, norms), as its defaults do for every user.

``use_quantized_matmul``: int8 and float8_e4m3fn, SDNQ's matmul types, multiply in their own type (int8 on
CUDA with Triton, on the CPU with ``torch._int_mm``; float8 on CUDA compute capability 8.9 or newer, which
SDNQ otherwise emulates with a float16 matmul: ``kernel_wrappers.py``). int6 and uint4 dequantize and then
multiply in the compute dtype. A layer narrower than 32 or not a multiple of 16, or a call of fewer than 32
tokens, dequantizes too (SDNQ's own rule).

SDNQ compiles its dequantizers and matmuls with ``torch.compile`` unless ``SDNQ_USE_TORCH_COMPILE`` is 0, and
tests the compiler when imported. Here it is 0 unless the environment says otherwise: each layer shape would
otherwise compile in the first call, and the grid's ``compile`` parameter compiles the whole transformer.
"""

import os

NAME = "sdnq"
PACKAGE = "sdnq"
# SDNQ's own weight type names (sdnq.common.accepted_weight_dtypes), and uint4 with SVDQuant's branch.
QTYPES = ("none", "int8", "int6", "uint4", "float8_e4m3fn", "uint4_svd")
SVD_RANK = 32  # SDNQ's default rank: 2 x 32 x (in + out) bf16 values a layer, 1.5 % of a 3072 x 3072 weight
# Bits a transformer weight takes as stored, scales included, at full size (fit ranks by it): a float32 scale
# per group (above), a float32 zero point per group for uint4, the rank-32 branch for a 3072-wide layer.
# int8 and float8 with the quantized matmul: a scale per row (3072 inputs); int6 per 256, uint4 a scale and a zero
# point per 64, per 128 with SVD, whose branch is 16 x rank x (in + out) bits for a 3072 x 3072 layer.
BITS = {"none": 16, "int8": 8 + 32 / 3072, "int6": 6 + 32 / 256, "uint4": 4 + 64 / 64, "float8_e4m3fn": 8 + 32 / 3072,
        "uint4_svd": 4 + 64 / 128 + 16 * SVD_RANK * (3072 + 3072) / 3072**2}  # fmt: skip
# Where each runs, and what multiplies (sdnq 0.2.8: layers/linear/*.py, kernel_wrappers.py, dequantizer.py).
RUNS_ON = {q: "CPU, CUDA" for q in QTYPES}
KERNEL = {"none": "matmul in the dtype",
          "int8": "int8 matmul: Triton on CUDA, torch._int_mm on the CPU (under 32 tokens: dequantize, then matmul)",
          "int6": "dequantize, then matmul", "uint4": "dequantize, then matmul",
          "float8_e4m3fn": "float8 matmul on CUDA 8.9+ (Triton or torch._scaled_mm); elsewhere emulated in fp16",
          "uint4_svd": "dequantize plus the low-rank product, then matmul"}  # fmt: skip
PREDICTED = True  # sdnq_post_load_quant runs on the meta device as it does on weights
QUANTIZES = "after-load"  # when weights become quantized, for the estimate's loading trace
TEXT_ENCODERS = True  # the same function quantizes a transformers model
MATMUL = ("int8", "float8_e4m3fn")  # use_quantized_matmul: SDNQ's matmul types
MATMUL_NOTES = {
    ("int8", "cpu"): "sdnq int8 with use_quantized_matmul: on the CPU without Triton SDNQ multiplies with "
                     "torch._int_mm (calls of fewer than 32 tokens dequantize instead)",
    ("float8_e4m3fn", "cpu"): "sdnq float8_e4m3fn with use_quantized_matmul: SDNQ's float8 matmul needs CUDA "
                              "compute capability 8.9; on the CPU it emulates it with a float16 matmul",
}  # fmt: skip
COMPILE_NOTE = ("sdnq without its own torch.compile of dequantizers and matmuls (SDNQ_USE_TORCH_COMPILE=0; the "
                "grid's compile parameter compiles the transformer)")  # fmt: skip


def _sdnq():
    """The sdnq package, imported with its own compilation off unless the environment sets it."""
    os.environ.setdefault("SDNQ_USE_TORCH_COMPILE", "0")
    import sdnq

    return sdnq


def excludes(pattern: str, name: str) -> bool:
    """SDNQ's rule for ``modules_to_not_convert`` (sdnq/utils.py): a dotted part of the name, or the name."""
    return pattern == name or pattern in name.split(".")


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    return None


def notes(qtype: str, device: str) -> list[str]:
    if qtype == "none":
        return []
    out = [COMPILE_NOTE] if os.environ.get("SDNQ_USE_TORCH_COMPILE", "0") == "0" else []
    if qtype == "float8_e4m3fn" and device == "cuda":
        import torch

        if torch.cuda.get_device_capability() < (8, 9):
            out.append("sdnq float8_e4m3fn with use_quantized_matmul below compute capability 8.9: SDNQ emulates "
                       "the float8 matmul with a float16 one")  # fmt: skip
    return out + ([MATMUL_NOTES[qtype, device]] if (qtype, device) in MATMUL_NOTES else [])


def files(checkpoint, qtype, dtype, exclude) -> None:
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    return None


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """``sdnq_post_load_quant`` with SDNQ's defaults and this qtype (``exclude``: ``modules_to_not_convert``)."""
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'sdnq'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return
    _sdnq().sdnq_post_load_quant(
        module, weights_dtype=qtype.removesuffix("_svd"), use_svd=qtype.endswith("_svd"), svd_rank=SVD_RANK, use_quantized_matmul=qtype in MATMUL,
        modules_to_not_convert=list(exclude) or None, torch_dtype=module.dtype,
    )  # fmt: skip


on_meta = after_load  # SDNQ quantizes meta tensors the same way (the SVD too: shapes only)
