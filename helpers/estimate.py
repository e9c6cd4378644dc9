"""Predict ``memory_gb`` of every configuration without weights or an accelerator.

Each component is built on the meta device from its architecture (the full-size
numbers in ``helpers/models/<model>.py``, or the config files of a saved pipeline such
as the tiny preset's), given the dtypes ``from_pretrained`` gives its tensors,
then taken through the very calls of a real run: ``fuse_qkv_projections()``
and the backend's own quantization (its module's ``on_meta`` hook, ``helpers/backends/``). Its bytes
are counted by ``measure.tensor_bytes``, the function that measures a real run.

What ``from_pretrained(path, dtype=...)`` does to dtypes, reproduced here:
- parameters and persistent buffers are loaded in ``dtype``;
- buffers that are not in the checkpoint (non-persistent) keep the dtype the
  model's ``__init__`` gave them (diffusers: float32, e.g. PixArt's sin-cos
  position table; transformers: CLIP's int64 ``position_ids``);
- transformers keeps a class's ``_keep_in_fp32_modules`` in float32 when
  ``dtype`` is float16 (T5's ``wo`` projections), and its
  ``_keep_in_fp32_modules_strict`` in float32 for any half dtype;
- shared weights (T5's ``shared`` / ``encoder.embed_tokens``) stay one tensor.
The tiny preset's test compares every configuration with a real load, to the byte.
"""

from __future__ import annotations

import contextlib
import json
import os

from .cache import key_hash, write_atomic
from .components import (
    Component,
    build_on_meta,
    components_from_folder,
    full_components,
)
from .measure import GB, tensor_bytes
from .cells import Cell, cell_of, cells
from .params import Params
from .quant import fuse_unsupported
from .records import qtype_label, te_label, yes_no
from .registry import BACKEND_MODULES
from .registry import backend as backend_module


def _stored(key: dict, compute) -> tuple[int, int]:
    """``compute()`` for one component variant, kept on disk under a hash of everything it depends on
    (the component's architecture, dtype, quantization, fuse, exclude, library versions): the same T5
    encoder of three pipelines, or an unquantized transformer under two backends, is counted once."""
    from .paths import cache_dir
    from .records import library_versions

    path = cache_dir() / "estimates" / "variants" / (key_hash({**key, "versions": library_versions()}, 24) + ".json")
    if path.is_file():
        return tuple(json.loads(path.read_text()))
    value = compute()
    write_atomic(path, json.dumps(list(value)))
    return value


