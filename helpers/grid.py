"""The grid: every configuration of qtype x quantize_te x fuse_qkv x batch size.

Each configuration loads the pipeline afresh from disk with ``from_pretrained``,
applies its fuse/quantize steps, is measured, then everything it held is freed
before the next one. Quantization in quanto replaces modules in place and
cannot be undone, so a fresh load is the only way to be sure no configuration
carries another's leftovers.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import measure, offload, outputs, records
from .backends.gates import Requirement
from .cells import Cell, cells, reference_of
from .params import Params
from .pipelines import call_settings, checkpoint_name, guidance_of, load_pipeline, resolve_checkpoint
from .quant import Rejected, apply_cell, compile_transformer, load_config, unsupported
from .registry import backend as backend_module
from .registry import torch_device, torch_dtype


def results_path(params: Params) -> Path:
    return Path(params["out_dir"]) / "results" / f"{records.section_of(params)}.jsonl"


def _base_record(params: Params, config: Cell, checkpoint: str, device: str, call: dict,
                 hardware: dict) -> records.Record:  # fmt: skip
    """The identity of one configuration: what it runs, with what call, on which device and (CUDA) GPU model."""
    return records.Record(
        model=params["model"],
        checkpoint=checkpoint,
        preset=params["preset"],
        device=device,
        dtype=params["dtype"],
        qtype=config.qtype,
        quantize_te=config.as_given(),
        te_qtype=config.te_qtype,
        fuse_qkv=config.fuse_qkv,
        exclude=list(params["exclude"]),
        batch_size=config.batch_size,
        steps=call["num_inference_steps"],
        height=call["height"],
        width=call["width"],
        guidance_scale=guidance_of(params["model"], call),
        max_sequence_length=call.get("max_sequence_length"),
        prompts=list(params["prompts"]),
        seed=params["seed"],
        warmup=params["warmup"],
        repeats=params["repeats"],
        quality_metrics=list(params["quality_metrics"]),
        backend=params["backend"],
        compile=params["compile"],
        threads=params["threads"],
        offload=config.offload,
        gguf_file=params["gguf_file"],
        **{name: hardware.get(name) for name in records.HARDWARE_FIELDS},
    )


@dataclass
class Outcome:
    """What the process that ran a configuration sends back to the driver, the only writer.

    Everything travels as bytes, so a worker on another machine needs no file
    system shared with the driver: the images (PNG) and the final latents
    (safetensors) the driver then writes under ``out_dir``.
    """

    record: records.Record
    images: list[bytes] = field(default_factory=list)  # PNG per prompt
    latents: bytes | None = None  # safetensors: p0, p1, ... per prompt


def _where(device: str) -> dict:
    """Where a configuration runs: host, process, the GPUs it sees, the device's name, library versions."""
    import os
    import socket

    gpu_ids = []
    if device == "cuda":
        import torch

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = torch.cuda.current_device()
        gpu_ids = [visible.split(",")[index].strip() if visible else str(index)]
    return dict(
        host=socket.gethostname(), pid=os.getpid(), gpu_ids=gpu_ids, device_name=measure.device_name(device),
        versions=records.library_versions(),
        **{name: value for name, value in measure.hardware(device).items() if name not in records.HARDWARE_FIELDS},
    )  # fmt: skip


def execute(params: Params, checkpoint: str, device: str, call: dict, hardware: dict, config: Cell) -> Outcome:
    """Load, prepare and measure one configuration where it runs; never raises for a failing configuration.

    The task body of every executor: it writes nothing. The first prompt is
    measured (latency, memory); every prompt gives one more fixed-seed image and
    its final latents, which come back in the ``Outcome``. Executors call it
    as ``job(config)``, a ``functools.partial`` over the grid's own arguments.
    ``hardware``: the GPU model the driver planned for (``executor.hardware``); a process that finds
    another GPU records an error instead of a figure under the wrong identity.
    """
    outcome, wall_s = measure.timed(lambda: _execute(params, config, checkpoint, device, call, hardware))
    outcome.record.wall_s = wall_s
    return outcome


