"""One record per measured configuration, one JSON line per record.

A record carries its full configuration, the environment it was measured in
and its metrics (units in the field names). Strings and numbers only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .backends import PUBLISHED
from .parameters import PARAMETERS

# ok: measured; error: it failed; skipped: a library refused it, or the combination cannot run; n/a: this
# device cannot run it by design (a compute capability, CUDA, an accelerator: backends/gates.py). Records
# written before n/a existed keep their status.
STATUSES = ("ok", "error", "skipped", "n/a")
# What a grid does not run again: it has its answer.
FINISHED = ("ok", "skipped", "n/a")

# Identity fields a key leaves out at their default value: the configurations and records that existed before
# the field have the key (and the output file names) they had then. A record without the field loads at it.
KEY_DEFAULTS = {"offload": "none", "gguf_file": None}
# The hardware half of the identity: on CUDA the GPU model and its compute capability, None on the CPU (so a
# record written before these fields existed keeps its identity). A figure never meets another GPU's.
HARDWARE_FIELDS = ("gpu", "compute_capability")
# Fields that say which configuration a record measured (two records with the same values measured the same
# thing): the fields its parameters give it (each parameter's ``record``, helpers/parameters.py), then the hardware.
IDENTITY_FIELDS = tuple(p.record for p in PARAMETERS if p.record) + HARDWARE_FIELDS


def identity_hardware(source) -> tuple:
    """The hardware half of an identity, ``((name, value), ...)``, of a record or a ``measure.hardware`` dict."""
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name)
    return tuple((name, get(name)) for name in HARDWARE_FIELDS)


@dataclass
class Record:
    # configuration
    model: str
    checkpoint: str
    preset: str
    device: str
    dtype: str
    qtype: str
    quantize_te: bool | list[str]  # false | true (every text encoder) | the text encoders' names, as given
    fuse_qkv: bool
    exclude: list[str]
    batch_size: int
    steps: int
    height: int
    width: int
    guidance_scale: float
    prompts: list[str]  # the first one is the timed one
    seed: int
    warmup: int
    repeats: int
    quality_metrics: list[str] = field(default_factory=list)
    backend: str = PUBLISHED  # a record from before the field: the published grid's
    compile: bool | str = False
    max_sequence_length: int | None = None  # text tokens; None: the pipeline's own default
    te_qtype: str | None = None  # the text encoders' qtype; None: qtype's (or no encoder quantized)
    threads: int | None = None  # the threads parameter: CPU threads torch was given; None: its default
    offload: str = "none"  # registry.OFFLOAD_MODES: where the weights waited between uses (none: on the device)
    gguf_file: str | None = None  # a prequantized GGUF file the transformer loaded from; None: the project's own
    gpu: str | None = None  # CUDA: the GPU model (torch.cuda.get_device_name); None on the CPU
    compute_capability: str | None = None  # CUDA: "9.0" for an H100; None on the CPU
    # outcome
    status: str = "ok"
    error: str | None = None
    # metrics
    memory_bytes: int | None = None
    memory_gb: float | None = None  # after loading: CUDA memory_allocated; CPU the bytes of the modules' tensors
    memory_reserved_gb: float | None = None  # CUDA: the caching allocator's memory_reserved after loading
    device_used_gb: float | None = None  # CUDA: the whole device's used memory from NVML after loading
    # One call with the fixed seed. CUDA: max_memory_allocated, absolute (weights included); CPU: how much the
    # process's resident memory grew during the call (a delta). peak_basis says which.
    peak_memory_gb: float | None = None
    peak_basis: str | None = None  # "cuda-allocated-absolute" | "cpu-resident-growth"
    peak_reserved_gb: float | None = None  # CUDA: max_memory_reserved during the call (CUDA graphs included)
    peak_device_used_gb: float | None = None  # CUDA: the highest NVML used memory seen during the call
    host_peak_gb: float | None = None  # the process's peak resident host memory over the whole configuration
    # The fixed-seed call by phase ("encode", "denoise", "decode"): the allocated peak of each, weights included.
    # CUDA: max_memory_allocated, the peak stats reset at each boundary; CPU: memory_gb plus the live tensor
    # storages the call made (measure.LiveBytes, the estimate's own count). Reserved: CUDA only.
    phase_peak_gb: dict | None = None
    phase_peak_reserved_gb: dict | None = None
    peak_phase: str | None = None  # the phase with the highest phase_peak_gb
    latency_s: float | None = None
    latency_min_s: float | None = None
    latency_max_s: float | None = None
    compile_s: float | None = None  # first call of the compiled transformer, kept out of latency_s
    init_s: float | None = None  # random-full: building the random weights (not loading time)
    load_s: float | None = None  # loading the pipeline and quantizing it (fuse, quantize, compile set-up)
    wall_s: float | None = None  # the whole configuration in its process: load, prepare, every call, images
    worker_start_s: float | None = None  # ray: from the worker process's start to this configuration's start
    image_path: str | None = None  # relative to the results' out_dir (first prompt)
    image_paths: list[str] = field(default_factory=list)  # every prompt's image, relative to out_dir
    image_sha256: list[str] = field(default_factory=list)  # of each file in image_paths
    latents_path: str | None = None  # the final latents (safetensors: p0, p1, ...), relative to out_dir
    latents_sha256: str | None = None
    inductor_config: str | None = None  # compiled: sha256 (16 hex) of torch._inductor.config as compiled
    compile_cache_dir: str | None = None  # compiled: the fresh inductor/triton cache folder of this configuration
    notes: list[str] = field(default_factory=list)  # what this configuration did that its name does not say
    # fidelity to the unquantized run (qtype none, quantize_te off, same fuse / batch size / prompts / seed),
    # averaged over prompts; identical: every prompt's image is bit-identical (psnr_db is then None)
    psnr_db: float | None = None
    ssim: float | None = None
    latent_rel_error: float | None = None
    identical: bool | None = None
    fidelity: list[dict] = field(default_factory=list)  # per prompt: prompt, psnr_db, ssim, latent_rel_error, identical
    clip_score: float | None = None
    # environment: what ran it, and where
    device_name: str = ""
    cuda_runtime: str | None = None  # CUDA: torch.version.cuda
    cuda_driver: str | None = None  # CUDA: the driver version NVML reports
    torch_threads: int | None = None  # the CPU threads torch used (torch.get_num_threads())
    versions: dict[str, str] = field(default_factory=dict)
    timestamp: str = ""
    executor: str = "inline"  # inline (the driver's own process) | ray (a fresh worker process)
    host: str = ""
    pid: int | None = None  # the process that measured it
    gpu_ids: list = field(default_factory=list)  # the GPU ids the process saw (Ray's assignment under ray)
    node_id: str | None = None  # ray: the node that ran it
    attempts: int = 1  # ray: 2 when its node was lost and the configuration ran again

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; valid choices: {', '.join(STATUSES)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Record":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown record field {unknown[0]!r}")
        return cls(**data)

    def identity_key(self) -> str:
        return identity_key({name: getattr(self, name) for name in IDENTITY_FIELDS})


def section_of(source) -> str:
    """The section of a record, a parameter set or a prediction (anything with a model, a dtype and a backend):
    the one name of a section, in file names, tables and the report (``section_name``)."""
    get = source.get if isinstance(source, Mapping) else lambda name: getattr(source, name)
    return section_name(get("model"), get("dtype"), get("backend"))


def section_name(model: str, dtype: str, backend: str = PUBLISHED) -> str:
    """``<model>_<dtype>``, plus ``_<backend>`` for any backend but the published grid's."""
    return f"{model}_{dtype}" + ("" if backend == PUBLISHED else f"_{backend}")