def _source_hash(module) -> str:
    """The backend module's code, in the variant's key: a change to its rule is not served a stale count."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


class NotPredicted(Exception):
    """The estimate does not reproduce this backend or quantization (it says so rather than guess)."""


def estimate(model: str, dtype: str, params: Params, components: dict[str, Component], phases: bool = False,
             preset: str | None = None) -> list[dict]:  # fmt: skip
    """One row per configuration of the grid in ``params``: predicted bytes per component and in all.

    A component's bytes depend only on what is done to it (the transformer: qtype
    and fuse; a text encoder: its qtype when the configuration quantizes it), so each variant is
    built and counted once and the configurations add them up.
    """

    backend = params["backend"]
    hooks = backend_module(backend)
    if not hooks.PREDICTED:
        raise NotPredicted(f"the estimate covers {', '.join(n for n, b in BACKEND_MODULES.items() if b.PREDICTED)}, not {backend!r}")
    cache: dict[tuple, tuple[int, int]] = {}
    traces: dict = {}

    def variant(name: str, qtype: str, fuse: bool) -> tuple[int, int]:
        key = (name, qtype, fuse)
        if key not in cache:
            cache[key] = _stored(
                {"component": vars(components[name]), "dtype": dtype, "qtype": qtype, "fuse": fuse,
                 "backend": backend if qtype != "none" else "-", "transformer": name == "transformer",
                 "rule": _source_hash(hooks) if qtype != "none" else "-",
                 "exclude": params["exclude"] if name == "transformer" else []},  # fmt: skip
                lambda: _count(name, qtype, fuse),
            )
        return cache[key]

    def _count(name: str, qtype: str, fuse: bool) -> tuple[int, int]:
        module = build_on_meta(components[name], dtype)
        params_count = sum(p.numel() for p in module.parameters())
        if name == "transformer":
            if fuse:
                if reason := fuse_unsupported(model):
                    raise ValueError(reason)
                module.fuse_qkv_projections()
            hooks.on_meta(module, qtype, params["exclude"], True, fuse)
        else:
            hooks.on_meta(module, qtype, [], False, False)
        return tensor_bytes([module]), params_count

    rows = []
    for c in cells(params):
        parts = {}
        try:
            for name in components:
                if name == "transformer":
                    parts[name] = variant(name, c.qtype, c.fuse_qkv)
                elif name in c.encoders(model):
                    parts[name] = variant(name, c.encoder_qtype, False)
                else:
                    parts[name] = variant(name, "none", False)
        except Exception as e:  # noqa: BLE001 - e.g. torchao fp8dq / int4wo need CUDA to quantize at all
            rows.append(dict(**(_NO_PHASES if phases else {}), model=model, dtype=dtype, qtype=c.qtype, quantize_te=c.as_given(), te_qtype=c.te_qtype,
                             fuse_qkv=c.fuse_qkv, batch_size=c.batch_size, offload=c.offload, memory_bytes=None, memory_gb=None,
                             components={}, parameters={},
                             note=f"not predicted: {type(e).__name__}: {str(e).splitlines()[0][:200]}"))  # fmt: skip
            continue
        total = sum(b for b, _ in parts.values())
        row = dict(
            model=model, dtype=dtype, qtype=c.qtype, quantize_te=c.as_given(), te_qtype=c.te_qtype, fuse_qkv=c.fuse_qkv,
            batch_size=c.batch_size, offload=c.offload, memory_bytes=total, memory_gb=total / GB,
            components={n: b for n, (b, _) in parts.items()},
            parameters={n: p for n, (_, p) in parts.items()},
        )  # fmt: skip
        if phases:
            row.update(_phase_fields(model, dtype, params, components, c, total, traces, preset or params["preset"]))
        rows.append(row)
    return rows


_NO_PHASES = dict(loaded_reserved_gb=None, peak_allocated_gb=None, peak_reserved_gb=None, peak_phase=None,
                  host_gb=None, phases={}, phase_live_bytes={})


def _phase_fields(model, dtype, params, components, c: Cell, total: int, traces: dict, preset: str) -> dict:
    """The phase figures of one configuration (see "Phases" below); a trace serves every offload mode."""
    import dataclasses

    key = dataclasses.replace(c, offload="none")
    try:
        if key not in traces:
            try:
                traces[key] = phase_trace(model, dtype, params, components, key, preset)
            except Exception as e:  # noqa: BLE001 - said once for every offload mode of this configuration
                traces[key] = e
        if isinstance(traces[key], Exception):
            raise traces[key]
        trace = traces[key]
        replayed = _replay(trace, c.offload)
    except Exception as e:  # noqa: BLE001 - a configuration whose call cannot run on fake tensors says why
        return dict(_NO_PHASES, note=f"phases not predicted: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    by_phase = {p: {"allocated_gb": a / GB, "reserved_gb": r / GB} for p, (a, r) in replayed["phases"].items()}
    return dict(
        loaded_reserved_gb=replayed["loaded_reserved"] / GB,
        peak_allocated_gb=replayed["peak_allocated"] / GB, peak_reserved_gb=replayed["peak_reserved"] / GB,
        peak_phase=max(by_phase, key=lambda p: by_phase[p]["allocated_gb"]) if by_phase else None,
        host_gb=0.0 if c.offload == "none" else sum(trace["weights"].values()) / GB,
        phases=by_phase,
        phase_live_bytes=dict(trace["live"]),  # the CPU's count: memory_bytes + these = the CPU's phase peaks
    )  # fmt: skip


def components_for(model: str, preset: str) -> dict[str, Component]:
    """A preset's components at its size (``SIZE``): full, the shipped full-size architectures; tiny, the saved
    tiny pipeline's configs."""
    from .registry import preset as preset_module

    if preset_module(preset).SIZE == "full":
        return full_components(model)
    from .pipelines import ensure_tiny

    return components_from_folder(ensure_tiny(model))


