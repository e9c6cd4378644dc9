"""The one module that times and measures. Nothing else in the project does.

Protocol for one configuration (see ``measure``); GB = bytes / 1024**3:

1. ``host_peak_start()`` at the configuration's start, before anything loads.
2. ``warmup`` untimed calls of the whole pipeline (after the first call, timed
   alone as ``compile_s``, when the transformer is compiled).
3. ``repeats`` timed calls, each its own sample: synchronize, ``perf_counter``,
   call, synchronize, ``perf_counter``. Reported as median, min and max.
4. The loaded state, after the timed calls, a ``gc.collect()`` and (CUDA)
   ``torch.cuda.empty_cache()``:

   - ``memory_gb``: CUDA ``torch.cuda.memory_allocated()`` (the tensors alive);
     CPU the exact bytes of every tensor the pipeline's modules hold (parameters
     and buffers, quantized tensors' inner data and scales, each storage once).
   - ``memory_reserved_gb`` (CUDA): ``torch.cuda.memory_reserved()``, what the
     caching allocator holds from the driver (CUDA graph pools included).
   - ``device_used_gb`` (CUDA): NVML's ``used`` memory of the whole device
     (every process, the CUDA context, memory torch's allocator never sees).

5. One more call with the fixed seed (its first image is the saved image):

   - ``peak_memory_gb``: CUDA ``torch.cuda.max_memory_allocated()`` after
     ``reset_peak_memory_stats()``, absolute (the weights included);
     ``peak_basis`` "cuda-allocated-absolute". CPU: how much the process's peak
     resident memory (``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``)
     rose above its resident memory just before the call, a delta;
     ``peak_basis`` "cpu-resident-growth"; ``None`` where Linux does not allow it.
   - ``peak_reserved_gb`` (CUDA): ``torch.cuda.max_memory_reserved()`` over the
     same call; it sees the CUDA graphs of ``max-autotune``, which live in a
     private pool that ``max_memory_allocated`` does not count.
   - ``peak_device_used_gb`` (CUDA): the highest NVML ``used`` memory seen by a
     thread that reads it every ``DEVICE_POLL_S`` during the call (and once
     before and after it).

   - Phases of that call (``phases``): ``phase_peak_gb`` per phase, ``encode`` (the text
     encoders), ``denoise`` (the transformer's steps) and ``decode`` (the VAE decoder),
     and ``peak_phase``, the phase that sets the peak. CUDA: ``max_memory_allocated``
     and ``max_memory_reserved`` of each phase (``phase_peak_reserved_gb``), the peak
     stats reset at each boundary; CPU: ``memory_gb`` plus the highest bytes of live
     tensor storages the call created during the phase, counted by ``LiveBytes`` (a
     ``TorchDispatchMode``), the same tracker the estimate runs on fake tensors.

6. ``host_peak_gb()``: the process's peak resident memory (``VmHWM``) from
   ``host_peak_start()`` on, load included, kept as a running maximum because
   step 5 resets ``VmHWM`` on the CPU; ``None`` where Linux does not allow a reset.

NVML figures (``device_used_gb``, ``peak_device_used_gb``, ``cuda_driver``) are
``None`` without the ``pynvml`` module or without an NVIDIA driver; NVML finds
torch's device by its UUID, so ``CUDA_VISIBLE_DEVICES`` (Ray sets it) cannot
point it at another GPU. ``hardware`` gives the GPU's identity.

Compiled configurations (``prepare_compile``, called by
``quant.compile_transformer``) all compile with the same inductor settings:
torch's defaults plus ``INDUCTOR_SETTINGS``, whatever an earlier load set
(torchao's ``quantize_`` sets its recommended flags for the whole process);
``inductor_config`` is a hash of those settings as the first call compiles, and
each compiles into its own fresh cache folder, ``compile_cache_dir``.

``cleanup`` frees what a configuration held before the next one starts, resets
dynamo (``torch.compiler.reset()``) and removes the compile cache folder.
"""

from __future__ import annotations

import copy
import functools
import gc
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1024**3
DEVICE_POLL_S = 0.002  # how often the peak call's thread reads NVML's used memory
PEAK_BASIS = {"cuda": "cuda-allocated-absolute", "cpu": "cpu-resident-growth"}