def yes_no(flag: bool) -> str:
    """The published tables' label of a boolean setting (Quantize TE, Fuse QKV)."""
    return "Yes" if flag else "No"


def te_label(model: str, quantize_te: bool | list[str]) -> str:
    """The tables' Quantize TE: ``Yes`` / ``No`` as published, a per-encoder choice as its 1-based
    encoder numbers (``1+3``: SD3's ``text_encoder`` and ``text_encoder_3``)."""
    from .registry import model_spec

    if isinstance(quantize_te, bool):
        return yes_no(quantize_te)
    encoders = model_spec(model).text_encoders
    return "+".join(str(encoders.index(name) + 1) for name in quantize_te)


def qtype_label(qtype: str, te_qtype: str | None = None, quantize_te: bool | list[str] = False) -> str:
    """The tables' Quantization: ``INT8``, or the mix ``INT8 / TE FP8`` when the encoders have their own qtype."""
    if te_qtype and quantize_te:
        return f"{qtype.upper()} / TE {te_qtype.upper()}"
    return qtype.upper()


def labels(r: "Record") -> tuple[str, str, str]:
    """A record's three configuration columns as the tables show them: Quantization, Quantize TE, Fuse QKV.
    A ``suspect`` configuration says so in its Quantization, wherever it is shown, and an offloaded one names
    its offload mode there."""
    quantization = qtype_label(r.qtype, r.te_qtype, r.quantize_te) + (f" ({SUSPECT})" if suspect(r) else "")
    if r.offload != "none":  # the same quantization with its weights offloaded is another row
        quantization += f", offload {r.offload}"
    return quantization, te_label(r.model, r.quantize_te), yes_no(r.fuse_qkv)