def _prepare(params: Params, config: Cell, device: str, record: records.Record):
    """The pipeline of one configuration: refused, loaded (or built) at load-time quantization, fused,
    quantized after load, offloaded, compiled. A combination a library or the device refuses raises
    ``Rejected``. An offloading configuration loads on the CPU and gets its mode's hooks once quantized and
    fused (``offload.apply``, CUDA only)."""
    backend = params["backend"]
    reason = unsupported(backend, config, device, params["compile"], model=params["model"])
    if reason:
        raise Rejected(reason)
    where = offload.load_device(config.offload, device)  # the CPU when offloading
    try:
        qconfig = load_config(params["model"], backend, config, params["exclude"], params["dtype"])
        # The tiny pipeline is found (or built, the same bytes) on the machine that runs this.
        checkpoint = resolve_checkpoint(params)  # None: the preset builds its weights in memory (random-full)
        # a prequantized file (gguf_file, backend gguf only: params.py) instead of the backend's own
        source = {"source": params["gguf_file"]} if params["gguf_file"] else {}
        preloaded = backend_module(backend).preloaded(checkpoint, config.qtype, torch_dtype(params["dtype"]),
                                                      params["exclude"], **source)  # fmt: skip
        if checkpoint is None:
            if qconfig is not None:
                raise NotImplementedError("random-full builds its weights in memory; load-time quantization "
                                          "(torchao, bitsandbytes) needs from_pretrained")  # fmt: skip
            from .random_full import build, does_not_fit

            if reason := does_not_fit(params["model"], params["dtype"], where):
                raise Rejected(reason)
            pipe, record.init_s = measure.timed(lambda: build(params["model"], params["dtype"], where, params["seed"]))
        else:
            pipe = load_pipeline(checkpoint, params["dtype"], where, quantization_config=qconfig, components=preloaded,
                                 offload=config.offload != "none")  # fmt: skip
    except (ImportError, NotImplementedError) as e:  # a backend without its kernels here
        raise Rejected(f"{type(e).__name__}: {e}") from e
    record.notes += apply_cell(pipe, params["model"], config, params["exclude"], backend)
    offload.apply(pipe, config.offload, device)  # after quantizing and fusing, before compiling
    compile_transformer(pipe, params["compile"])
    return pipe


def _encode(images: list, latents: list) -> tuple[list[bytes], bytes]:
    """PNG bytes per image, and the final latents as one safetensors blob (``p0``, ``p1``, ...)."""
    import io

    from safetensors.torch import save

    pngs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="png")
        pngs.append(buffer.getvalue())
    return pngs, save({f"p{i}": t.contiguous() for i, t in enumerate(latents)})


_MEASURED = ("memory_bytes", "memory_gb", "memory_reserved_gb", "device_used_gb", "peak_memory_gb", "peak_basis",
             "peak_reserved_gb", "peak_device_used_gb", "latency_s", "latency_min_s", "latency_max_s", "compile_s",
             "inductor_config", "compile_cache_dir", "phase_peak_gb", "phase_peak_reserved_gb", "peak_phase")  # fmt: skip


def _execute(params: Params, config: Cell, checkpoint: str, device: str, call: dict, hardware: dict) -> Outcome:
    import torch

    if params["threads"] is not None:
        torch.set_num_threads(params["threads"])
    record = _base_record(params, config, checkpoint, device, call, hardware)
    for key, value in _where(device).items():
        setattr(record, key, value)
    record.torch_threads = torch.get_num_threads()
    outcome = Outcome(record)
    pipe = None
    measure.host_peak_start()
    try:
        found = records.identity_hardware(measure.hardware(device))
        if found != records.identity_hardware(hardware):
            raise RuntimeError(f"this process sees {dict(found)}, the grid was planned for {hardware}: a figure "
                               "measured here would be filed under another GPU")  # fmt: skip
        pipe, record.load_s = measure.timed(lambda: _prepare(params, config, device, record))
        kwargs = {**call, "num_images_per_prompt": config.batch_size}
        m = measure.measure(pipe, {**kwargs, "prompt": params["prompts"][0]}, device=device, warmup=params["warmup"],
                            repeats=params["repeats"], seed=params["seed"], compiled=params["compile"] is not False)  # fmt: skip
        images, latents = [m.image], [m.latents]
        for prompt in params["prompts"][1:]:
            image, lat = measure.generate(pipe, {**kwargs, "prompt": prompt}, params["seed"])
            images.append(image)
            latents.append(lat)
        outcome.images, outcome.latents = _encode(images, latents)
        for name in _MEASURED:
            setattr(record, name, getattr(m, name))
        if "clip_score" in params["quality_metrics"] and _clip_available():
            from .fidelity import clip_score

            record.clip_score = clip_score(images, params["prompts"], device)
    except Rejected as e:
        reason = e.args[0] if e.args else ""
        record.status, record.error = "n/a" if isinstance(reason, Requirement) else "skipped", str(reason)
    except Exception as e:  # noqa: BLE001 - a failing configuration is recorded, the grid goes on
        record.status = "error"
        record.error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        del pipe
        record.host_peak_gb = measure.host_peak_gb()
        measure.cleanup(device)
    record.timestamp = records.now()
    return outcome


