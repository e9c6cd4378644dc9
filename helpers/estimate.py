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

import json
import os

from .components import (
    Component,
    build_on_meta,
    components_from_folder,
    full_components,
)
from .measure import GB, tensor_bytes
from .params import Config, Params, config_of
from .records import qtype_label, te_label, yes_no
from .registry import BACKEND_MODULES
from .registry import backend as backend_module


def _stored(key: dict, compute) -> tuple[int, int]:
    """``compute()`` for one component variant, kept on disk under a hash of everything it depends on
    (the component's architecture, dtype, quantization, fuse, exclude, library versions): the same T5
    encoder of three pipelines, or an unquantized transformer under two backends, is counted once."""
    import hashlib

    from .paths import cache_dir
    from .records import library_versions

    text = json.dumps({**key, "versions": library_versions()}, sort_keys=True, default=str)
    path = cache_dir() / "estimates" / "variants" / (hashlib.sha256(text.encode()).hexdigest()[:24] + ".json")
    if path.is_file():
        return tuple(json.loads(path.read_text()))
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(list(value)))
    tmp.replace(path)
    return value


def _source_hash(module) -> str:
    """The backend module's code, in the variant's key: a change to its rule is not served a stale count."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


class NotPredicted(Exception):
    """The estimate does not reproduce this backend or quantization (it says so rather than guess)."""


def estimate(model: str, dtype: str, params: Params, components: dict[str, Component]) -> list[dict]:
    """One row per configuration of the grid in ``params``: predicted bytes per component and in all.

    A component's bytes depend only on what is done to it (the transformer: qtype
    and fuse; a text encoder: its qtype when the configuration quantizes it), so each variant is
    built and counted once and the configurations add them up.
    """
    from .params import configs

    backend = params["backend"]
    hooks = backend_module(backend)
    if not hooks.PREDICTED:
        raise NotPredicted(f"the estimate covers {', '.join(n for n, b in BACKEND_MODULES.items() if b.PREDICTED)}, not {backend!r}")
    cache: dict[tuple, tuple[int, int]] = {}

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
                module.fuse_qkv_projections()
            hooks.on_meta(module, qtype, params["exclude"], True, fuse)
        else:
            hooks.on_meta(module, qtype, [], False, False)
        return tensor_bytes([module]), params_count

    rows = []
    for c in configs(params):
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
            rows.append(dict(model=model, dtype=dtype, qtype=c.qtype, quantize_te=c.as_given(), te_qtype=c.te_qtype,
                             fuse_qkv=c.fuse_qkv, batch_size=c.batch_size, memory_bytes=None, memory_gb=None,
                             components={}, parameters={},
                             note=f"not predicted: {type(e).__name__}: {str(e).splitlines()[0][:200]}"))  # fmt: skip
            continue
        total = sum(b for b, _ in parts.values())
        rows.append(
            dict(
                model=model, dtype=dtype, qtype=c.qtype, quantize_te=c.as_given(), te_qtype=c.te_qtype, fuse_qkv=c.fuse_qkv,
                batch_size=c.batch_size, memory_bytes=total, memory_gb=total / GB,
                components={n: b for n, (b, _) in parts.items()},
                parameters={n: p for n, (_, p) in parts.items()},
            )  # fmt: skip
        )
    return rows


def components_for(model: str, preset: str) -> dict[str, Component]:
    """``full``: the shipped full-size architectures; ``tiny``: the saved tiny pipeline's configs."""
    if preset == "full":
        return full_components(model)
    if preset == "tiny":
        from .pipelines import ensure_tiny

        return components_from_folder(ensure_tiny(model))
    raise ValueError(f"unknown preset {preset!r} for an estimate; valid choices: full, tiny")


def predict(params: Params, preset: str = "full") -> list[dict]:
    """``estimate`` for the grid of ``params`` (its model and dtype), cached on disk.

    The cache key holds everything the result depends on: the architectures, the
    grid, ``exclude`` and the library versions.
    """
    import hashlib

    from .paths import cache_dir
    from .records import library_versions

    model, dtype = params["model"], params["dtype"]
    components = components_for(model, preset)
    grid_keys = ("qtypes", "quantize_te", "te_qtypes", "fuse_qkv", "batch_sizes", "exclude")
    key_data = {
        "components": {n: vars(c) for n, c in components.items()},
        "dtype": dtype,
        "grid": {k: params[k] for k in grid_keys},
        "backend": params["backend"],
        "rule": _source_hash(backend_module(params["backend"])),
        "versions": library_versions(),
    }
    digest = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / "estimates" / f"{model}_{dtype}_{preset}_{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = estimate(model, dtype, params, components)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(path)
    return rows


def predicted_gb(params: Params) -> dict[Config, float] | None:
    """Full-size predicted memory_gb by configuration (``params.config_of`` of a record finds its own).

    ``None`` for bitsandbytes (the estimate says so); a configuration the meta device
    cannot quantize (torchao fp8dq / int4wo need CUDA) is left out.
    """
    try:
        rows = predict(params)
    except NotPredicted as e:
        print(f"estimate: {e}")
        return None
    return {
        config_of(r): r["memory_gb"]
        for r in rows
        if r["memory_gb"] is not None
    }


def format_table(rows: list[dict]) -> str:
    """The grid's predictions and, below, each component's parameters and bytes (unquantized)."""
    first = next((r for r in rows if r["memory_gb"] is not None), rows[0])
    names = list(first["components"])
    head = ["Quantization", "Quantize TE", "Fuse QKV", "Batch", "Memory (GB)"] + [f"{n} (GB)" for n in names]
    lines = [f"Predicted memory: {first['model']} {first['dtype']} (no weights loaded; GB = bytes / 1024**3)", ""]
    table = [head] + [
        [qtype_label(r["qtype"], r["te_qtype"], r["quantize_te"]), te_label(r["model"], r["quantize_te"]), yes_no(r["fuse_qkv"]),
         str(r["batch_size"]), f"{r['memory_gb']:.3f}" if r["memory_gb"] is not None else "n/a"]
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


def _predict_job(job: tuple[dict, str]) -> list[dict]:
    params, preset = job
    return predict(params, preset)


def predict_many(params_list: list[dict], preset: str = "full") -> list[list[dict]]:
    """``predict`` for several models / dtypes, one process per CPU core (each is CPU-bound Python)."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = min(len(params_list), os.cpu_count() or 1)
    if workers <= 1:
        return [predict(p, preset) for p in params_list]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_predict_job, [(p, preset) for p in params_list]))
