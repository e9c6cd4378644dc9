"""The one module that times and measures. Nothing else in the project does.

Protocol for one configuration (see ``measure``):

1. ``warmup`` untimed calls of the whole pipeline.
2. ``repeats`` timed calls, each its own sample: synchronize, ``perf_counter``,
   call, synchronize, ``perf_counter``. Reported as median, min and max.
3. ``memory_gb``: on CUDA ``torch.cuda.memory_allocated()`` after
   ``empty_cache()``; on the CPU the exact bytes of every tensor the pipeline's
   modules hold (parameters and buffers, quantized tensors' inner data and
   scales, each storage counted once). GB = bytes / 1024**3.
4. ``peak_memory_gb``: one more call with the fixed seed (its first image is the
   saved image). CUDA: ``max_memory_allocated()`` after
   ``reset_peak_memory_stats()``. CPU: the process's peak resident memory
   (``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``) above its
   resident memory just before the call; ``None`` where Linux does not allow it.

``cleanup`` frees what a configuration held before the next one starts.
"""

from __future__ import annotations

import functools
import gc
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1024**3


@dataclass
class Measurement:
    latency_s: float
    latency_min_s: float
    latency_max_s: float
    repeats: int
    memory_bytes: int
    memory_gb: float
    peak_memory_gb: float | None
    image: object  # PIL.Image of the fixed-seed call
    latents: torch.Tensor  # its final latents (float32, CPU)
    compile_s: float | None = None  # the first call of a compiled model (not a latency sample)


def _plain_tensors(t: torch.Tensor):
    """The plain tensors behind ``t``: quanto's subclasses hold data, scales and shifts inside."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        for name in names:
            yield from _plain_tensors(getattr(t, name))
    else:
        yield t


def pipeline_modules(pipe) -> dict:
    """The ``torch.nn.Module`` components of a pipeline, by name."""
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def tensor_bytes(modules) -> int:
    """Bytes of every parameter and buffer storage held by ``modules``, each storage once.

    Meta tensors (the memory estimate) have no data pointer: each tensor object
    counts once, so a weight shared between modules still counts once.
    """
    seen: dict[tuple, int] = {}
    alive = []  # keep meta tensors referenced so their ids stay unique while counting
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            for plain in _plain_tensors(t):
                if plain.device.type == "meta":
                    alive.append(plain)
                    key = ("meta", id(plain))
                else:
                    key = (plain.device.type, plain.untyped_storage().data_ptr())
                seen[key] = plain.untyped_storage().nbytes()
    return sum(seen.values())


def component_bytes(pipe) -> dict[str, int]:
    return {name: tensor_bytes([m]) for name, m in pipeline_modules(pipe).items()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cleanup(device: str) -> None:
    """Drop what the last configuration left, then freeze the survivors.

    ``gc.freeze`` moves every object still alive after the collection (modules
    and caches that libraries import lazily on a first load) out of the
    collector's view, so the next collection scans only what the next
    configuration creates: a full collection cost 0.15-0.2 s otherwise, a
    sixth of a tiny configuration's time.
    """
    gc.collect()
    gc.freeze()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@functools.lru_cache(maxsize=None)
def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def process_age_s() -> float:
    """Seconds since this process started: what a fresh worker paid before its first configuration."""
    import psutil

    return time.time() - psutil.Process().create_time()


def timed(fn):
    """``(fn(), seconds)``: for one-off costs such as building random weights (not a latency)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def generate(pipe, call_kwargs: dict, seed: int):
    """One untimed call with the fixed seed: (first image, final latents as float32 on the CPU); raises
    ``FloatingPointError`` if a final latent is NaN or inf.

    The final latents are taken from the pipeline's own step callback, so the call
    is the same call as a timed one: ``callback_on_step_end`` (FLUX, SD3) or the
    older ``callback`` (PixArt-Sigma).
    """
    import inspect

    kept = {}

    def keep_new(_pipe, _step, _timestep, tensors):
        kept["latents"] = tensors["latents"]
        return {}

    def keep_old(_step, _timestep, latents):
        kept["latents"] = latents

    accepted = inspect.signature(pipe.__call__).parameters
    if "callback_on_step_end" in accepted:
        hook = {"callback_on_step_end": keep_new, "callback_on_step_end_tensor_inputs": ["latents"]}
    elif "callback" in accepted:
        hook = {"callback": keep_old, "callback_steps": 1}
    else:
        raise TypeError(f"{type(pipe).__name__} offers no step callback to read its final latents from")
    out = pipe(**call_kwargs, generator=torch.Generator(device="cpu").manual_seed(seed), **hook)
    latents = kept["latents"].detach().float().cpu()
    bad = int((~torch.isfinite(latents)).sum())
    if bad:  # the image would be noise cast to uint8, and its latency a figure for nothing
        raise FloatingPointError(f"{bad} of {latents.numel()} final latents are NaN or inf")
    return out.images[0], latents


def measure(
    pipe, call_kwargs: dict, *, device: str, warmup: int, repeats: int, seed: int, compiled: bool = False
) -> Measurement:
    """Run the protocol above on a prepared pipeline.

    ``compiled``: the first call (which compiles) is timed on its own as
    ``compile_s`` before the warm-up, and never counts as a latency sample.
    """

    def call():
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return pipe(**call_kwargs, generator=generator)

    compile_s = None
    if compiled:
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        compile_s = time.perf_counter() - start

    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        samples.append(time.perf_counter() - start)

    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        memory = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        image, latents = generate(pipe, call_kwargs, seed)
        _sync(device)
        peak = torch.cuda.max_memory_allocated()
    else:
        memory = tensor_bytes(pipeline_modules(pipe).values())
        before = _proc_status("VmRSS")
        can_reset = _reset_cpu_peak() and before is not None
        image, latents = generate(pipe, call_kwargs, seed)
        hwm = _proc_status("VmHWM")
        peak = max(hwm - before, 0) if can_reset and hwm is not None else None

    return Measurement(
        latency_s=statistics.median(samples),
        latency_min_s=min(samples),
        latency_max_s=max(samples),
        repeats=repeats,
        memory_bytes=memory,
        memory_gb=memory / GB,
        peak_memory_gb=None if peak is None else peak / GB,
        image=image,
        latents=latents,
        compile_s=compile_s,
    )
