"""Offloading, an axis of the grid: where a configuration's weights wait between uses.

The modes (``registry.OFFLOAD_MODES``) and what each calls, on CUDA only:

- ``none``: every weight on the GPU (the published grid); the pipeline loads there (``device_map="cuda"``).
- ``model``: ``pipe.enable_model_cpu_offload()``: one whole component on the GPU at a time, in the pipeline's
  ``model_cpu_offload_seq`` (accelerate's ``cpu_offload_with_hook``).
- ``group-block``: ``pipe.enable_group_offload(cuda, offload_device="cpu", offload_type="block_level",
  num_blocks_per_group=NUM_BLOCKS_PER_GROUP)``: the blocks of each component's top-level ``ModuleList`` /
  ``Sequential`` (a transformer's ``transformer_blocks``) move one group at a time, synchronously (no
  stream); what is not in such a list moves as one group with its component (T5's blocks sit one level
  down, in ``encoder.block``, so a T5 encoder moves whole, as under ``model``).
- ``group-leaf``: the same at ``offload_type="leaf_level"`` (every leaf module its own group), with
  ``use_stream=True``: the next group is copied on a CUDA stream while this one computes (diffusers raises
  for a stream on a device without streams; offloading runs on CUDA only here).
- ``sequential``: ``pipe.enable_sequential_cpu_offload()``: accelerate's ``cpu_offload`` on every
  component: each leaf module's weights come from the host for each call and go back to the meta device.

Each of these needs the pipeline on the CPU first, so an offloading configuration loads there
(``pipelines.load_pipeline``): no ``device_map="cuda"`` and no ``.to("cuda")``, then it is quantized and
fused there as usual and ``apply`` installs the mode's hooks, the last step before ``torch.compile``.
bitsandbytes' quantizer loads its components onto the GPU whatever the pipeline asks (``update_device_map``
in diffusers/quantizers/bitsandbytes/bnb_quantizer.py); each mode moves them to the CPU itself.

On the CPU an offloading configuration is recorded ``skipped`` (``NEEDS_ACCELERATOR``); a combination a
library cannot run is refused before anything loads, with its reason (``unsupported``).
"""

from __future__ import annotations

from .params import Config
from .registry import OFFLOAD_MODES

NEEDS_ACCELERATOR = "offloading needs an accelerator"

# group-block's groups: one block each. Without a stream every copy is synchronous and each call moves
# every block's bytes once whatever the group size, so a larger group only changes how many copies there
# are (blocks / N), not how many bytes; at full size a block is hundreds of MB (a FLUX.1-dev double block
# ~0.7 GB in bf16), so a copy's fixed cost is lost in its transfer time, while the GPU holds N blocks at a
# time: N = 1 holds the least for the same transfer. It is also what diffusers uses whenever a stream is
# asked for (``_apply_group_offloading_block_level`` sets num_blocks_per_group to 1), so block and leaf
# level differ in granularity and streams only.
NUM_BLOCKS_PER_GROUP = 1


def quantized_by(config: Config) -> list[str]:
    """The qtypes this configuration quantizes with: the transformer's, then the text encoders' (if any)."""
    out = [config.qtype] if config.qtype != "none" else []
    if config.quantize_te and config.encoder_qtype != "none":
        out.append(config.encoder_qtype)
    return out


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "0"


def _bnb_int8_model_reason() -> str | None:
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


