"""The grid: every configuration of qtype x quantize_te x fuse_qkv x batch size.

Each configuration loads the pipeline afresh from disk with ``from_pretrained``,
applies its fuse/quantize steps, is measured, then everything it held is freed
before the next one. Quantization in quanto replaces modules in place and
cannot be undone, so a fresh load is the only way to be sure no configuration
carries another's leftovers.
"""

from __future__ import annotations

import itertools
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import measure, records
from .pipelines import call_settings, load_pipeline, resolve_checkpoint
from .quant import Rejected, apply_config
from .registry import torch_device


@dataclass(frozen=True)
class Config:
    qtype: str
    quantize_te: bool
    fuse_qkv: bool
    batch_size: int

    @property
    def slug(self) -> str:
        return f"{self.qtype}_qte{int(self.quantize_te)}_fuse{int(self.fuse_qkv)}_bs{self.batch_size}"


def configs(params: dict) -> list[Config]:
    """The grid in the order it runs (the parameters' order: ``none`` first by default)."""
    return [
        Config(q, te, fuse, bs)
        for bs, q, te, fuse in itertools.product(
            params["batch_sizes"], params["qtypes"], params["quantize_te"], params["fuse_qkv"]
        )
    ]


def results_path(params: dict) -> Path:
    return Path(params["out_dir"]) / "results" / f"{params['model']}_{params['dtype']}.jsonl"


def _base_record(params: dict, config: Config, checkpoint: str, device: str, call: dict) -> records.Record:
    return records.Record(
        model=params["model"],
        checkpoint=checkpoint,
        preset=params["preset"],
        device=device,
        dtype=params["dtype"],
        qtype=config.qtype,
        quantize_te=config.quantize_te,
        fuse_qkv=config.fuse_qkv,
        exclude=list(params["exclude"]),
        batch_size=config.batch_size,
        steps=call["num_inference_steps"],
        height=call["height"],
        width=call["width"],
        guidance_scale=call["guidance_scale"],
        prompt=params["prompt"],
        seed=params["seed"],
        warmup=params["warmup"],
        repeats=params["repeats"],
        device_name=measure.device_name(device),
        versions=records.library_versions(),
    )


def run_config(params: dict, config: Config, checkpoint: str, device: str, call: dict) -> records.Record:
    """Load, prepare and measure one configuration; never raises for a failing configuration."""
    record = _base_record(params, config, checkpoint, device, call)
    pipe = None
    try:
        pipe = load_pipeline(checkpoint, params["dtype"], device)
        apply_config(pipe, params["model"], config.qtype, config.quantize_te, config.fuse_qkv, params["exclude"])
        m = measure.measure(
            pipe,
            {**call, "prompt": params["prompt"], "num_images_per_prompt": config.batch_size},
            device=device,
            warmup=params["warmup"],
            repeats=params["repeats"],
            seed=params["seed"],
        )
        image_rel = Path("images") / f"{params['model']}_{params['dtype']}" / f"{config.slug}.png"
        image_abs = Path(params["out_dir"]) / image_rel
        image_abs.parent.mkdir(parents=True, exist_ok=True)
        m.image.save(image_abs)
        record.memory_bytes = m.memory_bytes
        record.memory_gb = m.memory_gb
        record.peak_memory_gb = m.peak_memory_gb
        record.latency_s = m.latency_s
        record.latency_min_s = m.latency_min_s
        record.latency_max_s = m.latency_max_s
        record.image_path = image_rel.as_posix()
    except Rejected as e:
        record.status, record.error = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - a failing configuration is recorded, the grid goes on
        record.status = "error"
        record.error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        del pipe
        measure.cleanup(device)
    record.timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def run_grid(params: dict, progress: bool = True) -> list[records.Record]:
    """Run every configuration not yet recorded ``ok`` or ``skipped``; return the latest records.

    Records are appended to ``results_path(params)`` as soon as each is measured,
    so a rerun resumes where the last one stopped.
    """
    from tqdm.auto import tqdm

    device = torch_device(params["device"])
    checkpoint = resolve_checkpoint(params)
    call = call_settings(params)
    path = results_path(params)

    grid = configs(params)
    with records.exclusive(path):
        records.repair(path)
        done = {r.config_key() for r in records.read(path) if r.status in ("ok", "skipped")}
        todo = [c for c in grid if _base_key(params, c, checkpoint, device, call) not in done]
        measure.settle()
        for config in tqdm(todo, desc=f"{params['model']} {params['dtype']}", disable=not progress):
            records.append(path, run_config(params, config, checkpoint, device, call))
    return grid_records(params, checkpoint=checkpoint, device=device, call=call)


def _base_key(params, config, checkpoint, device, call) -> str:
    return _base_record(params, config, checkpoint, device, call).config_key()


def grid_records(params: dict, checkpoint: str | None = None, device: str | None = None, call: dict | None = None):
    """The latest record of each configuration of this grid (missing ones left out), in grid order."""
    device = device or torch_device(params["device"])
    checkpoint = checkpoint or resolve_checkpoint(params)
    call = call or call_settings(params)
    by_key = {r.config_key(): r for r in records.latest(records.read(results_path(params)))}
    keys = [_base_key(params, c, checkpoint, device, call) for c in configs(params)]
    return [by_key[k] for k in keys if k in by_key]
