"""The grid: every configuration of qtype x quantize_te x fuse_qkv x batch size.

Each configuration loads the pipeline afresh from disk with ``from_pretrained``,
applies its fuse/quantize steps, is measured, then everything it held is freed
before the next one. Quantization in quanto replaces modules in place and
cannot be undone, so a fresh load is the only way to be sure no configuration
carries another's leftovers.
"""

from __future__ import annotations

import functools
import itertools
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import measure, records
from .pipelines import call_settings, load_pipeline, resolve_checkpoint
from .quant import Rejected, apply_config, compile_transformer, load_config, unsupported
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


def section_name(params: dict) -> str:
    return records.section_name(params["model"], params["dtype"], params["backend"])


def results_path(params: dict) -> Path:
    return Path(params["out_dir"]) / "results" / f"{section_name(params)}.jsonl"


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
        prompts=list(params["prompts"]),
        seed=params["seed"],
        warmup=params["warmup"],
        repeats=params["repeats"],
        quality_metrics=list(params["quality_metrics"]),
        backend=params["backend"],
        compile=params["compile"],
        device_name=measure.device_name(device),
        versions=records.library_versions(),
    )


def reference_of(config: Config) -> Config:
    """The unquantized configuration a configuration's fidelity is measured against."""
    return Config("none", False, config.fuse_qkv, config.batch_size)


def _outputs(params: dict, config: Config) -> tuple[list[Path], Path]:
    """(image per prompt, latents file), relative to out_dir."""
    folder = section_name(params)
    images = [
        Path("images") / folder / (f"{config.slug}.png" if i == 0 else f"{config.slug}_p{i}.png")
        for i in range(len(params["prompts"]))
    ]
    return images, Path("latents") / folder / f"{config.slug}.safetensors"


def _load_outputs(params: dict, config: Config):
    from PIL import Image
    from safetensors.torch import load_file

    images, latents = _outputs(params, config)
    out = Path(params["out_dir"])
    tensors = load_file(out / latents)
    return [Image.open(out / p).copy() for p in images], [tensors[f"p{i}"] for i in range(len(images))]


def run_config(
    params: dict, config: Config, checkpoint: str, device: str, call: dict, reference_ok: bool = False
) -> records.Record:
    """Load, prepare and measure one configuration; never raises for a failing configuration.

    The first prompt is measured (latency, memory); every prompt gives one more
    fixed-seed image and its final latents, saved, and compared with the
    reference configuration's when ``reference_ok`` says those are on disk.
    """
    from safetensors.torch import save_file

    from . import fidelity

    record = _base_record(params, config, checkpoint, device, call)
    out = Path(params["out_dir"])
    pipe = None
    backend = params["backend"]
    try:
        reason = unsupported(backend, config.qtype, device)
        if reason:
            raise Rejected(reason)
        try:
            qconfig = load_config(
                params["model"], backend, config.qtype, config.quantize_te, params["exclude"], params["dtype"],
                config.fuse_qkv,
            )
            if params["preset"] == "random-full":
                if qconfig is not None:
                    raise NotImplementedError("random-full builds its weights in memory; load-time quantization "
                                              "(torchao, bitsandbytes) needs from_pretrained")  # fmt: skip
                from .random_full import build

                pipe, record.init_s = measure.timed(
                    lambda: build(params["model"], params["dtype"], device, params["seed"])
                )
            else:
                pipe = load_pipeline(checkpoint, params["dtype"], device, quantization_config=qconfig)
        except (ImportError, NotImplementedError) as e:  # a backend without its kernels here
            raise Rejected(f"{type(e).__name__}: {e}") from e
        apply_config(
            pipe, params["model"], config.qtype, config.quantize_te, config.fuse_qkv, params["exclude"], backend
        )
        compile_transformer(pipe, params["compile"])
        kwargs = {**call, "num_images_per_prompt": config.batch_size}
        m = measure.measure(
            pipe,
            {**kwargs, "prompt": params["prompts"][0]},
            device=device,
            warmup=params["warmup"],
            repeats=params["repeats"],
            seed=params["seed"],
            compiled=params["compile"] is not False,
        )
        images, latents = [m.image], [m.latents]
        for prompt in params["prompts"][1:]:
            image, lat = measure.generate(pipe, {**kwargs, "prompt": prompt}, params["seed"])
            images.append(image)
            latents.append(lat)
        image_paths, latents_path = _outputs(params, config)
        for image, path in zip(images, image_paths):
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            image.save(out / path)
        (out / latents_path).parent.mkdir(parents=True, exist_ok=True)
        save_file({f"p{i}": t.contiguous() for i, t in enumerate(latents)}, out / latents_path)
        record.memory_bytes = m.memory_bytes
        record.memory_gb = m.memory_gb
        record.peak_memory_gb = m.peak_memory_gb
        record.latency_s = m.latency_s
        record.latency_min_s = m.latency_min_s
        record.latency_max_s = m.latency_max_s
        record.compile_s = m.compile_s
        record.image_path = image_paths[0].as_posix()
        if reference_ok or config == reference_of(config):
            ref_images, ref_latents = _load_outputs(params, reference_of(config))
            per_prompt = [
                {"prompt": prompt, **fidelity.compare(im, ref_im, lat, ref_lat)}
                for prompt, im, ref_im, lat, ref_lat in zip(params["prompts"], images, ref_images, latents, ref_latents)
            ]
            record.fidelity = per_prompt
            summary = fidelity.summarize(per_prompt)
            record.psnr_db, record.ssim = summary["psnr_db"], summary["ssim"]
            record.latent_rel_error, record.identical = summary["latent_rel_error"], summary["identical"]
        if "clip_score" in params["quality_metrics"] and _clip_available():
            record.clip_score = fidelity.clip_score(images, params["prompts"], device)
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


@functools.lru_cache(maxsize=None)
def _clip_available() -> bool:
    """CLIP score needs CLIP's weights from the hub; offline it is skipped with one line (asked once)."""
    from .fidelity import CLIP_MODEL
    from .params import hub_available

    available = hub_available(CLIP_MODEL)
    if not available:
        print(f"clip_score skipped: {CLIP_MODEL} is not in the local hub cache and the hub cannot be reached")
    return available


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
        finished = {r.config_key(): r for r in records.read(path) if r.status in ("ok", "skipped")}
        todo = [c for c in grid if _base_key(params, c, checkpoint, device, call) not in finished]
        todo.sort(key=lambda c: c != reference_of(c))  # references first: the others compare with them
        measure.cleanup(device)  # freeze what the imports left, before the first configuration
        for config in tqdm(todo, desc=section_name(params), disable=not progress):
            ref = finished.get(_base_key(params, reference_of(config), checkpoint, device, call))
            record = run_config(params, config, checkpoint, device, call, reference_ok=ref is not None and ref.status == "ok")
            records.append(path, record)
            finished[record.config_key()] = record
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
