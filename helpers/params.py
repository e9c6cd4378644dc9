"""Parameters: one set of names for params files, notebooks, records and the CLI.

``DEFAULTS`` gives the whole published grid (4 qtypes x quantize TE x fuse QKV at
batch size 1). A params file holds only what differs. ``validate`` is the first
call of every entry point: it refuses unknown keys, wrong types and unknown
choices with a short ``ValueError`` before any model is loaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import make_dataclass
from pathlib import Path

import yaml

from .parameters import BY_NAME, PARAMETERS
from .presets import architecture
from .registry import BACKEND_QTYPES, EXECUTORS, preset

# Every parameter's default, type, choices and help: helpers/parameters.py, its one declaration.
DEFAULTS: dict = {p.name: p.default for p in PARAMETERS}

def _numbers(value):
    """Every number in a parameter's value (in lists and mappings too)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif isinstance(value, (list, tuple)):
        for x in value:
            yield from _numbers(x)
    elif isinstance(value, dict):
        for x in value.values():
            yield from _numbers(x)


def load_params_file(path: str | os.PathLike) -> dict:
    """Read a YAML params file; it must be a UTF-8 mapping (possibly empty)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"params file {str(path)!r} is a folder, not a YAML file")
    if not path.is_file():
        raise ValueError(f"params file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"params file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"params file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"params file {str(path)!r} must be a mapping of parameter names to values")
    return data


def ensure_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder (and its parents) now, so one that cannot be made is a one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"output folder {str(path)!r} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"output folder {str(path)!r} is not writable")
    return path


class _Mapping(Mapping):
    """Validated parameters: typed, frozen, complete. Read as ``p.dtype`` or, like the plain dict of a
    params file or a notebook, ``p["dtype"]``; ``dict(p)`` gives the plain names back (YAML, JSON)."""

    def __getitem__(self, key: str):
        if key not in DEFAULTS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(DEFAULTS)

    def __len__(self) -> int:
        return len(DEFAULTS)


# A frozen dataclass with one field per parameter, in their declared order (helpers/parameters.py).
Params = make_dataclass("Params", [(p.name, object) for p in PARAMETERS], bases=(_Mapping,), frozen=True)
Params.__module__, Params.__doc__ = __name__, _Mapping.__doc__


def validate(params) -> Params:
    """Merge ``params`` over ``DEFAULTS`` and check every key, type and choice.

    Returns a new, complete ``Params``. Raises ``ValueError`` naming the bad key
    and what it accepts.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; valid parameters: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **params}
    for key, value in merged.items():
        declared = BY_NAME[key]
        if not declared.check(value):
            raise ValueError(f"parameter {key!r} must be {declared.kind}, got {value!r}")
        if any(not math.isfinite(x) for x in _numbers(value)):
            raise ValueError(f"parameter {key!r} must be finite, got {value!r}")
    for key in ("model", "preset", "device", "dtype", "backend"):  # one value, from the declared choices
        choices = BY_NAME[key].choices
        if merged[key] not in choices:
            raise ValueError(f"parameter {key!r}: unknown value {merged[key]!r}; valid choices: {', '.join(choices)}")
    valid = BACKEND_QTYPES[merged["backend"]]
    if merged["qtypes"] is None:
        merged["qtypes"] = list(valid)
    for q in merged["qtypes"]:
        if q not in valid:
            raise ValueError(
                f"parameter 'qtypes': unknown qtype {q!r} for backend {merged['backend']!r}; "
                f"valid choices: {', '.join(valid)}"
            )
    _check_executor(merged)
    if merged["compile"] not in BY_NAME["compile"].choices:
        modes = ", ".join(m for m in BY_NAME["compile"].choices if m)
        raise ValueError(f"parameter 'compile': unknown mode {merged['compile']!r}; valid choices: false, {modes}")
    for key, what in (("offload", "mode"), ("quality_metrics", "metric")):  # lists: each from the declared choices
        choices = BY_NAME[key].choices
        for value in merged[key]:
            if value not in choices:
                raise ValueError(f"parameter {key!r}: unknown {what} {value!r}; valid choices: {', '.join(choices)}")
    for key in ("qtypes", "quantize_te", "te_qtypes", "fuse_qkv", "batch_sizes", "offload", "prompts"):
        if merged[key] is None and key == "te_qtypes":
            continue
        if not merged[key]:
            raise ValueError(f"parameter {key!r} is empty: the grid would have no configuration")
        hashable = [tuple(x) if isinstance(x, list) else x for x in merged[key]]
        if len(set(hashable)) != len(hashable):
            raise ValueError(f"parameter {key!r} has duplicates: {merged[key]!r}")
    _check_text_encoders(merged)
    if merged["warmup"] < 0:
        raise ValueError(f"parameter 'warmup' must be >= 0, got {merged['warmup']}")
    if merged["repeats"] < 1:
        raise ValueError(f"parameter 'repeats' must be >= 1, got {merged['repeats']}")
    if any(b < 1 for b in merged["batch_sizes"]):
        raise ValueError(f"parameter 'batch_sizes' must hold ints >= 1, got {merged['batch_sizes']!r}")
    for key in ("steps", "height", "width", "max_sequence_length", "threads", "timeout_s"):
        if merged[key] is not None and merged[key] < 1:
            raise ValueError(f"parameter {key!r} must be >= 1 or null, got {merged[key]}")
    _check_threads(merged)
    _check_text_tokens(merged)
    _check_size(merged)
    _check_checkpoint(merged)
    _check_gguf_file(merged)
    _check_exclude(merged)
    merged["out_dir"] = str(merged["out_dir"])
    return Params(**merged)