def _store(params: Params, outcome: Outcome) -> records.Record:
    """The driver writes a finished configuration's images and latents under ``out_dir``, each under a
    name of the record's identity, and puts each file's name and SHA-256 into the record."""
    record = outcome.record
    if record.status != "ok":
        return record
    out = Path(params["out_dir"])
    image_paths, latents_path = outputs.names(record)
    for data, path in [*zip(outcome.images, image_paths), (outcome.latents, latents_path)]:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(data)
    record.image_paths, record.image_path = image_paths, image_paths[0]
    record.image_sha256 = [outputs.sha256(data) for data in outcome.images]
    record.latents_path, record.latents_sha256 = latents_path, outputs.sha256(outcome.latents)
    return record


def _add_fidelity(params: Params, record: records.Record, reference: records.Record) -> None:
    """Compare a stored ``ok`` configuration with its stored ``ok`` reference (the same identity but for the
    quantization choices: same call, preset, checkpoint, device and GPU model), per prompt."""
    from . import fidelity

    images, latents = outputs.load(params["out_dir"], record)
    ref_images, ref_latents = outputs.load(params["out_dir"], reference)
    per_prompt = [
        {"prompt": prompt, **fidelity.compare(im, ref_im, lat, ref_lat)}
        for prompt, im, ref_im, lat, ref_lat in zip(params["prompts"], images, ref_images, latents, ref_latents)
    ]
    record.fidelity = per_prompt
    summary = fidelity.summarize(per_prompt)
    record.psnr_db, record.ssim = summary["psnr_db"], summary["ssim"]
    record.latent_rel_error, record.identical = summary["latent_rel_error"], summary["identical"]


def _lost(params, config, checkpoint, device, call, hardware, lost) -> records.Record:
    """The record of a configuration whose process died (segfault, OOM kill, lost node) or timed out."""
    record = _base_record(params, config, checkpoint, device, call, hardware)
    record.status, record.error = "error", lost.reason
    record.executor, record.attempts = "ray", lost.attempts
    record.node_id = lost.node_id
    record.versions = {}  # the process that could have said is gone
    record.timestamp = records.now()
    return record


@functools.lru_cache(maxsize=None)
def _clip_available() -> bool:
    """CLIP score needs CLIP's weights from the hub; offline it is skipped with one line (asked once)."""
    from .fidelity import CLIP_MODEL
    from .pipelines import hub_available

    available = hub_available(CLIP_MODEL)
    if not available:
        print(f"clip_score skipped: {CLIP_MODEL} is not in the local hub cache and the hub cannot be reached")
    return available


