"""Tiny random-weight pipelines: build, save, load like a hub checkpoint, generate."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from helpers import tiny
from helpers.tiny import TINY_CALL_DEFAULTS, TINY_MODELS, build_tiny, check_width

PIPELINE_CLASS = {
    "pixart": "PixArtSigmaPipeline",
    "flux-dev": "FluxPipeline",
    "sd3": "StableDiffusion3Pipeline",
}


def _hashes(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {m: build_tiny(m, root / m) for m in TINY_MODELS}


@pytest.mark.parametrize("model", TINY_MODELS)
def test_load_bf16_and_generate(built, model):
    from diffusers import DiffusionPipeline

    path = built[model]
    files = [p.name for p in path.rglob("*") if p.is_file()]
    assert any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith(".bin") for f in files)

    pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch.bfloat16, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == PIPELINE_CLASS[model]
    assert pipe.transformer.dtype == torch.bfloat16

    kwargs = dict(TINY_CALL_DEFAULTS[model])
    kwargs.update(kwargs.pop("extra_call_kwargs", {}))
    assert kwargs["num_inference_steps"] == 2
    out = pipe("a photo of a cat", generator=torch.Generator().manual_seed(0), output_type="pil", **kwargs)
    image = out.images[0]
    assert image.size == (kwargs["width"], kwargs["height"])

    # Every width that feeds a Linear passed the quanto-safe rule.
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for sub in module.modules():
            if isinstance(sub, torch.nn.Linear):
                assert sub.in_features % 32 == 0, (name, sub)


def test_call_defaults_cover_models():
    assert set(TINY_CALL_DEFAULTS) == set(TINY_MODELS)
    assert TINY_CALL_DEFAULTS["pixart"]["extra_call_kwargs"]["use_resolution_binning"] is False


def test_check_width():
    check_width("hidden", 64)
    check_width("hidden", 128)
    for bad in (48, 0, -32, 100, 64.0):
        with pytest.raises(ValueError):
            check_width("hidden", bad)


def test_builder_refuses_bad_width(tmp_path, monkeypatch):
    configs = copy.deepcopy(tiny.TINY_CONFIGS)
    configs["sd3"]["text_encoder_3"]["d_ff"] = 48
    monkeypatch.setattr(tiny, "TINY_CONFIGS", configs)
    with pytest.raises(ValueError, match="d_ff"):
        build_tiny("sd3", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_unknown_model(tmp_path):
    with pytest.raises(ValueError):
        build_tiny("sdxl", tmp_path / "x")


def test_builds_are_deterministic(built, tmp_path):
    rng_before = torch.random.get_rng_state()
    for model in TINY_MODELS:
        again = build_tiny(model, tmp_path / model)
        assert _hashes(again) == _hashes(built[model])
    # Building does not disturb the caller's global RNG.
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    other = build_tiny("pixart", tmp_path / "seed1", seed=1)
    a = _hashes(built["pixart"])
    b = _hashes(other)
    assert a["transformer/diffusion_pytorch_model.safetensors"] != b["transformer/diffusion_pytorch_model.safetensors"]


def test_a_scheduler_for_an_unknown_model_is_refused():
    from helpers import tiny

    with pytest.raises(ValueError, match="unknown model 'sdxl'"):
        tiny.scheduler("sdxl")