def _check_gguf_file(p: dict) -> None:
    """A prequantized GGUF file holds a full-size transformer: backend gguf and preset full only."""
    if p["gguf_file"] is None:
        return
    if p["backend"] != "gguf" or p["preset"] != "full":
        raise ValueError(f"parameter 'gguf_file' needs backend 'gguf' and preset 'full' (the file holds a full-size "
                         f"transformer), got backend {p['backend']!r} and preset {p['preset']!r}")  # fmt: skip


def _check_text_encoders(p: dict) -> None:
    """``quantize_te`` lists name the model's text encoders; ``te_qtypes`` are the backend's qtypes."""
    from .registry import backend, model_spec

    encoders = model_spec(p["model"]).text_encoders
    for entry in p["quantize_te"]:
        if isinstance(entry, bool):
            continue
        if not entry:
            raise ValueError("parameter 'quantize_te': an empty list quantizes no encoder; write false")
        for name in entry:
            if name not in encoders:
                raise ValueError(f"parameter 'quantize_te': {name!r} is not a text encoder of {p['model']}; "
                                 f"valid choices: {', '.join(encoders)}")  # fmt: skip
        if len(set(entry)) != len(entry):
            raise ValueError(f"parameter 'quantize_te': {entry!r} names an encoder twice")
    if p["te_qtypes"] is None:
        return
    valid = [q for q in BACKEND_QTYPES[p["backend"]] if q != "none"]
    if not backend(p["backend"]).TEXT_ENCODERS:
        raise ValueError(f"parameter 'te_qtypes': backend {p['backend']!r} quantizes the transformer only; valid: null")
    for q in p["te_qtypes"]:
        if q not in valid:
            raise ValueError(f"parameter 'te_qtypes': unknown qtype {q!r} for backend {p['backend']!r}; "
                             f"valid choices: {', '.join(valid)} (false in quantize_te: no encoder quantized)")  # fmt: skip


# Ray task resources a params file may set (Ray's own names).
RAY_RESOURCES = ("num_cpus", "num_gpus")


