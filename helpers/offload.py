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

On the CPU an offloading configuration is recorded ``n/a`` (``NEEDS_ACCELERATOR``); a combination a
library cannot run is refused before anything loads, with its reason (``unsupported``).
"""

from __future__ import annotations

from .backends.gates import Requirement
from .cells import Cell
from .registry import OFFLOAD_MODES

NEEDS_ACCELERATOR = Requirement("offloading needs an accelerator (CUDA here)")

# group-block's groups: one block each. Without a stream every copy is synchronous and each call moves
# every block's bytes once whatever the group size, so a larger group only changes how many copies there
# are (blocks / N), not how many bytes; at full size a block is hundreds of MB (a FLUX.1-dev double block
# ~0.7 GB in bf16), so a copy's fixed cost is lost in its transfer time, while the GPU holds N blocks at a
# time: N = 1 holds the least for the same transfer. It is also what diffusers uses whenever a stream is
# asked for (``_apply_group_offloading_block_level`` sets num_blocks_per_group to 1), so block and leaf
# level differ in granularity and streams only.
NUM_BLOCKS_PER_GROUP = 1


def quantized_by(config: Cell) -> list[str]:
    """The qtypes this configuration quantizes with: the transformer's, then the text encoders' (if any)."""
    out = [config.qtype] if config.qtype != "none" else []
    if config.quantize_te and config.encoder_qtype != "none":
        out.append(config.encoder_qtype)
    return out




def unsupported(backend: str, config: Cell, device: str, compile_mode: bool | str = False) -> str | None:
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
    # Why a backend's quantized weights cannot take a mode: its module says (``offload_unsupported``), read
    # from the libraries' source (tests/test_offload.py's docstring lists what was checked and left allowed).
    from .registry import backend as backend_module

    refuse = getattr(backend_module(backend), "offload_unsupported", None)
    return refuse(mode, qtypes, compile_mode) if refuse else None


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
