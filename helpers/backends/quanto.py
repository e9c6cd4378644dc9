"""optimum-quanto, the published grid: ``quantize`` + ``freeze`` after loading.

fp8 keeps quanto's plain ``WeightQBytesTensor`` (the weight dequantized to the
dtype, then a matmul) on every device. On a CUDA GPU of compute capability 8 or
newer quanto 0.2.7 would pick ``MarlinF8QBytesTensor`` instead
(``WeightQBytesTensor.create`` in optimum/quanto/tensor/weights/qbytes.py): its
kernel is compiled with nvcc on first use, which torch's wheels do not ship,
and it is reported to give noise images (quanto PR #409, diffusers issue
#11540). ``plain_fp8`` makes the one term of that condition that names the
extension false while fp8 quantizes; records say so in ``notes``.
"""

from contextlib import contextmanager

NAME = "quanto"
PACKAGE = "optimum-quanto"
QTYPES = ("none", "int8", "fp8", "int4")
# Bits a transformer weight takes as stored, scales included (fit ranks by it): int8 / fp8 one scale per
# output channel; int4 groups of 128 with a 16-bit scale and shift each.
BITS = {"none": 16, "int8": 8, "fp8": 8, "int4": 4.25}
PREDICTED = True
# Where each runs, and what multiplies (optimum/quanto/library/qbytes_mm.py, tensor/weights/qbits.py).
RUNS_ON = {"none": "CPU, CUDA", "int8": "CPU, CUDA", "fp8": "CPU, CUDA", "int4": "CPU, CUDA 8.0+ (needs nvcc)"}
KERNEL = {"none": "matmul in the dtype",
          "int8": "bf16 on the CPU: torch._weight_int8pack_mm; else dequantize, then matmul",
          "fp8": "dequantize, then matmul (not quanto's Marlin kernel)",
          "int4": "int4 matmul: _weight_int4pack_mm (bf16; _for_cpu on the CPU), AWQ in fp16 on CUDA"}  # fmt: skip
QUANTIZES = "after-load"  # when weights become quantized, for the estimate's loading trace: loads unquantized, then quantizes on the device
TEXT_ENCODERS = True  # quantize_te can quantize the text encoders
FP8_NOTE = ("quanto fp8 on CUDA: weights kept as WeightQBytesTensor (dequantized, then matmul), not quanto's "
            "MarlinF8QBytesTensor (an nvcc-compiled kernel, reported to give noise images)")  # fmt: skip


def qtype_object(qtype: str):
    """quanto's weight type for one of its names (``none``: ``None``)."""
    if qtype not in QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend 'quanto'; valid choices: {', '.join(QTYPES)}")
    if qtype == "none":
        return None
    from optimum import quanto

    return {"int8": quanto.qint8, "fp8": quanto.qfloat8, "int4": quanto.qint4}[qtype]


def excludes(pattern: str, name: str) -> bool:
    """quanto's rule for ``exclude``: Unix shell-style wildcards on the module's name."""
    from fnmatch import fnmatch

    return fnmatch(name, pattern)


def unsupported(qtype: str, device: str, fuse_qkv: bool) -> str | None:
    """int4 on CUDA needs quanto's CUDA extension, compiled with nvcc on first use: the AWQ kernels (fp16) and
    its unpacking of every int4 weight that torch's TinyGemm cannot take (groups other than 128, e.g.
    FLUX.1-dev's 64-wide ``x_embedder``; optimum/quanto/library/extensions/cuda/__init__.py). Without a CUDA
    toolkit it would fail mid-grid, so it is refused before loading."""
    if qtype == "int4" and device == "cuda":
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None:
            return ("quanto int4 on CUDA compiles quanto's CUDA extension with nvcc on first use, and no CUDA "
                    "toolkit was found (CUDA_HOME, nvcc on PATH): install one or use torchao int4wo")  # fmt: skip
    return None


CONTIGUOUS_NOTE = ("quanto int8 on the CPU: a layer given a strided view (latents permuted into tokens, as some "
                   "pipelines pack them) copies it to contiguous memory first, since torch's _weight_int8pack_mm, "
                   "quanto's bf16 int8 kernel there, rejects it")  # fmt: skip


def notes(qtype: str, device: str) -> list[str]:
    if qtype == "fp8" and device == "cuda":
        return [FP8_NOTE]
    return [CONTIGUOUS_NOTE] if qtype == "int8" and device == "cpu" else []


def _contiguous_input(module, args):
    """quanto's CPU path for bf16 activations and int8 weights (``qbytes_mm_impl_cpu`` in
    optimum/quanto/library/qbytes_mm.py) calls ``torch._weight_int8pack_mm``, which raises "A must be
    contiguous on the last dimension" for a strided view; quanto's other paths and CUDA take any layout."""
    x = args[0]
    if x.device.type == "cpu" and x.dtype.is_floating_point and x.stride(-1) != 1:
        return (x.contiguous(), *args[1:])
    return None


def files(checkpoint, qtype, dtype, exclude) -> None:
    return None


def preloaded(checkpoint, qtype, dtype, exclude) -> dict:
    return {}


def load_time(qtype, library, dtype, exclude, transformer, fuse_qkv):
    return None