def _check_executor(p: dict) -> None:
    """``executor`` unset: ``ray`` for the full-size presets or when a Ray setting is given, else ``inline``."""
    if p["executor"] is None:
        wants_ray = preset(p["preset"]).EXECUTOR == "ray" or any(p[k] is not None for k in ("ray_address", "ray_resources", "timeout_s"))
        p["executor"] = "ray" if wants_ray else "inline"
    if p["executor"] not in EXECUTORS:
        raise ValueError(f"parameter 'executor': unknown value {p['executor']!r}; valid choices: {', '.join(EXECUTORS)}")
    if p["executor"] == "inline":
        for key in ("ray_address", "ray_resources"):
            if p[key] is not None:
                raise ValueError(f"parameter {key!r} needs executor 'ray' (executor is 'inline')")
        if p["timeout_s"] is not None:
            raise ValueError("parameter 'timeout_s' needs executor 'ray': inline, a configuration runs in this "
                             "process and cannot be cancelled; valid values here: null")  # fmt: skip
    elif p["timeout_s"] is None:
        p["timeout_s"] = preset(p["preset"]).TIMEOUT_S
    if p["ray_address"] is not None and not p["ray_address"].strip():
        raise ValueError("parameter 'ray_address' is empty; valid values: null, auto or host:port")
    for key, value in (p["ray_resources"] or {}).items():
        if key not in RAY_RESOURCES:
            raise ValueError(f"parameter 'ray_resources': unknown resource {key!r}; valid choices: {', '.join(RAY_RESOURCES)}")
        if value < 0:
            raise ValueError(f"parameter 'ray_resources': {key} must be >= 0, got {value}")
    if p["executor"] == "ray" and p["device"] == "cuda":
        check_gpu_resources(p["ray_resources"])


def check_gpu_resources(resources: dict | None) -> None:
    """On CUDA a configuration's Ray task must hold whole GPUs: Ray sets ``CUDA_VISIBLE_DEVICES`` only for the
    GPUs it assigns, so a task without ``num_gpus`` would see every GPU and use GPU 0, and a fraction would
    let two configurations share one GPU and time each other. ``None``: the default, one GPU."""
    if resources is None:
        return
    gpus = resources.get("num_gpus")
    if gpus is None or gpus < 1 or gpus != int(gpus):
        got = "no num_gpus" if gpus is None else f"num_gpus {gpus}"
        raise ValueError(f"parameter 'ray_resources': {got} on device cuda; valid values: num_gpus a whole number "
                         ">= 1 (Ray gives a task its own GPUs only then), or ray_resources null (1 GPU)")  # fmt: skip


def _check_threads(p: dict) -> None:
    """More threads than cores crashes torch (a segfault, not an error). Checked where the configurations run
    on this machine: inline, or on Ray's embedded local cluster; a cluster joined elsewhere has its own cores."""
    cores = os.cpu_count() or 1
    here = p["executor"] == "inline" or p["ray_address"] is None
    if p["threads"] is not None and here and p["threads"] > cores:
        raise ValueError(f"parameter 'threads': {p['threads']} is more than this machine's {cores} cores; "
                         f"valid values: 1 to {cores} or null (every core)")  # fmt: skip


def _check_text_tokens(p: dict) -> None:
    """``max_sequence_length`` up to what the model's pipeline accepts (``ModelSpec.max_text_tokens``)."""
    from .registry import model_spec

    limit = model_spec(p["model"]).max_text_tokens
    if p["max_sequence_length"] is not None and limit is not None and p["max_sequence_length"] > limit:
        raise ValueError(f"parameter 'max_sequence_length': {p['max_sequence_length']} tokens is more than the "
                         f"{p['model']} pipeline accepts; valid values: 1 to {limit} or null")  # fmt: skip


# Every pipeline here decodes with a VAE of scale factor 8 and needs whole 2x2 patches (PixArt, SD3) or
# 2x2 latent packing (FLUX): height and width are multiples of 16. SD3 also has a largest size, its
# position-embedding table: pos_embed_max_size patches of patch_size latents of 8 px.
SIZE_MULTIPLE = 16


def _max_size(model: str, preset_name: str) -> int | None:
    """The largest side the transformer's position table allows (the model module says how it counts)."""
    import math

    from .registry import model_spec

    spec = model_spec(model)
    arch = architecture(preset(preset_name), spec)["transformer"][2]
    if spec.pos_embed is None:
        return None
    side = arch["pos_embed_max_size"] if spec.pos_embed == "per-side" else math.isqrt(arch["pos_embed_max_size"])
    return side * arch["patch_size"] * 8