# The project's inductor settings, applied on top of torch's defaults to every compiled configuration.
# None: torch's defaults are what plain torch.compile gives every backend, the compiled `none` reference
# included, which no torchao load touches. torchao's recommended flags (torchao/quantization/utils.py,
# recommended_inductor_config_setter) reach only the processes that loaded a torchao config, so leaving
# them there would tune torchao's compiled figures differently from the reference they are compared with.
INDUCTOR_SETTINGS: dict[str, object] = {}


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
    peak_basis: str | None = None  # what peak_memory_gb is: PEAK_BASIS[device]; None with no peak
    memory_reserved_gb: float | None = None  # CUDA: memory_reserved in the loaded state
    device_used_gb: float | None = None  # CUDA: NVML used memory of the device in the loaded state
    peak_reserved_gb: float | None = None  # CUDA: max_memory_reserved over the fixed-seed call
    peak_device_used_gb: float | None = None  # CUDA: highest NVML used memory seen during that call
    inductor_config: str | None = None  # compiled: inductor_config_hash as the first call compiled
    compile_cache_dir: str | None = None  # compiled: the configuration's fresh inductor/triton cache folder
    phase_peak_gb: dict | None = None  # {"encode"|"denoise"|"decode": allocated peak (weights included), GB}
    phase_peak_reserved_gb: dict | None = None  # CUDA: max_memory_reserved of each phase
    peak_phase: str | None = None  # the phase with the highest phase_peak_gb


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


PHASES = ("encode", "denoise", "decode")


def _storages(t: torch.Tensor):
    """The storages behind ``t``: a quantized subclass's inner tensors' (``_plain_tensors``), else its own (a
    fake tensor has no ``__tensor_flatten__``: its own)."""
    return (plain.untyped_storage() for plain in _plain_tensors(t))


def _is_wrapper(t) -> bool:
    """A quantized tensor subclass (quanto, torchao): the rule ``_plain_tensors`` flattens by."""
    return hasattr(t, "__tensor_flatten__")


class LiveBytes:
    """Bytes of the tensor storages an operation creates while active, live and at their highest, per phase.

    A ``TorchDispatchMode`` sees every aten operation. A storage it has not seen before among an operation's
    inputs (a weight, the caller's tensors) is known and not counted; a new one among its outputs is counted
    until it is freed: a weak reference's callback, the way torch's own
    ``torch.distributed._tools.mem_tracker.MemTracker`` follows storages. A quantized tensor subclass is let
    to run its own dispatch first (the mode answers ``NotImplemented``), so the plain operations it makes are
    counted. Kernel-internal scratch memory (a cuBLAS or cuDNN workspace) is not an operation's output and is
    not seen. It works the same on real and on fake tensors: the estimate's prediction and the CPU's
    measurement are the same count. ``events`` (if asked): ``("malloc", key, bytes)`` and ``("free", key)``
    in order, what ``allocator.replay`` takes.

    ``weights``: the pipeline's parameters and buffers (tensor -> a key of the caller's). A weight whose
    storage is freed during the call gives its bytes back, ``("free-weight", key)``: diffusers' layerwise
    casting replaces each layer's float8 weight by a cast copy for its forward and a new float8 one after
    it (``module.to``), so without this every layer's new weight would count as new memory.
    ``incarnations()`` after the call: the key of each weight whose storage the call replaced -> the event
    key of the storage that holds it now.
    """

    def __init__(self, events: bool = False, weights: dict | None = None):
        self.live = 0
        self.phase: str | None = PHASES[0]
        self.peaks: dict[str, int] = {}
        self.events: list | None = [] if events else None
        from torch.utils.weak import WeakIdKeyDictionary

        self.weights = WeakIdKeyDictionary(weights or {})  # not kept alive here: a replaced buffer is freed
        self._mode = None
        self._known = None

    def _free_weight(self, nbytes: int, key) -> None:
        if self._mode is None:  # the call is over: the pipeline itself is being dropped
            return
        self.live -= nbytes
        if self.events is not None:
            self.events.append(("free-weight", key))

    def incarnations(self) -> dict:
        out = {}
        for t, key in self.weights.items():
            now = None if _is_wrapper(type(t)) else self._known.get(t.untyped_storage())
            if now is not None:
                out[key] = now
        return out

    def _free(self, nbytes: int, key: int) -> None:
        self.live -= nbytes
        if self.events is not None:
            self.events.append(("free", key))

    def __enter__(self):
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.weak import WeakIdKeyDictionary

        tracker, known, counter = self, WeakIdKeyDictionary(), iter(range(1 << 62))
        self._known = known
        for t, key in self.weights.items():
            for st in _storages(t):
                if st not in known:
                    known[st] = None
                    weakref.finalize(st, tracker._free_weight, st.nbytes(), key)

        def tensors(value):  # the tensors in an operation's arguments or outputs (tuples, lists, dicts)
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, (tuple, list)):
                for v in value:
                    yield from tensors(v)
            elif isinstance(value, dict):
                for v in value.values():
                    yield from tensors(v)

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if any(_is_wrapper(t) for t in types):
                    return NotImplemented
                for a in tensors((args, kwargs)):
                    for st in _storages(a):
                        if st not in known:
                            known[st] = None
                out = func(*args, **(kwargs or {}))
                for a in tensors(out):
                    for st in _storages(a):
                        if st not in known:
                            nbytes, key = st.nbytes(), next(counter)
                            known[st] = key
                            tracker.live += nbytes
                            if tracker.events is not None:
                                tracker.events.append(("malloc", key, nbytes))
                            weakref.finalize(st, tracker._free, nbytes, key)
                phase = tracker.phase
                if phase is not None and tracker.live > tracker.peaks.get(phase, -1):
                    tracker.peaks[phase] = tracker.live
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._mode = None
        return False