@contextmanager
def plain_fp8(qtype: str):
    """For ``fp8``: quanto's weight-class choice sees its ``quanto_cuda`` extension as absent, so its
    Marlin condition is false and it keeps ``WeightQBytesTensor``. Other qtypes: nothing changes."""
    if qtype != "fp8":
        yield
        return
    from optimum.quanto.tensor.weights import qbytes

    available = qbytes.is_extension_available
    qbytes.is_extension_available = lambda name: name != "quanto_cuda" and available(name)
    try:
        yield
    finally:
        qbytes.is_extension_available = available


def after_load(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """``quantize`` + ``freeze`` of the module's weights (``exclude``: module-name patterns left alone)."""
    from optimum.quanto import freeze, quantize

    weights = qtype_object(qtype)
    if weights is None:
        return
    with plain_fp8(qtype):  # freeze builds the weight tensors: quanto picks their class there
        quantize(module, weights=weights, exclude=exclude or None)
        freeze(module)
    if qtype == "int8":
        from optimum.quanto.nn import QLinear

        for sub in module.modules():
            if isinstance(sub, QLinear):
                sub.register_forward_pre_hook(_contiguous_input)


def on_meta(module, qtype: str, exclude: list[str], transformer: bool, fuse_qkv: bool) -> None:
    """``after_load`` on the meta device: quanto quantizes meta tensors the same way (``_once_per_shape``)."""
    with _once_per_shape():
        after_load(module, qtype, exclude, transformer, fuse_qkv)


def _fresh(t):
    """A tensor like ``t`` (a quanto weight: its inner tensors too) with meta storages of its own."""
    import torch

    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, context = t.__tensor_flatten__()
        inner = {name: _fresh(getattr(t, name)) for name in names}
        return type(t).__tensor_unflatten__(inner, context, t.size(), t.stride())
    return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="meta")


@contextmanager
def _once_per_shape():
    """On the meta device quanto quantizes each weight through torch's Python meta kernels, about 7 ms a
    Linear (25 of the 32 s a full-size SD3 estimate took); every weight of the same shape, dtype and
    quantization gives the same tensors. So the first of each is quantized by quanto, and the others get its
    structure (``__tensor_flatten__``), each with storages of its own: the same tensors, byte for byte
    (tests/test_estimate.py compares every configuration with a real run)."""
    from optimum.quanto import QTensor
    from optimum.quanto.nn import qmodule

    original = qmodule.QModuleMixin.qweight
    done: dict = {}

    def qweight(self):
        w = self.weight
        if self.weight_qtype is None or isinstance(w, QTensor) or w.device.type != "meta":
            return original.fget(self)
        key = (tuple(w.shape), w.dtype, self.weight_qtype.name, self.weight_group_size,
               getattr(self.activation_qtype, "name", None), type(self.optimizer).__name__)  # fmt: skip
        if key not in done:
            done[key] = original.fget(self)
            return done[key]
        return _fresh(done[key])

    qmodule.QModuleMixin.qweight = property(qweight)
    try:
        yield
    finally:
        qmodule.QModuleMixin.qweight = original


# Offloading (helpers/offload.py) with quanto's weights, read from the libraries' source.
OFFLOAD_SEQUENTIAL = (
    "quanto with sequential offload: accelerate's set_module_tensor_to_device (accelerate/utils/modeling.py) "
    "rebuilds each weight it moves as type(weight)(tensor, requires_grad=...), and quanto's WeightQBytesTensor / "
    "WeightQBitsTensor need (qtype, axis, size, stride, data, scale, ...): enable_sequential_cpu_offload raises "
    "TypeError on the first quantized Linear"
)
OFFLOAD_GROUP = (
    "quanto with group offload: diffusers moves a group's weights with `param.data = param.data.to(device)` "
    "(ModuleGroup._transfer_tensor_to_device, diffusers/hooks/group_offloading.py) and swaps whole tensors "
    "only for torchao's; on quanto's weights, wrapper subclasses like torchao's, that setter replaces the outer "
    "tensor and keeps the old _data and _scale, on the CPU, so the first onloaded Linear mixes devices"
)
OFFLOAD_FP8_MODEL = (
    "quanto fp8 with model offload: each move to the GPU rebuilds a weight with WeightQBytesTensor.create (the "
    "_to_copy branch of optimum/quanto/tensor/weights/qbytes.py), which on compute capability 8.0 or newer "
    "picks MarlinF8QBytesTensor: the nvcc-compiled kernel this project keeps fp8 away from (helpers/backends/"
    "quanto.py: it needs a CUDA toolkit and is reported to give noise images)"
)


def offload_unsupported(mode: str, qtypes: list[str], compile_mode) -> str | None:
    """Why an offload mode cannot move this configuration's quantized weights (CUDA), or ``None``."""
    if mode == "sequential":
        return OFFLOAD_SEQUENTIAL
    if mode in ("group-block", "group-leaf"):
        return OFFLOAD_GROUP
    if mode == "model" and "fp8" in qtypes:
        import torch

        if torch.cuda.get_device_capability() >= (8, 0):
            return OFFLOAD_FP8_MODEL
    return None
