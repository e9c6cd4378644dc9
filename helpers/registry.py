"""The one place where a name from YAML, a record or the CLI becomes a library object.

Strings travel through parameters and records; objects never do. Every lookup
goes through a function here, and an unknown name raises a short ``ValueError``
that lists the valid choices.
"""

from __future__ import annotations

from .backends import BACKENDS as BACKEND_MODULES
from .models import SPECS as MODELS
from .models.spec import ModelSpec
from .presets import PRESETS as PRESET_MODULES

DTYPES = ("fp16", "bf16")
# Each backend's own quantization names (helpers/backends/<name>.py); "none" is the unquantized reference.
BACKEND_QTYPES = {name: b.QTYPES for name, b in BACKEND_MODULES.items()}
BACKENDS = tuple(BACKEND_QTYPES)
COMPILE_MODES = ("default", "max-autotune")  # or false: no torch.compile
PRESETS = tuple(PRESET_MODULES)  # helpers/presets/<name>.py
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("inline", "ray")  # where each configuration runs: this process, or its own Ray worker process
# Where the weights wait between uses (helpers/offload.py applies them, on CUDA only): none (all on the GPU) |
# model (enable_model_cpu_offload) | group-block / group-leaf (enable_group_offload) | sequential
# (enable_sequential_cpu_offload). "none" first: the default, and every record written before the axis.
OFFLOAD_MODES = ("none", "model", "group-block", "group-leaf", "sequential")


def _check(kind: str, name: str, choices) -> None:
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; valid choices: {', '.join(choices)}")


def preset(name: str):
    """The preset's module (``helpers/presets/<name>.py``): where its weights come from, its defaults."""
    _check("preset", name, PRESETS)
    return PRESET_MODULES[name]


def model_spec(name: str) -> ModelSpec:
    """The model module's ``SPEC`` (``helpers/models/<name>.py``)."""
    _check("model", name, tuple(MODELS))
    return MODELS[name]


def pipeline_class(name: str):
    import diffusers

    return getattr(diffusers, model_spec(name).pipeline_class)


def torch_dtype(name: str):
    import torch

    _check("dtype", name, DTYPES)
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[name]


def backend(name: str, qtype: str | None = None):
    """The backend module (``helpers/backends/<name>.py``); with ``qtype``, refuses a name it does not have."""
    _check("backend", name, BACKENDS)
    module = BACKEND_MODULES[name]
    if qtype is not None and qtype not in module.QTYPES:
        raise ValueError(f"unknown qtype {qtype!r} for backend {name!r}; valid choices: {', '.join(module.QTYPES)}")
    return module


def bits_per_weight(backend_name: str, qtype: str) -> float:
    """Bits a weight takes at ``qtype`` as the backend stores it, scales included (its module's ``BITS``)."""
    return backend(backend_name, qtype).BITS[qtype]


def torch_device(name: str) -> str:
    """``auto`` is CUDA when one is visible, else the CPU."""
    import torch

    _check("device", name, DEVICES)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; valid choices here: auto, cpu")
    return name