def _phase_hooks(pipe, on_phase) -> list:
    """Hooks that call ``on_phase(phase, component)`` where a component's forward begins, and
    ``on_phase(None, None)`` where decoding ends: a text encoder begins ``encode``, the transformer
    ``denoise``, the VAE's decoder ``decode``."""
    handles = []
    modules = pipeline_modules(pipe)

    def enter(phase, component):
        return lambda *_: on_phase(phase, component)

    for name, module in modules.items():
        if name.startswith("text_encoder"):
            handles.append(module.register_forward_pre_hook(enter("encode", name)))
    if "transformer" in modules:
        handles.append(modules["transformer"].register_forward_pre_hook(enter("denoise", "transformer")))
    decoder = getattr(modules.get("vae"), "decoder", None)
    if decoder is not None:
        handles.append(decoder.register_forward_pre_hook(enter("decode", "vae")))
        handles.append(decoder.register_forward_hook(lambda *_: on_phase(None, None)))
    return handles


def traced_call(pipe, call_kwargs: dict, seed: int, events: bool = False,
                weights: dict | None = None) -> tuple[object, LiveBytes]:  # fmt: skip
    """One call of ``pipe`` with ``LiveBytes`` counting each phase (the CPU's measurement, the estimate's
    prediction on fake tensors): ``(output, tracker)``. ``weights``: tensor -> key (``LiveBytes``); by default
    every parameter and buffer of the pipeline's components."""
    if weights is None:
        tensors = (t for m in pipeline_modules(pipe).values() for t in [*m.parameters(), *m.buffers()])
        weights = {t: i for i, t in enumerate(tensors)}
    tracker = LiveBytes(events=events, weights=weights)

    def on_phase(name, component):
        tracker.phase = name
        if tracker.events is not None:
            tracker.events.append(("enter", component))

    handles = _phase_hooks(pipe, on_phase)
    try:
        with torch.no_grad(), tracker:
            out = pipe(**call_kwargs, generator=torch.Generator(device="cpu").manual_seed(seed))
    finally:
        for h in handles:
            h.remove()
    return out, tracker


class _CudaPhases:
    """CUDA: at each phase boundary the peak stats of the phase that ends are read, then reset."""

    def __init__(self, pipe):
        self.pipe, self.phase = pipe, PHASES[0]
        self.allocated: dict[str, int] = {}
        self.reserved: dict[str, int] = {}

    def _close(self):
        if self.phase is not None:
            torch.cuda.synchronize()
            a, r = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
            self.allocated[self.phase] = max(self.allocated.get(self.phase, 0), a)
            self.reserved[self.phase] = max(self.reserved.get(self.phase, 0), r)

    def on_phase(self, name, _component):
        if name != self.phase:
            self._close()
            torch.cuda.reset_peak_memory_stats()
            self.phase = name

    def __enter__(self):
        self.handles = _phase_hooks(self.pipe, self.on_phase)
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self._close()
        return False


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
    """Reset ``VmHWM`` to the current resident memory; callers fold it into the host peak first."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- the host peak over a configuration ------------------------------------------------------------

_host_peak_bytes: int | None = None  # the running maximum of VmHWM since host_peak_start; None: not known


def host_peak_start() -> None:
    """Start the configuration's host peak: reset ``VmHWM``, so that earlier configurations in this process
    do not count. Where Linux does not allow the reset, ``host_peak_gb`` is ``None``."""
    global _host_peak_bytes
    _host_peak_bytes = _proc_status("VmHWM") if _reset_cpu_peak() else None


def _fold_host_peak() -> None:
    """Fold ``VmHWM`` into the running maximum: before anything resets it, and when the peak is read."""
    global _host_peak_bytes
    hwm = _proc_status("VmHWM")
    if _host_peak_bytes is not None and hwm is not None:
        _host_peak_bytes = max(_host_peak_bytes, hwm)


def host_peak_gb() -> float | None:
    """The process's peak resident memory since ``host_peak_start``, in GB (``None``: not known)."""
    _fold_host_peak()
    return None if _host_peak_bytes is None else _host_peak_bytes / GB