def _check_size(p: dict) -> None:
    limit = None if p["checkpoint"] else _max_size(p["model"], p["preset"])
    for key in ("height", "width"):
        value = p[key]
        if value is None:
            continue
        if value % SIZE_MULTIPLE:
            raise ValueError(
                f"parameter {key!r}: {value} px is not accepted by the {p['model']} pipeline; "
                f"valid values: multiples of {SIZE_MULTIPLE}" + (f" up to {limit}" if limit else "")
            )
        if limit and value > limit:
            raise ValueError(
                f"parameter {key!r}: {value} px is larger than the {p['model']} {p['preset']} transformer's "
                f"position embeddings allow; valid values: multiples of {SIZE_MULTIPLE} up to {limit}"
            )


def _check_exclude(p: dict) -> None:
    """A pattern that leaves no module of the transformer alone is a typo: refused, with names it could mean.
    Patterns that together exclude every Linear leave nothing to quantize: refused too."""
    import difflib

    from .registry import backend

    if not p["exclude"]:
        return
    from .module_names import transformer_modules

    table = transformer_modules(p)
    names = table["names"]
    rule = backend(p["backend"]).excludes
    for pattern in p["exclude"]:
        if not any(rule(pattern, name) for name in names):
            leaves = sorted({name.rsplit(".", 1)[-1] for name in names if not name.rsplit(".", 1)[-1].isdigit()})
            close = difflib.get_close_matches(pattern, leaves, n=5, cutoff=0.5) or leaves[:5]
            raise ValueError(
                f"parameter 'exclude': {pattern!r} matches no module of the {p['model']} transformer "
                f"({p['backend']} rule); module names such as: {', '.join(close)}"
            )
    for fused in dict.fromkeys(p["fuse_qkv"]):
        linear = table["fused_linear" if fused else "linear"]
        if linear and all(any(rule(pattern, name) for pattern in p["exclude"]) for name in linear):
            raise ValueError(
                f"parameter 'exclude': {p['exclude']!r} excludes every Linear of the {p['model']} transformer"
                f"{' with fused QKV' if fused else ''} ({p['backend']} rule), so nothing would be quantized; valid "
                f"values: patterns that leave at least one of its {len(linear)} Linear modules, e.g. {linear[-1]!r}"
            )


_OFFLINE_HINT = "the tiny preset (preset: tiny) or a local pipeline folder (checkpoint: /path/to/pipeline) works offline"


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") != 1 or os.sep != "/" and os.sep in text


def _check_checkpoint(p: dict) -> None:
    """A local folder must exist and hold a pipeline; a hub id needs the hub (or its local cache)."""
    from .registry import model_spec

    checkpoint, weights = p["checkpoint"], preset(p["preset"]).WEIGHTS
    if weights == "memory" and checkpoint is not None:
        raise ValueError(f"parameter 'checkpoint' must be null with preset {p['preset']!r} (it builds its weights)")
    if checkpoint is None:
        if weights != "hub":
            return
        checkpoint = model_spec(p["model"]).hub_id
    path = Path(checkpoint).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"parameter 'checkpoint': {checkpoint!r} holds no model_index.json (not a diffusers pipeline)")
        return
    if _looks_like_path(checkpoint):
        raise ValueError(f"parameter 'checkpoint': the path {checkpoint!r} does not exist")
    from .pipelines import hub_available

    if not hub_available(checkpoint):
        raise ValueError(
            f"checkpoint {checkpoint!r} is a hub id, the hub cannot be reached from here and the checkpoint is "
            f"not in the local hub cache; {_OFFLINE_HINT}"
        )


def _injected_names(namespace: dict) -> set[str]:
    """The names papermill's injected cell (``# Parameters``) assigned, when it is the cell run just before
    this one: the kernel's input history (``In``) holds the current cell last."""
    import ast

    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2 or not history[-2].lstrip().startswith("# Parameters"):
        return set()
    try:
        tree = ast.parse(history[-2])
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def from_namespace(namespace: dict) -> Params:
    """The parameters a notebook holds: the names of its parameters cell (``DEFAULTS``' names) and of the
    cell papermill injected after it, and nothing else.

    Whatever else the kernel holds is ignored: ``params``, ``rows`` or ``predicted`` from an earlier Run All
    in the same kernel, and any variable the user defined. A parameter papermill injected under an unknown
    name is refused here, where papermill itself only warns.
    """
    names = [*DEFAULTS, *sorted(_injected_names(namespace) - set(DEFAULTS))]
    return validate({name: namespace[name] for name in names if name in namespace})