def peak_label(r: "Record") -> str:
    """What a record's peak figure is: absolute on CUDA (weights included), a growth on the CPU."""
    return "peak allocated" if r.device == "cuda" else "peak growth of resident memory"


SUSPECT = "suspect"
# A configuration whose final latents are this far from its reference's, relative to the reference's norm
# (``latent_rel_error``), made a different image, not a quantized one: see suspect().
SUSPECT_LATENT_REL_ERROR = 0.5


def suspect(r: "Record") -> str | None:
    """Why a measured configuration's images are not a result (too far from its unquantized reference), or
    ``None``. Such a configuration is marked in every table and never recommended.

    The rule reads the final latents, before the VAE: ``||x - ref|| / ||ref||``. Latents uncorrelated with
    the reference's (noise, a broken kernel) sit near 1 to 1.4; every correct configuration measured here
    stays far below the limit (docs/full-size.md gives the figures it was chosen from)."""
    if r.status != "ok" or r.latent_rel_error is None or r.latent_rel_error <= SUSPECT_LATENT_REL_ERROR:
        return None
    return (f"its final latents are {r.latent_rel_error:.2f} of the reference's norm away from the unquantized "
            f"run's (limit {SUSPECT_LATENT_REL_ERROR}): a different image, not a quantized one")  # fmt: skip


def identity_key(config: dict) -> str:
    """The identity as one string: every ``IDENTITY_FIELDS`` value, less those at their ``KEY_DEFAULTS``."""
    key = {}
    for name in IDENTITY_FIELDS:
        value = config.get(name, KEY_DEFAULTS[name]) if name in KEY_DEFAULTS else config[name]
        if name not in KEY_DEFAULTS or value != KEY_DEFAULTS[name]:
            key[name] = value
    return json.dumps(key, sort_keys=True)


def _versioned() -> tuple[str, ...]:
    """Every library whose version can change a figure (or where it was computed): each backend's package too."""
    from .backends import BACKENDS

    # triton: the kernels torch.compile writes on CUDA (not installed beside the CPU build of torch)
    return ("torch", "diffusers", "transformers", *(b.PACKAGE for b in BACKENDS.values()), "ray", "triton")


@functools.lru_cache(maxsize=None)
def _versions() -> tuple:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return tuple((name, installed(name)) for name in dict.fromkeys(_versioned()))


def library_versions() -> dict[str, str]:
    return dict(_versions())


def now() -> str:
    """A record's ``timestamp``: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append(path: str | os.PathLike, record: Record) -> None:
    """Append one whole line and flush it to disk before returning.

    One ``write`` of one line on a file opened for appending: a process killed
    at any instant leaves every earlier line intact and at most a torn last one,
    which ``read`` ignores and ``repair`` removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: str | os.PathLike) -> list[Record]:
    """Every record in a results file, in the order written (missing file: none).

    A torn last line (a run killed mid-write) is skipped with a warning; its
    configuration is then missing and a rerun measures it. A bad line anywhere
    else means the file was edited or corrupted: that raises.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            out.append(Record.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            if number == len(lines):  # no newline after it: the last write was cut short
                warnings.warn(f"{path}: ignoring a torn last line (a run was killed while writing it)")
                continue
            raise ValueError(f"{path}:{number}: not a record ({e})") from None
    return out


def repair(path: str | os.PathLike) -> None:
    """Cut a torn last line off, so the next append starts on a line of its own."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())


class Busy(RuntimeError):
    """Another run holds the results file."""


@contextlib.contextmanager
def exclusive(path: str | os.PathLike):
    """Hold ``<path>.lock`` while writing ``path``; a second writer is refused, not interleaved.

    The lock file is removed when the run ends (while still held). A process that locked a file another
    one had just removed sees that the path no longer names what it holds, and opens the lock again.
    """
    import fcntl

    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        lock = open(lock_path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise Busy(
                f"{path} is being written by another run ({holder}); wait for it to finish or use another out_dir"
            ) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(lock.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        lock.close()  # removed by the run that just ended: lock the path's new file
    with lock:
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def latest(records: list[Record]) -> list[Record]:
    """The last record of each configuration, in the order those were written."""
    by_key: dict[str, Record] = {}
    for r in records:
        by_key.pop(r.identity_key(), None)
        by_key[r.identity_key()] = r
    return list(by_key.values())