# -- NVML: the whole device's memory and the driver --------------------------------------------------


@functools.lru_cache(maxsize=None)
def _nvml():
    """The ``pynvml`` module, initialised; ``None`` without it or without an NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no libnvidia-ml.so (NVMLError_LibraryNotFound), no driver loaded, ...
        return None
    return pynvml


@functools.lru_cache(maxsize=None)
def _nvml_handle(index: int):
    """NVML's handle of torch's CUDA device ``index``, found by the device's UUID, or ``None``.

    Not by index: under ``CUDA_VISIBLE_DEVICES`` (Ray sets it) torch's device 0
    may be NVML's device 3. torch gives the UUID without NVML's prefix: "GPU-"
    for a whole GPU, "MIG-" for a MIG instance.
    """
    nvml = _nvml()
    if nvml is None:
        return None
    uuid = str(torch.cuda.get_device_properties(index).uuid)  # torch's _CUuuid prints 8-4-4-4-12 hex
    for name in [uuid] if uuid.startswith(("GPU-", "MIG-")) else ["GPU-" + uuid, "MIG-" + uuid]:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(name)
        except nvml.NVMLError:
            continue
    return None


def _cuda_index() -> int:
    return torch.cuda.current_device()


def device_used_bytes(index: int | None = None) -> int | None:
    """NVML's used memory of the whole CUDA device (torch's index; default the current one), or ``None``."""
    handle = _nvml_handle(_cuda_index() if index is None else index)
    if handle is None:
        return None
    nvml = _nvml()
    try:
        return int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    except nvml.NVMLError:
        return None


def cuda_driver() -> str | None:
    """The NVIDIA driver's version as NVML reports it ("570.124.06"), or ``None``."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        version = nvml.nvmlSystemGetDriverVersion()
    except nvml.NVMLError:
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


class _DevicePeak:
    """The highest NVML used memory of one device while the ``with`` block runs (``peak_bytes``).

    A daemon thread reads it every ``DEVICE_POLL_S``; one reading before and
    one after the block cover a block shorter than that. ``None`` without NVML.
    """

    def __init__(self, index: int, interval_s: float = DEVICE_POLL_S):
        self.index, self.interval_s = index, interval_s
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        used = device_used_bytes(self.index)
        if used is not None:
            self.peak_bytes = used if self.peak_bytes is None else max(self.peak_bytes, used)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def __enter__(self):
        self._read()
        if self.peak_bytes is not None:
            self._thread = threading.Thread(target=self._poll, name="device-peak", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._read()
        return False


def hardware(device: str) -> dict:
    """The GPU's identity: ``gpu``, ``compute_capability`` ("9.0"), ``cuda_runtime`` (torch.version.cuda)
    and ``cuda_driver`` (NVML); all ``None`` on the CPU."""
    if device != "cuda":
        return dict(gpu=None, compute_capability=None, cuda_runtime=None, cuda_driver=None)
    major, minor = torch.cuda.get_device_capability()
    return dict(gpu=torch.cuda.get_device_name(), compute_capability=f"{major}.{minor}",
                cuda_runtime=torch.version.cuda, cuda_driver=cuda_driver())  # fmt: skip


# -- compiled configurations on equal terms ----------------------------------------------------------

_compile: dict | None = None  # the compiled configuration under way: mode, cache_dir, the env it replaced
_CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def _inductor_defaults() -> dict:
    """Every inductor setting as a fresh process has it: torch's default, or the environment variable
    that overrides it (read when torch imported its config), whatever was set since.

    Read from the config module's entries (torch/utils/_config_module.py, ``_ConfigEntry``), the same order
    as ``ConfigModule.__getattr__``; aliases (settings of other modules) are left out.
    """
    from torch._inductor import config
    from torch._utils_internal import justknobs_check
    from torch.utils._config_module import _UNSET_SENTINEL

    out = {}
    for name, entry in config._config.items():
        if entry.alias is not None:
            continue
        if entry.env_value_force is not _UNSET_SENTINEL:
            out[name] = entry.env_value_force
        elif entry.env_value_default is not _UNSET_SENTINEL:
            out[name] = entry.env_value_default
        elif entry.justknob is not None:
            out[name] = justknobs_check(name=entry.justknob, default=entry.default)
        else:
            out[name] = copy.deepcopy(entry.default)
    return out


def reset_inductor_config() -> None:
    """Set ``torch._inductor.config`` to torch's defaults plus ``INDUCTOR_SETTINGS`` (only what differs is set)."""
    from torch._inductor import config

    wanted = {**_inductor_defaults(), **INDUCTOR_SETTINGS}
    current = config.get_config_copy()
    for name, value in wanted.items():
        if current.get(name) != value:
            setattr(config, name, value)


def inductor_config_hash(mode: str | None = None) -> str:
    """sha256 (16 hex) of the inductor settings a compile in ``mode`` uses: the portable config that keys
    inductor's own FX graph cache (torch/_inductor/codecache.py, ``save_config_portable``), with the mode's
    options (``torch._inductor.list_mode_options``) over it, as ``torch.compile`` applies them."""
    from torch._inductor import config, list_mode_options

    settings = config.save_config_portable(ignore_private_configs=False)
    settings.update(list_mode_options(mode) if mode not in (None, "default") else {})
    return hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]


