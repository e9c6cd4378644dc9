"""The one place where a name from YAML, a record or the CLI becomes a library object.

Strings travel through parameters and records; objects never do. Every lookup
goes through a function here, and an unknown name raises a short ``ValueError``
that lists the valid choices.
"""

from __future__ import annotations

from .models import SPECS as MODELS
from .models.spec import ModelSpec

DTYPES = ("fp16", "bf16")
QTYPES = ("none", "int8", "fp8", "int4")  # optimum-quanto's, the published grid
# Each backend's own quantization names; "none" is the unquantized reference everywhere.
BACKEND_QTYPES = {
    "quanto": QTYPES,
    "torchao": ("none", "int8wo", "int8dq", "fp8wo", "fp8dq", "int4wo"),
    "bnb": ("none", "nf4", "int8"),
}
BACKENDS = tuple(BACKEND_QTYPES)
COMPILE_MODES = ("default", "max-autotune")  # or false: no torch.compile
PRESETS = ("tiny", "full", "random-full")
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("inline", "ray")  # where each configuration runs: this process, or its own Ray worker process


def _check(kind: str, name: str, choices) -> None:
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; valid choices: {', '.join(choices)}")


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


def quanto_qtype(name: str):
    """``none`` maps to ``None`` (no quantization)."""
    _check("qtype", name, QTYPES)
    if name == "none":
        return None
    from optimum import quanto

    return {"int8": quanto.qint8, "fp8": quanto.qfloat8, "int4": quanto.qint4}[name]


def torch_device(name: str) -> str:
    """``auto`` is CUDA when one is visible, else the CPU."""
    import torch

    _check("device", name, DEVICES)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; valid choices here: auto, cpu")
    return name


def _check_backend_qtype(backend: str, qtype: str) -> None:
    _check("backend", backend, BACKENDS)
    if qtype not in BACKEND_QTYPES[backend]:
        raise ValueError(
            f"unknown qtype {qtype!r} for backend {backend!r}; valid choices: {', '.join(BACKEND_QTYPES[backend])}"
        )


def torchao_config(qtype: str):
    """torchao's config object for one of its names (``none``: ``None``)."""
    _check_backend_qtype("torchao", qtype)
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


def quantization_config(backend: str, qtype: str, component_library: str, dtype: str):
    """diffusers' or transformers' load-time quantization config for one component (``none``: ``None``)."""
    _check_backend_qtype(backend, qtype)
    if backend == "quanto" or qtype == "none":
        return None
    import diffusers
    import transformers

    lib = diffusers if component_library == "diffusers" else transformers
    if backend == "torchao":
        return lib.TorchAoConfig(torchao_config(qtype))
    if qtype == "nf4":
        return lib.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype(dtype)
        )
    return lib.BitsAndBytesConfig(load_in_8bit=True)