# Why a backend's quantized weights cannot take a mode, read from the libraries' source (module docstring of
# tests/test_offload.py lists what was checked and left allowed).
QUANTO_SEQUENTIAL = (
    "quanto with sequential offload: accelerate's set_module_tensor_to_device (accelerate/utils/modeling.py) "
    "rebuilds each weight it moves as type(weight)(tensor, requires_grad=...), and quanto's WeightQBytesTensor / "
    "WeightQBitsTensor need (qtype, axis, size, stride, data, scale, ...): enable_sequential_cpu_offload raises "
    "TypeError on the first quantized Linear"
)
GGUF_SEQUENTIAL = (
    "gguf with sequential offload: accelerate's set_module_tensor_to_device (accelerate/utils/modeling.py) "
    "rebuilds each weight it moves as GGUFParameter(tensor, requires_grad=...), without its quant_type, and "
    "GGUFParameter.__new__ looks up GGML_QUANT_SIZES[None] (diffusers/quantizers/gguf/utils.py): "
    "enable_sequential_cpu_offload raises KeyError on the first quantized Linear"
)
QUANTO_GROUP = (
    "quanto with group offload: diffusers moves a group's weights with `param.data = param.data.to(device)` "
    "(ModuleGroup._transfer_tensor_to_device, diffusers/hooks/group_offloading.py) and swaps whole tensors "
    "only for torchao's; on quanto's weights, wrapper subclasses like torchao's, that setter replaces the outer "
    "tensor and keeps the old _data and _scale, on the CPU, so the first onloaded Linear mixes devices"
)
BNB_INT8_GROUP = (
    "bitsandbytes int8 with group offload: Linear8bitLt keeps its 8-bit weight in state.CB after the first "
    "call and sets weight.data = state.CB after every call (bitsandbytes/nn/modules.py), while diffusers' group "
    "offloading moves weight.data only: every layer's 8-bit weight stays on the GPU, and the record would say "
    "offloaded"
)
QUANTO_FP8_MODEL = (
    "quanto fp8 with model offload: each move to the GPU rebuilds a weight with WeightQBytesTensor.create (the "
    "_to_copy branch of optimum/quanto/tensor/weights/qbytes.py), which on compute capability 8.0 or newer "
    "picks MarlinF8QBytesTensor: the nvcc-compiled kernel this project keeps fp8 away from (helpers/backends/"
    "quanto.py: it needs a CUDA toolkit and is reported to give noise images)"
)
TORCHAO_INT4 = (
    "torchao int4wo with offloading: int4wo packs its weights for the device it quantizes on "
    "(helpers/backends/torchao.py), and an offloading pipeline is quantized on the CPU, which gives "
    "Int4OpaqueTensor, whose linear asserts a CPU input (torchao/prototype/quantization/int4/"
    "int4_opaque_tensor.py: 'For CPU device only'), while offloading runs every layer on the GPU"
)
TORCHAO_MODEL_COMPILE = (
    "torchao with model offload and compile: the offload hooks move the compiled transformer with Module.to, "
    "which swaps torchao's wrapper-subclass weights (torch/nn/modules/module.py _apply) and fails with "
    "'RuntimeError: _apply(): Couldn't swap Linear.weight' (diffusers' test suite, tests/pipelines/testing_utils/"
    "quantization.py: its torchao model-offload test runs uncompiled for this reason)"
)


def unsupported(backend: str, config: Config, device: str, compile_mode: bool | str = False) -> str | None:
    """Why this configuration's offload mode cannot run here, or ``None`` (``none`` always can). Asked
    before anything loads; ``device`` is the resolved one (``cuda`` or ``cpu``)."""
    mode = config.offload
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"unknown offload mode {mode!r}; valid choices: {', '.join(OFFLOAD_MODES)}")
    if mode == "none":
        return None
    if device != "cuda":
        return NEEDS_ACCELERATOR
    qtypes = quantized_by(config)
    if not qtypes:
        return None  # unquantized: every mode is the library's plain path
    if backend == "bnb" and mode == "model" and "int8" in qtypes:
        return _bnb_int8_model_reason()
    if backend == "bnb" and mode in ("group-block", "group-leaf") and "int8" in qtypes:
        return BNB_INT8_GROUP
    if backend == "quanto" and mode == "sequential":
        return QUANTO_SEQUENTIAL
    if backend == "quanto" and mode in ("group-block", "group-leaf"):
        return QUANTO_GROUP
    if backend == "quanto" and mode == "model" and "fp8" in qtypes:
        import torch

        if torch.cuda.get_device_capability() >= (8, 0):
            return QUANTO_FP8_MODEL
    if backend == "gguf" and mode == "sequential":
        return GGUF_SEQUENTIAL
    if backend == "torchao" and "int4wo" in qtypes:
        return TORCHAO_INT4
    if backend == "torchao" and mode == "model" and compile_mode is not False:
        return TORCHAO_MODEL_COMPILE
    return None


def load_device(mode: str, device: str) -> str:
    """Where the pipeline is loaded: the CPU for an offloading mode (each mode's hooks then place the weights),
    else the device it runs on."""
    return "cpu" if mode != "none" and device == "cuda" else device


def apply(pipe, mode: str, device: str) -> None:
    """Install ``mode``'s offloading on a loaded, quantized and fused pipeline (nothing for ``none``). CUDA only:
    ``unsupported`` refused every other device before loading."""
    if mode == "none":
        return
    if device != "cuda":
        raise ValueError(f"{NEEDS_ACCELERATOR} (device: {device})")
    import torch

    onload = torch.device("cuda", torch.cuda.current_device())
    if mode == "model":
        pipe.enable_model_cpu_offload(device=onload)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=onload)
    elif mode == "group-block":
        pipe.enable_group_offload(onload, offload_device=torch.device("cpu"), offload_type="block_level",
                                  num_blocks_per_group=NUM_BLOCKS_PER_GROUP)  # fmt: skip
    elif mode == "group-leaf":
        pipe.enable_group_offload(onload, offload_device=torch.device("cpu"), offload_type="leaf_level",
                                  use_stream=True)  # fmt: skip
    else:
        raise ValueError(f"unknown offload mode {mode!r}; valid choices: {', '.join(OFFLOAD_MODES)}")
