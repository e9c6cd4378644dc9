"""Where a pipeline comes from: the tiny cache, a hub id or a local path.

Every preset ends in the same call, ``DiffusionPipeline.from_pretrained(path,
dtype=...)``, so the tiny default exercises the loading code that a
full-size checkpoint goes through on a GPU machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pathlib import Path

from .cache import key_hash, write_atomic
from .paths import cache_dir
from .registry import model_spec, preset, torch_device, torch_dtype


def tiny_name(model: str) -> str:
    """``tiny-<model>-<hash>``: names the tiny pipeline by its content (architecture, tokenizer words, call).

    The name is what records carry as their checkpoint, and the cache folder's name: a change to the tiny
    architecture gives new records and a new folder, while an edit that changes nothing built (a comment,
    the order of the code) changes neither. Computing it builds nothing.
    """
    from . import tiny

    spec = model_spec(model)
    content = {"components": spec.tiny, "call": spec.tiny_call, "scheduler": spec.scheduler, "words": tiny.WORDS}
    return f"tiny-{model}-{key_hash(content, 12)}"


def ensure_tiny(model: str) -> Path:
    """Build and save the tiny pipeline of ``model`` once; return its folder."""
    from .tiny import build_tiny

    path = cache_dir() / tiny_name(model)
    if (path / "model_index.json").is_file():
        return path
    return write_atomic(path, lambda tmp: build_tiny(model, tmp))  # another process finished first: keeps theirs


def checkpoint_name(params: Mapping) -> str:
    """What records carry as ``checkpoint``: the same on every machine, and nothing is built to know it."""
    if params["checkpoint"]:
        return params["checkpoint"]
    weights = preset(params["preset"]).WEIGHTS
    if weights == "built":
        return tiny_name(params["model"])
    if weights == "memory":
        return f"{params['preset']}:{params['model']}"  # no files: built in memory (random_full.py)
    return model_spec(params["model"]).hub_id


def resolve_checkpoint(params: Mapping) -> str | None:
    """The ``from_pretrained`` argument for these parameters, on this machine (builds the tiny pipeline once);
    ``None`` where the preset builds its weights in memory (random-full)."""
    weights = preset(params["preset"]).WEIGHTS
    if weights == "memory":
        return None
    if weights == "built" and not params["checkpoint"]:
        return str(ensure_tiny(params["model"]))
    return checkpoint_name(params)


def call_settings(params: Mapping) -> dict:
    """Steps, size and guidance: the parameters if given, else the preset's defaults."""
    spec = model_spec(params["model"])
    base = preset(params["preset"]).call_defaults(spec)
    extra = {**base.pop("extra_call_kwargs", {}), **spec.call_kwargs}
    for name, key in (("steps", "num_inference_steps"), ("height", "height"), ("width", "width")):
        if params[name] is not None:
            base[key] = params[name]
    if params["height"] is not None or params["width"] is not None:
        extra.update(spec.sized_call_kwargs)  # e.g. no resolution binning: the size asked for is measured
    if params["max_sequence_length"] is not None:
        extra["max_sequence_length"] = params["max_sequence_length"]
    if params["guidance_scale"] is not None:
        base["guidance_scale"] = float(params["guidance_scale"])
    base[spec.guidance_argument] = base.pop("guidance_scale")  # another name where the model says so (true CFG's true_cfg_scale)
    return {**base, **extra}


def guidance_of(model: str, call: Mapping) -> float:
    """The guidance value of a call (``call_settings``), whichever argument the model's pipeline takes it as."""
    return call[model_spec(model).guidance_argument]


def import_libraries(model: str) -> None:
    """Import the model's pipeline and component classes (diffusers, transformers and what they pull in), so a
    notebook pays that in its import cell, not in its first configuration's ``load_s``."""
    import diffusers
    import transformers

    from .registry import pipeline_class

    pipeline_class(model)
    for library, cls, _ in model_spec(model).tiny.values():
        getattr(diffusers if library == "diffusers" else transformers, cls)


def load_pipeline(checkpoint: str, dtype: str, device: str, quantization_config=None, components: dict | None = None,
                  offload: bool = False):  # fmt: skip
    """Load through the same call a hub checkpoint uses, onto the device it runs on; safetensors only, never
    remote code.
    ``components``: modules already loaded (a GGUF transformer), passed to ``from_pretrained`` as they are.
    ``offload``: for an offloading configuration (``device`` is then the CPU): every component is left where
    ``from_pretrained`` puts it, as a diffusers user loads before ``enable_*_offload``: on the CPU, except what
    bitsandbytes' quantizer places on the GPU itself; each offload mode moves the weights from there.

    Loading logs two warnings that do not apply here (transformers: image
    processors want torchvision, which no pipeline of ours uses; diffusers:
    fp16 "cannot run" on the CPU, which it does, only slowly); they are
    silenced for the duration of the call with the loading progress bars;
    errors still show.
    """
    import diffusers
    import transformers
    from diffusers import DiffusionPipeline

    levels = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    bars = diffusers.logging.is_progress_bar_enabled(), transformers.logging.is_progress_bar_enabled()
    for lib in (diffusers, transformers):
        lib.logging.set_verbosity_error()
        lib.logging.disable_progress_bar()
    try:
        # `dtype=` is what diffusers 0.42 calls `torch_dtype=` (deprecated, same meaning).
        # On CUDA every component loads straight onto the GPU (diffusers' device_map "cuda"), so what
        # quantizes at load (torchao, bitsandbytes) quantizes there: without it diffusers loads onto the CPU
        # and quantizes there, for FLUX.1-dev 12 B parameters on a Ray task's one thread, for minutes, with
        # the bf16 weights in host memory.
        target = torch_device(device)
        pipe = DiffusionPipeline.from_pretrained(
            checkpoint,
            dtype=torch_dtype(dtype),
            use_safetensors=True,
            trust_remote_code=False,
            **({"device_map": target} if target == "cuda" else {}),
            **({"quantization_config": quantization_config} if quantization_config is not None else {}),
            **(components or {}),
        )
        if not offload:
            pipe = pipe.to(target)  # components passed in as they were (a GGUF transformer), and the CPU
    finally:
        for lib, level, bar in zip((diffusers, transformers), levels, bars):
            lib.logging.set_verbosity(level)
            lib.logging.enable_progress_bar() if bar else lib.logging.disable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hub_available(repo_id: str) -> bool:
    """In the local hub cache, or the hub answers within 3 s (never when HF_HUB_OFFLINE is set)."""
    import socket

    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False