def predict(params: Params, preset: str = "full", phases: bool | str = False) -> list[dict]:
    """``estimate`` for the grid of ``params`` (its model and dtype), cached on disk.

    ``phases``: also the peak figures (see "Phases" below; at full size a minute or more per grid on this
    CPU); ``"cached"``: them where a run of ``estimate`` or ``fit`` has cached them, else the weights alone
    (what a notebook and the report read: building them must not wait for minutes of fake calls).

    The cache key holds everything the result depends on: the architectures, the
    grid, ``exclude`` and the library versions.
    """
    if phases == "cached":
        return predict(params, preset, _cache_path(params, preset, True).is_file())
    path = _cache_path(params, preset, bool(phases))
    if path.is_file():
        return json.loads(path.read_text())
    rows = estimate(params["model"], params["dtype"], params, components_for(params["model"], preset), bool(phases),
                    preset)  # fmt: skip
    write_atomic(path, json.dumps(rows))
    return rows


def predicted_gb(params: Params) -> dict[Cell, float] | None:
    """Full-size predicted memory_gb by configuration (``params.cell_of`` of a record finds its own).

    ``None`` for a backend the estimate does not cover (it says so); a configuration the meta device
    cannot quantize (torchao fp8dq / int4wo need CUDA) is left out.
    """
    try:
        rows = predict(params)
    except NotPredicted as e:
        print(f"estimate: {e}")
        return None
    return {
        cell_of(r): r["memory_gb"]
        for r in rows
        if r["memory_gb"] is not None
    }