def prepare_compile(mode: str) -> str:
    """Before a configuration's ``torch.compile``: inductor's settings back to torch's defaults plus
    ``INDUCTOR_SETTINGS``, and a fresh cache folder (returned) for inductor and triton, removed by ``cleanup``.

    Both cache variables are read when used (torch/_inductor/runtime/cache_dir_utils.py ``cache_dir``,
    ``triton_cache_dir``) and handed to compile workers with each job (torch/_inductor/async_compile.py);
    inductor's in-memory code caches are cleared as ``torch._inductor.utils.fresh_cache`` does. Only the
    C++ precompiled headers stay shared: torch keeps them outside any cache folder on purpose
    (``_HEADER_DIR`` in torch/_inductor/codecache.py).
    """
    global _compile
    from torch._inductor.utils import clear_caches

    _drop_compile_cache()
    reset_inductor_config()
    folder = tempfile.mkdtemp(prefix="dqb-compile-")
    _compile = dict(mode=mode, cache_dir=folder, env={name: os.environ.get(name) for name in _CACHE_ENV})
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
    clear_caches()
    return folder


def _drop_compile_cache() -> None:
    """Remove the compiled configuration's cache folder and give back the cache variables it replaced."""
    global _compile
    if _compile is None:
        return
    from torch._inductor.utils import clear_caches

    for name, value in _compile["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(_compile["cache_dir"], ignore_errors=True)
    _compile = None
    clear_caches()


def cleanup(device: str) -> None:
    """Drop what the last configuration left, then freeze the survivors.

    ``torch.compiler.reset()`` drops dynamo's compiled code and guards (only if
    dynamo was ever imported: otherwise nothing compiled), and a compiled
    configuration's cache folder goes. ``gc.freeze`` moves every object still
    alive after the collection (modules and caches that libraries import lazily
    on a first load) out of the collector's view, so the next collection scans
    only what the next configuration creates: a full collection cost 0.15-0.2 s
    otherwise, a sixth of a tiny configuration's time.
    """
    if "torch._dynamo" in sys.modules:
        torch.compiler.reset()
    _drop_compile_cache()
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


def available_bytes(device: str) -> int:
    """Memory a new allocation can take on ``device`` now: the host's available memory (``MemAvailable``) on
    the CPU, the GPU's free memory (``cudaMemGetInfo``) on CUDA."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    import psutil

    return psutil.virtual_memory().available


def timed(fn):
    """``(fn(), seconds)``: for one-off costs such as building random weights (not a latency)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def step_hook(pipe, kept: dict) -> dict:
    """The call arguments that keep each step's latents in ``kept["latents"]``, through the pipeline's own
    step callback: ``callback_on_step_end`` (FLUX, SD3) or the older ``callback`` (PixArt-Sigma). The
    estimate's trace makes the same call: the latents it keeps are live memory too."""
    import inspect

    def keep_new(_pipe, _step, _timestep, tensors):
        kept["latents"] = tensors["latents"]
        return {}

    def keep_old(_step, _timestep, latents):
        kept["latents"] = latents

    accepted = inspect.signature(pipe.__call__).parameters
    if "callback_on_step_end" in accepted:
        return {"callback_on_step_end": keep_new, "callback_on_step_end_tensor_inputs": ["latents"]}
    if "callback" in accepted:
        return {"callback": keep_old, "callback_steps": 1}
    raise TypeError(f"{type(pipe).__name__} offers no step callback to read its final latents from")


def generate(pipe, call_kwargs: dict, seed: int, phases: dict | None = None):
    """One untimed call with the fixed seed: (first image, final latents as float32 on the CPU); raises
    ``FloatingPointError`` if a final latent is NaN or inf.

    The final latents are taken from the pipeline's own step callback, so the call
    is the same call as a timed one: ``callback_on_step_end`` (FLUX, SD3) or the
    older ``callback`` (PixArt-Sigma).
    """
    kept = {}
    hook = step_hook(pipe, kept)
    if phases is None:
        out = pipe(**call_kwargs, generator=torch.Generator(device="cpu").manual_seed(seed), **hook)
    elif phases["device"] == "cuda":
        with _CudaPhases(pipe) as cuda:
            out = pipe(**call_kwargs, generator=torch.Generator(device="cpu").manual_seed(seed), **hook)
        phases.update(allocated=cuda.allocated, reserved=cuda.reserved)
    else:
        out, tracker = traced_call(pipe, {**call_kwargs, **hook}, seed)
        phases.update(live=tracker.peaks)
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
    ``compile_s`` before the warm-up, and never counts as a latency sample;
    ``inductor_config`` is hashed just before it, in the mode ``prepare_compile`` was given.
    """

    def call():
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return pipe(**call_kwargs, generator=generator)

    compile_s = inductor_config = compile_cache_dir = None
    if compiled:
        inductor_config = inductor_config_hash(_compile["mode"] if _compile else None)
        compile_cache_dir = _compile["cache_dir"] if _compile else None
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

    reserved = device_used = peak_reserved = peak_device_used = None
    phases: dict = {"device": device}
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        memory = torch.cuda.memory_allocated()
        reserved = torch.cuda.memory_reserved()
        device_used = device_used_bytes()
        torch.cuda.reset_peak_memory_stats()  # every peak stat: allocated and reserved
        with _DevicePeak(_cuda_index()) as seen:
            image, latents = generate(pipe, call_kwargs, seed, phases)
            _sync(device)
        # The phases reset the peak stats at each boundary: the call's peak is the highest of its phases'
        # (and of what came after the decoder: the image's post-processing).
        peak = max([torch.cuda.max_memory_allocated(), *phases.get("allocated", {}).values()])
        peak_reserved = max([torch.cuda.max_memory_reserved(), *phases.get("reserved", {}).values()])
        peak_device_used = seen.peak_bytes
    else:
        memory = tensor_bytes(pipeline_modules(pipe).values())
        _fold_host_peak()  # the reset below would lose the configuration's peak so far
        before = _proc_status("VmRSS")
        can_reset = _reset_cpu_peak() and before is not None
        image, latents = generate(pipe, call_kwargs, seed, phases)
        hwm = _proc_status("VmHWM")
        peak = max(hwm - before, 0) if can_reset and hwm is not None else None

    def gb(n):
        return None if n is None else n / GB

    if device == "cuda":
        phase_peak = {k: gb(v) for k, v in phases.get("allocated", {}).items()}
        phase_reserved = {k: gb(v) for k, v in phases.get("reserved", {}).items()}
    else:
        phase_peak = {k: gb(memory + v) for k, v in phases.get("live", {}).items()}
        phase_reserved = None

    return Measurement(
        latency_s=statistics.median(samples),
        latency_min_s=min(samples),
        latency_max_s=max(samples),
        repeats=repeats,
        memory_bytes=memory,
        memory_gb=memory / GB,
        peak_memory_gb=gb(peak),
        peak_basis=None if peak is None else PEAK_BASIS[device],
        memory_reserved_gb=gb(reserved),
        device_used_gb=gb(device_used),
        peak_reserved_gb=gb(peak_reserved),
        peak_device_used_gb=gb(peak_device_used),
        image=image,
        latents=latents,
        compile_s=compile_s,
        inductor_config=inductor_config,
        compile_cache_dir=compile_cache_dir,
        phase_peak_gb=phase_peak or None,
        phase_peak_reserved_gb=phase_reserved or None,
        peak_phase=max(phase_peak, key=phase_peak.get) if phase_peak else None,
    )
