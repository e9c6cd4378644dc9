"""Parameters: one set of names for params files, notebooks, records and the CLI.

``DEFAULTS`` gives the whole published grid (4 qtypes x quantize TE x fuse QKV at
batch size 1). A params file holds only what differs. ``validate`` is the first
call of every entry point: it refuses unknown keys, wrong types and unknown
choices with a short ``ValueError`` before any model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .registry import DEVICES, DTYPES, MODELS, PRESETS, QTYPES

DEFAULT_PROMPT = "ghibli style, a fantasy landscape with castles"

DEFAULTS: dict = {
    "model": "pixart",
    "checkpoint": None,  # None: the preset's checkpoint (tiny cache or hub id)
    "preset": "tiny",
    "device": "auto",
    "dtype": "bf16",
    "qtypes": ["none", "int8", "fp8", "int4"],
    "quantize_te": [False, True],
    "fuse_qkv": [False, True],
    "batch_sizes": [1],
    "exclude": [],
    "steps": None,  # None: the preset's default
    "height": None,
    "width": None,
    "guidance_scale": None,
    "prompt": DEFAULT_PROMPT,
    "seed": 0,
    "warmup": 1,
    "repeats": 3,
    "out_dir": "outputs",
}

# name -> (type description, check(value) -> bool)
_OPT_INT = ("int or null", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)))
_TYPES = {
    "model": ("str", lambda v: isinstance(v, str)),
    "checkpoint": ("str or null", lambda v: v is None or isinstance(v, str)),
    "preset": ("str", lambda v: isinstance(v, str)),
    "device": ("str", lambda v: isinstance(v, str)),
    "dtype": ("str", lambda v: isinstance(v, str)),
    "qtypes": ("list of str", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "quantize_te": ("list of bool", lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v)),
    "fuse_qkv": ("list of bool", lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v)),
    "batch_sizes": (
        "list of int",
        lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    ),
    "exclude": ("list of str", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "steps": _OPT_INT,
    "height": _OPT_INT,
    "width": _OPT_INT,
    "guidance_scale": (
        "number or null",
        lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    ),
    "prompt": ("str", lambda v: isinstance(v, str)),
    "seed": ("int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "warmup": ("int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "repeats": ("int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "out_dir": ("str", lambda v: isinstance(v, (str, os.PathLike))),
}
assert set(_TYPES) == set(DEFAULTS)

_CHOICES = {"model": tuple(MODELS), "preset": PRESETS, "device": DEVICES, "dtype": DTYPES}


def load_params_file(path: str | os.PathLike) -> dict:
    """Read a YAML params file; it must be a mapping (possibly empty)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"params file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"params file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"params file {str(path)!r} must be a mapping of parameter names to values")
    return data


def validate(params: dict) -> dict:
    """Merge ``params`` over ``DEFAULTS`` and check every key, type and choice.

    Returns a new, complete dict. Raises ``ValueError`` naming the bad key and
    what it accepts.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; valid parameters: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **params}
    for key, value in merged.items():
        kind, ok = _TYPES[key]
        if not ok(value):
            raise ValueError(f"parameter {key!r} must be {kind}, got {value!r}")
    for key, choices in _CHOICES.items():
        if merged[key] not in choices:
            raise ValueError(f"parameter {key!r}: unknown value {merged[key]!r}; valid choices: {', '.join(choices)}")
    for q in merged["qtypes"]:
        if q not in QTYPES:
            raise ValueError(f"parameter 'qtypes': unknown qtype {q!r}; valid choices: {', '.join(QTYPES)}")
    for key in ("qtypes", "quantize_te", "fuse_qkv", "batch_sizes"):
        if not merged[key]:
            raise ValueError(f"parameter {key!r} is empty: the grid would have no configuration")
        if len(set(merged[key])) != len(merged[key]):
            raise ValueError(f"parameter {key!r} has duplicates: {merged[key]!r}")
    if merged["warmup"] < 0:
        raise ValueError(f"parameter 'warmup' must be >= 0, got {merged['warmup']}")
    if merged["repeats"] < 1:
        raise ValueError(f"parameter 'repeats' must be >= 1, got {merged['repeats']}")
    if any(b < 1 for b in merged["batch_sizes"]):
        raise ValueError(f"parameter 'batch_sizes' must hold ints >= 1, got {merged['batch_sizes']!r}")
    for key in ("steps", "height", "width"):
        if merged[key] is not None and merged[key] < 1:
            raise ValueError(f"parameter {key!r} must be >= 1 or null, got {merged[key]}")
    merged["out_dir"] = str(merged["out_dir"])
    return merged


# Names IPython puts in a notebook's namespace that are not parameters.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open", "display"}


def from_namespace(namespace: dict) -> dict:
    """The parameters a notebook holds: every plain value its cells defined.

    Called right after the parameters cell (and papermill's injected one), so a
    parameter papermill injected under an unknown name is refused here, where
    papermill itself only warns.
    """
    from types import ModuleType

    found = {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _IPYTHON_NAMES
        and not isinstance(value, ModuleType)
        and not callable(value)
    }
    return validate(found)