def run_grid(params: Params, progress: bool = True) -> list[records.Record]:
    """Run every configuration not yet recorded ``ok`` or ``skipped``; return the latest records.

    ``executor: inline`` runs them one after another in this process; ``ray``
    gives each its own Ray worker process (``cluster.py``). Either way this
    process is the only writer: each record is appended to
    ``results_path(params)`` as soon as it is complete, so a rerun resumes where
    the last one stopped. A configuration's record is complete once its
    reference (the unquantized run, started first) is in too, for fidelity.
    """
    from tqdm.auto import tqdm

    from .params import ensure_out_dir

    ensure_out_dir(params["out_dir"])
    call = call_settings(params)
    path = results_path(params)

    grid = cells(params)
    with records.exclusive(path), _executor(params) as executor:
        device = executor.device(params["device"])
        hardware = executor.hardware(device)  # on CUDA the GPU model: part of every figure's identity
        checkpoint = checkpoint_name(params)
        records.repair(path)
        finished = {r.identity_key(): r for r in records.read(path) if r.status in records.FINISHED}

        def key(config):
            return _base_key(params, config, checkpoint, device, call, hardware)

        todo = [c for c in grid if key(c) not in finished]
        todo.sort(key=lambda c: c != reference_of(c))  # references first: the others compare with them
        if executor.local or params["ray_address"] is None:  # this machine runs them: its caches, once each
            _files(params, todo)
        running = {key(c) for c in todo}
        waiting: dict[str, list] = {}  # reference key -> (config, record) that wait for it

        def complete(config, record):
            ref = record if config == reference_of(config) else finished.get(key(reference_of(config)))
            if record.status == "ok" and ref is not None and ref.status == "ok":
                try:
                    _add_fidelity(params, record, ref)
                except outputs.Mismatch as e:  # the reference's files were overwritten: no fidelity, said why
                    record.notes.append(f"no fidelity: the reference's {e}")
            records.append(path, record)
            finished[key(config)] = record
            running.discard(key(config))
            for other in waiting.pop(key(config), []):
                complete(*other)

        if progress:  # what came from the results file, what runs now
            print(f"{records.section_of(params)}: {len(grid) - len(todo)} of {len(grid)} configurations from "
                  f"{path}, {len(todo)} to run")  # fmt: skip
        bar = tqdm(total=len(todo), desc=f"{records.section_of(params)} running", disable=not progress or not todo)
        results = executor.run(todo, functools.partial(execute, params, checkpoint, device, call, hardware), device)
        for config, outcome in results:
            bar.update()
            if isinstance(outcome, Outcome):
                record = _store(params, outcome)
            else:
                record = _lost(params, config, checkpoint, device, call, hardware, outcome)
            ref_key = key(reference_of(config))
            if ref_key != key(config) and ref_key in running:
                waiting.setdefault(ref_key, []).append((config, record))
            else:
                complete(config, record)
        bar.close()
    return grid_records(params, checkpoint=checkpoint, device=device, call=call, hardware=hardware)


def _files(params: Params, todo: list[Cell]) -> None:
    """Build what the configurations to run read from disk, once, before any of them starts: the tiny
    pipeline, and each backend's files (a GGUF transformer per qtype: a fresh worker per configuration would
    otherwise each load the checkpoint and write its own)."""
    checkpoint = resolve_checkpoint(params)
    b = backend_module(params["backend"])
    if params["gguf_file"]:  # configurations load the prequantized file given
        return
    for qtype in dict.fromkeys(c.qtype for c in todo):
        b.files(checkpoint, qtype, torch_dtype(params["dtype"]), params["exclude"])


class _Inline:
    """Every configuration in this process, one after another."""

    local = True  # configurations run on this machine

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def device(self, name: str) -> str:
        return torch_device(name)

    def hardware(self, device: str) -> dict:
        return measure.hardware(device)

    def run(self, todo, job, device: str):
        measure.cleanup(device)  # freeze what the imports left, before the first configuration
        for config in todo:
            yield config, job(config)


def _executor(params: Params):
    if params["executor"] == "ray":
        from .cluster import Session

        return Session(params)
    return _Inline()


def _base_key(params, config, checkpoint, device, call, hardware) -> str:
    return _base_record(params, config, checkpoint, device, call, hardware).identity_key()


def grid_records(params: Params, checkpoint: str | None = None, device: str | None = None, call: dict | None = None,
                 hardware: dict | None = None) -> list[records.Record]:  # fmt: skip
    """The latest record of each configuration of this grid (missing ones left out), in grid order.

    With ``device`` and ``hardware`` given: the records of that device and GPU model only. Without them,
    every GPU model's records (the tables split them by GPU), and with ``device: auto`` a configuration's
    records are those measured on CUDA if there are any, else on the CPU: under Ray the cluster decided,
    not the machine reading the records.
    """
    checkpoint = checkpoint or checkpoint_name(params)
    call = call or call_settings(params)
    if device is not None:
        devices = [device]
    else:
        devices = ["cuda", "cpu"] if params["device"] == "auto" else [params["device"]]
    latest = records.latest(records.read(results_path(params)))
    by_key = {r.identity_key(): r for r in latest}
    seen = [hardware] if hardware is not None else [
        dict(found) for found in dict.fromkeys(records.identity_hardware(r) for r in latest)
    ]  # fmt: skip
    rows = []
    for config in cells(params):
        for d in devices:
            keys = [_base_key(params, config, checkpoint, d, call, hw) for hw in seen]
            found = [by_key[k] for k in keys if k in by_key]
            if found:
                rows.extend(found)
                break
    return rows
