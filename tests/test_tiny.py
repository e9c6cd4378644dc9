"""Tiny random-weight pipelines: build, save, load like a hub checkpoint, generate."""

from __future__ import annotations

import hashlib

import pytest
import torch

from helpers import tiny
from helpers.registry import MODELS, model_spec
from helpers.tiny import build_tiny, check_width



def _hashes(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {m: build_tiny(m, root / m) for m in MODELS}


@pytest.mark.parametrize("model", MODELS)
def test_load_bf16_and_generate(built, model):
    from diffusers import DiffusionPipeline

    path = built[model]
    files = [p.name for p in path.rglob("*") if p.is_file()]
    assert any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith(".bin") for f in files)

    pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch.bfloat16, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == model_spec(model).pipeline_class
    assert pipe.transformer.dtype == torch.bfloat16

    kwargs = dict(model_spec(model).tiny_call)
    kwargs.update(kwargs.pop("extra_call_kwargs", {}))
    assert kwargs["num_inference_steps"] == 2
    out = pipe(prompt="a photo of a cat", generator=torch.Generator().manual_seed(0), output_type="pil", **kwargs)
    image = out.images[0]
    assert image.size == (kwargs["width"], kwargs["height"])

    # Every width that feeds a Linear passed the quanto-safe rule.
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for sub in module.modules():
            if isinstance(sub, torch.nn.Linear):
                assert sub.in_features % 16 == 0, (name, sub)


def test_check_width():
    check_width("hidden", 16)
    check_width("hidden", 128)
    for bad in (24, 0, -32, 100, 64.0):
        with pytest.raises(ValueError):
            check_width("hidden", bad)


def test_builder_refuses_bad_width(tmp_path, monkeypatch):
    from helpers.registry import model_spec

    spec = model_spec("sd3")
    library, cls, kwargs = spec.tiny["text_encoder_3"]
    monkeypatch.setitem(spec.tiny, "text_encoder_3", (library, cls, {**kwargs, "d_ff": 40}))
    with pytest.raises(ValueError, match="in_features=40"):
        build_tiny("sd3", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_unknown_model(tmp_path):
    with pytest.raises(ValueError):
        build_tiny("sdxl", tmp_path / "x")


def test_builds_are_deterministic(built, tmp_path):
    rng_before = torch.random.get_rng_state()
    for model in MODELS:
        again = build_tiny(model, tmp_path / model)
        assert _hashes(again) == _hashes(built[model])
    # Building does not disturb the caller's global RNG.
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    other = build_tiny("pixart", tmp_path / "seed1", seed=1)
    a = _hashes(built["pixart"])
    b = _hashes(other)
    assert a["transformer/diffusion_pytorch_model.safetensors"] != b["transformer/diffusion_pytorch_model.safetensors"]


def test_a_scheduler_for_an_unknown_model_is_refused():

    with pytest.raises(ValueError, match="unknown model 'sdxl'"):
        tiny.scheduler("sdxl")


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # diffusers casting the NaN image
def test_a_pipeline_that_outputs_nan_is_refused_not_measured(built):
    """A transformer gone to NaN (seen with torch.compile's AVX2 bf16 code for PixArt) gives an image of
    noise cast to uint8: generate raises, so its configuration is recorded as an error with the reason."""
    from diffusers import DiffusionPipeline

    from helpers.measure import generate

    pipe = DiffusionPipeline.from_pretrained(built["pixart"], torch_dtype=torch.bfloat16, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(model_spec("pixart").tiny_call)
    kwargs.update(kwargs.pop("extra_call_kwargs", {}))
    with torch.no_grad():
        generate(pipe, {**kwargs, "prompt": "a cat"}, seed=0)  # finite: no error
        pipe.transformer.proj_out.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"^64 of 64 final latents are NaN or inf$"):
        generate(pipe, {**kwargs, "prompt": "a cat"}, seed=0)