def format_table(rows: list[dict]) -> str:
    """The grid's predictions and, below, each component's parameters and bytes (unquantized)."""
    first = next((r for r in rows if r["memory_gb"] is not None), rows[0])
    names = list(first["components"])
    phased = "peak_reserved_gb" in first
    extra = ["Offload", "Loaded reserved (GB)", "Peak allocated (GB)", "Peak reserved (GB)", "Peak phase", "Host (GB)"]
    head = ["Quantization", "Quantize TE", "Fuse QKV", "Batch", "Memory (GB)"] + (extra if phased else []) + [
        f"{n} (GB)" for n in names]  # fmt: skip

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"Predicted memory: {first['model']} {first['dtype']} (no weights loaded; GB = bytes / 1024**3)", ""]
    table = [head] + [
        [qtype_label(r["qtype"], r["te_qtype"], r["quantize_te"]), te_label(r["model"], r["quantize_te"]), yes_no(r["fuse_qkv"]),
         str(r["batch_size"]), num(r["memory_gb"])]
        + ([r.get("offload", "none"), num(r["loaded_reserved_gb"]), num(r["peak_allocated_gb"]), num(r["peak_reserved_gb"]),
            r["peak_phase"] or "n/a", num(r["host_gb"])] if phased else [])
        + [f"{r['components'][n] / GB:.3f}" if n in r["components"] else "n/a" for n in names]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    lines += [f"  {qtype_label(r['qtype'], r['te_qtype'], r['quantize_te'])}, TE {te_label(r['model'], r['quantize_te'])}, "
              f"fuse {yes_no(r['fuse_qkv'])}: {r['note']}" for r in rows if r.get("note")]  # fmt: skip
    base = next((r for r in rows if r["memory_gb"] is not None and r["qtype"] == "none" and not r["fuse_qkv"]
                 and not (r["quantize_te"] and r["te_qtype"])), None)  # fmt: skip
    if base is None:
        return "\n".join(lines)
    lines += ["", "Components (unquantized, unfused):"]
    for n in names:
        lines.append(f"  {n:<16} {base['parameters'][n]:>15,d} parameters  {base['components'][n]:>15,d} bytes")
    return "\n".join(lines)


def _cache_path(params: Params, preset: str, phases: bool):
    """Where ``predict`` keeps its rows: a hash of everything they depend on (the architectures, the grid,
    ``exclude``, the backend's rule, the library versions; with the phases, the call and the tracker's code)."""
    from .paths import cache_dir
    from .records import library_versions

    model, dtype = params["model"], params["dtype"]
    grid_keys = ("qtypes", "quantize_te", "te_qtypes", "fuse_qkv", "batch_sizes", "exclude", "offload")
    if phases:  # the call is part of what a phase needs
        grid_keys += ("steps", "height", "width", "guidance_scale", "max_sequence_length", "prompts", "seed")
    key_data = {
        "components": {n: vars(c) for n, c in components_for(model, preset).items()},
        "dtype": dtype,
        "grid": {k: params[k] for k in grid_keys},
        "backend": params["backend"],
        "rule": _source_hash(backend_module(params["backend"])),
        "versions": library_versions(),
        **({"tracker": [_source_hash(m) for m in _phase_sources()]} if phases else {}),
    }
    digest = key_hash(key_data, 16)
    return cache_dir() / "estimates" / f"{model}_{dtype}_{preset}_{digest}{'_phases' if phases else ''}.json"


def _predict_job(job: tuple[dict, str, bool]) -> list[dict]:
    params, preset, phases = job
    return predict(params, preset, phases)


def predict_many(params_list: list[dict], preset: str = "full", phases: bool = False) -> list[list[dict]]:
    """``predict`` for several models / dtypes, one process per CPU core (each is CPU-bound Python)."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = min(len(params_list), os.cpu_count() or 1)
    if workers <= 1:
        return [predict(p, preset, phases) for p in params_list]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_predict_job, [(p, preset, phases) for p in params_list]))


# ---------------------------------------------------------------------------------------------------------
# Phases: what one call needs on top of the weights, and what the CUDA caching allocator reserves for it.
#
# Each configuration's pipeline is built as above (meta device, dtypes, fuse, the backend's own quantization),
# its tensors made fake (components.to_fake: shapes and storages, no memory), and called once with the
# configuration's height, width, batch size, guidance and max_sequence_length, under measure.LiveBytes, the
# tracker that measures the CPU's phases: the same count on the same operations. Two denoising steps at most:
# a multistep scheduler (PixArt's DPM-Solver++) keeps one earlier model output from the second step on, and
# every later step repeats the second. The trace, in order (the weights loading, then the storages the call
# creates and frees, with each component's entry), is replayed through allocator.CachingAllocator, the model
# of torch's CUDA caching allocator, as measure.measure runs a configuration: load; the warm-up and timed
# calls; empty_cache and a reset of the peak stats; the fixed-seed call. Not seen, hence not predicted: kernel
# scratch memory (cuBLAS, cuDNN and attention workspaces), the CUDA context, and a CUDA kernel that makes
# other tensors than the CPU's for the same operation.
#
# Loading, by the backend's QUANTIZES: "after-load" (quanto, layerwise): every component loads unquantized,
# then each is quantized module by module (the quantized weight is made, then the unquantized one freed);
# "load" (torchao, bitsandbytes) does the same weight by weight as the component loads; "file" (GGUF) loads
# the quantized tensors as they are. Components load in the pipeline's order, their weights in module order
# (safetensors and from_pretrained go through the state dict, which is module order).
# ---------------------------------------------------------------------------------------------------------

PHASE_STEPS = 2
# The CUDA context (the driver's and the kernels' images, cuBLAS handles) is not the caching allocator's and
# is not predicted: 0 here, and `fit` says so. A GPU record measures it: device_used_gb - memory_reserved_gb.
CUDA_CONTEXT_GB = 0.0


def _tensors_by_module(module) -> dict[str, list[int]]:
    """Each module's own parameters and buffers, as the bytes of the plain tensors behind them."""
    from .measure import _plain_tensors

    seen: set[int] = set()
    out: dict[str, list[int]] = {}
    for name, sub in module.named_modules():
        sizes = []
        for t in [*sub._parameters.values(), *sub._buffers.values()]:
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            sizes += [p.untyped_storage().nbytes() for p in _plain_tensors(t)]
        if sizes:
            out[name] = sizes
    return out


def _phase_sources():
    """The modules a phase prediction depends on: a change to any of them is not served a stale one."""
    import sys

    from . import allocator, components, measure, pipelines

    return [allocator, components, measure, pipelines, sys.modules[__name__]]


def _load_events(component: str, plain: dict[str, list[int]], quantized: dict[str, list[int]] | None,
                 when: str) -> tuple[list[tuple], list[tuple]]:  # fmt: skip
    """Mallocs and frees of one component: ``(while loading, after every component has loaded)``, by the
    backend's ``QUANTIZES`` (see above): the pipeline loads every component first, then quantizes."""
    loading: list[tuple] = []
    after: list[tuple] = []

    def put(events, kind, sizes, name):
        keys = [(component, kind, name, i) for i in range(len(sizes))]
        events.extend(("malloc", k, n) for k, n in zip(keys, sizes))
        return keys

    if quantized is None or when == "file":
        for name, sizes in (quantized or plain).items():
            put(loading, "w", sizes, name)
        return loading, after
    names = list(plain) + [n for n in quantized if n not in plain]
    if when == "load":
        for name in names:
            old = put(loading, "p", plain.get(name, []), name)
            put(loading, "w", quantized.get(name, []), name)
            loading.extend(("free", k) for k in old)
        return loading, after
    olds = {name: put(loading, "p", sizes, name) for name, sizes in plain.items()}
    for name in names:
        put(after, "w", quantized.get(name, []), name)
        after.extend(("free", k) for k in olds.get(name, []))
    return loading, after


def phase_trace(model: str, dtype: str, params: Params, components: dict[str, Component], config: Cell,
                preset: str) -> dict:  # fmt: skip
    """One configuration's fake call: its live bytes by phase, the weights by component, and the events.
    ``preset``: whose call it is (the components' size): tiny's or the full pipeline's defaults where
    ``params`` leave a setting unset."""
    import torch

    from . import tiny
    from .components import to_fake
    from .measure import step_hook, traced_call
    from .pipelines import call_settings
    from .registry import pipeline_class

    hooks = backend_module(params["backend"])
    mode = _constant_inputs_mode()(allow_non_fake_inputs=True)
    modules, load, quantize, weights, storages, leaf, keys = {}, [], [], {}, {}, 0, {}
    for name, component in components.items():
        qtype, fuse, transformer = "none", False, name == "transformer"
        if transformer:
            qtype, fuse = config.qtype, config.fuse_qkv
        elif name in config.encoders(model):
            qtype = config.encoder_qtype
        module = build_on_meta(component, dtype)
        if fuse:
            module.fuse_qkv_projections()
        plain = _tensors_by_module(module) if qtype != "none" else None
        hooks.on_meta(module, qtype, params["exclude"] if transformer else [], transformer, fuse)
        quantized = _tensors_by_module(module)
        loading, after = _load_events(name, plain or quantized, quantized if plain else None, hooks.QUANTIZES)
        load += loading
        quantize += after
        weights[name] = sum(sum(v) for v in quantized.values())
        storages[name] = [n for v in quantized.values() for n in v]
        leaf = max(leaf, max((sum(v) for k, v in quantized.items() if not any(True for _ in module.get_submodule(k).children())), default=0))
        modules[name] = to_fake(module, mode)
        keys.update(_weight_keys(modules[name], name))
    pipe = pipeline_class(model)(**modules, **tiny.tokenizers(components), scheduler=tiny.scheduler(model))
    pipe.set_progress_bar_config(disable=True)
    call = call_settings({**params, "preset": preset})
    call.update(num_inference_steps=min(call["num_inference_steps"], PHASE_STEPS), output_type="pt",
                num_images_per_prompt=config.batch_size, prompt=params["prompts"][0])  # fmt: skip
    kept: dict = {}  # the final latents, kept as measure.generate keeps them
    # A backend whose modules need help to run on fake tensors says how (layerwise, gguf: their fake_call).
    with getattr(hooks, "fake_call", lambda *_: contextlib.nullcontext())(modules, config.qtype), _constants():
        _, tracker = traced_call(pipe, {**call, **step_hook(pipe, kept)}, params["seed"], events=True, weights=keys)
    incarnations = tracker.incarnations()
    del pipe, modules, keys
    torch.compiler.reset()
    return {"live": tracker.peaks, "events": tracker.events, "load": load + quantize, "weights": weights,
            "storages": storages, "largest_leaf": leaf, "incarnations": incarnations}


# The most elements a real tensor may have to enter the fake call as a constant: a batch of token ids or an
# attention mask (a few thousand); latents and activations come from fake weights or seeded noise, never so.
CONSTANT_ELEMENTS = 1 << 14


@contextlib.contextmanager
def _constants():
    """Small tensors computed from constants stay constants (their values known) for the call's length:
    torch's FakeTensorMode keeps them only up to one element (``CONSTANT_NUMEL_LIMIT``)."""
    from torch._subclasses import fake_tensor

    limit = fake_tensor.CONSTANT_NUMEL_LIMIT
    fake_tensor.CONSTANT_NUMEL_LIMIT = CONSTANT_ELEMENTS
    try:
        yield
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = limit


def _constant_inputs_mode():
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    class ConstantInputsMode(FakeTensorMode):
        """A fake mode in which the real tensors a pipeline makes itself (its tokenizer's ids and attention
        mask) enter as constants when small, so an operation that depends on their values has them: a pipeline
        that keeps each prompt's embeddings where its mask is true (``aten.nonzero``) asks what a plain fake
        tensor cannot answer (``DynamicOutputShapeException``). Everything computed from fake weights stays fake."""

        def validate_and_convert_non_fake_tensors(self, func, converter, flat_args, args_spec):
            flat_args = [
                converter.from_real_tensor(self, a, make_constant=True)
                if type(a) is torch.Tensor and not self.is_our_fake(a) and self.may_turn_const(a) else a
                for a in flat_args
            ]  # fmt: skip
            return super().validate_and_convert_non_fake_tensors(func, converter, flat_args, args_spec)

    return ConstantInputsMode


def _weight_keys(module, component: str) -> dict:
    """Each plain parameter and buffer of a (fake) component -> its key in the loading events
    (``_load_events``' ``"w"`` keys, in ``_tensors_by_module``'s order): the fake call's ``LiveBytes`` says
    which loaded block a weight freed during the call was."""
    from .measure import _is_wrapper, _plain_tensors

    seen: set[int] = set()
    out: dict = {}
    for name, sub in module.named_modules():
        i = 0
        for t in [*sub._parameters.values(), *sub._buffers.values()]:
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            if not _is_wrapper(type(t)):
                out[t] = (component, "w", name, i)
            i += len(list(_plain_tensors(t)))
    return out


def _replay(trace: dict, offload: str = "none") -> dict:
    """The allocator's figures for a trace, as measure.measure takes them (see above).

    With an offload mode the weights wait on the host, so loading reserves nothing on the GPU, and during
    the call the GPU holds what the mode brings there (helpers/offload.py says what each mode calls):
    ``model``: the component whose forward runs (accelerate's hooks offload the previous one when the next
    begins); ``group-block``, ``group-leaf`` and ``sequential``: one group at a time, modelled as twice the
    largest leaf module's weights (the one computing and, with a stream, the next one being copied); a
    first-order rule, not a trace of the hooks' copies."""
    from .allocator import CachingAllocator

    a = CachingAllocator()
    if offload == "none":
        for event in trace["load"]:
            a.malloc(event[1], event[2]) if event[0] == "malloc" else a.free(event[1])
    loaded_reserved, loaded_allocated = a.peak_reserved, a.allocated

    holder: dict = {}  # a weight's loading key -> the block that holds it now (layerwise casting replaces it)

    def call(tag, phases=None):
        phase, resident = "encode", []
        for event in trace["events"]:
            if event[0] == "free-weight":  # a weight's storage replaced during the call (see measure.LiveBytes)
                if offload == "none":  # offloaded weights wait on the host: not the GPU's
                    a.free(holder.pop(event[1], event[1]))
                continue
            if event[0] == "enter":
                phase = {"transformer": "denoise", "vae": "decode", None: None}.get(event[1], "encode")
                component = event[1]
                if offload != "none" and component is not None:
                    for key in resident:
                        a.free(key)
                    sizes = trace["storages"][component] if offload == "model" else [2 * trace["largest_leaf"]]
                    resident = [(tag, "weights", component, i) for i in range(len(sizes))]
                    for key, n in zip(resident, sizes):
                        a.malloc(key, n)
                continue
            if event[0] == "malloc":
                a.malloc((tag, event[1]), event[2])
            else:
                a.free((tag, event[1]))
            if phases is not None and phase is not None:
                old = phases.get(phase, (0, 0))
                phases[phase] = (max(old[0], a.allocated), max(old[1], a.reserved))
        for key in resident:  # back to the host after the call
            a.free(key)
        holder.update({k: (tag, v) for k, v in trace.get("incarnations", {}).items()})

    call("warm")
    a.empty_cache()
    a.reset_peak()
    phases: dict[str, tuple[int, int]] = {}
    call("fixed", phases)
    return {"loaded_allocated": loaded_allocated, "loaded_reserved": loaded_reserved, "phases": phases,
            "peak_allocated": a.peak_allocated, "peak_reserved": a.peak_reserved}  # fmt: skip


