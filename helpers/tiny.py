"""Tiny random-weight text-to-image pipelines of the real architectures.

``build_tiny(model, path)`` builds a pipeline whose components have the same
classes (and therefore the same code paths) as the hub checkpoints, but with
random weights and tiny widths, and writes it with ``save_pretrained`` in
safetensors format.  The result loads like a hub checkpoint::

    pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch.bfloat16)
    image = pipe("a photo of a cat", **helpers.pipelines.call_settings(params)).images[0]

Nothing is downloaded: the tokenizers are built here from a small built-in word
list with the ``tokenizers`` library (via the ``transformers`` tokenizer
classes), the models are instantiated from configs with seeded random weights.

Width rules (see ``check_width``)
---------------------------------
* Every ``in_features`` of every ``nn.Linear`` is a multiple of 32.  optimum-quanto
  runs int8 weights with bf16 activations on CPU through
  ``torch._weight_int8pack_mm``, which crashes the process (segfault, not an
  exception) for unaligned widths (on an AVX-512 CPU with torch 2.13: 8, 24,
  40, 56, 72, 100, 136 crash, 16/48/80 happen to work; 32 is the safe rule).
  ``build_tiny`` checks the configured widths before building and every
  instantiated Linear afterwards.
* The main hidden width is 128 and the FFN widths are 4x that (256/512/640).
  quanto's int4 (``qint4``) picks the weight group size from ``in_features``:
  for ``in_features <= 128`` it does *not* group (one scale per output channel,
  plain ``WeightQBitsTensor``), for larger widths it uses group size 128 if it
  divides ``in_features`` and, for bf16 on CPU, the packed ``TinyGemm`` kernel
  (``torch._weight_int4pack_mm``), which is what the real models (1152/1536/3072
  wide) get.  Small widths therefore do not break or skip int4, they just take
  the ungrouped path.  With width 128 / FFN 512 one tiny model exercises both:
  the attention projections (in_features 128) take the ungrouped path, the FFN
  down-projections (in_features 512 / 640 / 256) take the grouped TinyGemm path.

Call sizes
----------
All VAEs have 4 blocks (``vae_scale_factor`` 8, like the real ones), so every
model needs height/width to be a multiple of 16 (8 * patch size 2, or 8 * 2 for
FLUX's 2x2 latent packing).  ``TINY_CALL_DEFAULTS`` uses 32x32 (a 4x4 latent).
The smallest size is 16x16 for all three.  PixArt's own check only asks for
multiples of 8, but an odd latent (e.g. 24 px) fails in the transformer with a
RuntimeError.  The SD3 transformer's ``pos_embed_max_size`` is 16 patches, so
SD3 allows at most 256x256; PixArt and FLUX have no upper bound besides time.

CPU speed: a 2-step 64x64 call takes ~0.05-0.1 s in bf16 and ~0.3-0.4 s in
fp16 (fp16 conv2d on CPU falls back to ``aten::_slow_conv2d_forward``, so the
VAE decoder dominates).  With other processes busy on a 2-core machine, keep
``torch.set_num_threads`` at the number of free cores: oversubscribed OpenMP
threads make the same call take seconds.

PixArt-Sigma: ``PixArtSigmaPipeline.__call__`` defaults to
``use_resolution_binning=True``, which raises ``ValueError("Invalid sample
size")`` unless ``transformer.config.sample_size`` is one of 32/64/128/256 (the
real 256..2048 px models).  The tiny transformer has ``sample_size=8`` (64 px
default), so callers must pass ``use_resolution_binning=False``; it is in
``TINY_CALL_DEFAULTS["pixart"]["extra_call_kwargs"]`` (``helpers.pipelines.call_settings`` merges it).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

__all__ = [
    "TINY_MODELS",
    "TINY_CALL_DEFAULTS",
    "TINY_CONFIGS",
    "build_tiny",
    "check_width",
    "linear_widths",
]

TINY_MODELS = ("pixart", "flux-dev", "sd3")

# Keyword arguments for one cheap pipeline call of each tiny model.  Anything in
# "extra_call_kwargs" must also be passed to the pipeline call (see helpers.pipelines.call_settings).
# 32x32 px and 64 text tokens keep a call near 0.03 s in bf16 and 0.07-0.1 s in
# fp16 on 2 CPU cores (fp16 convolutions have no fast CPU kernel: at 64x64 the
# VAE decoder alone took 0.22 s), so `make report` (96 configurations) stays
# within its time.
_TINY_TEXT = {"max_sequence_length": 64}
TINY_CALL_DEFAULTS: dict[str, dict[str, Any]] = {
    "pixart": dict(
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=4.5,
        extra_call_kwargs={"use_resolution_binning": False, **_TINY_TEXT},
    ),
    "flux-dev": dict(height=32, width=32, num_inference_steps=2, guidance_scale=3.5, extra_call_kwargs=_TINY_TEXT),
    "sd3": dict(height=32, width=32, num_inference_steps=2, guidance_scale=7.0, extra_call_kwargs=_TINY_TEXT),
}

WIDTH_MULTIPLE = 32

# Widths shared by the models.
_HIDDEN = 128  # transformer inner dim (4 heads x 32) and T5 d_model
_HEADS = 4
_HEAD_DIM = 32
_T5 = dict(d_model=128, d_kv=32, num_heads=4, d_ff=256, num_layers=2)
_CLIP_L = dict(hidden_size=64, intermediate_size=256, num_attention_heads=2, num_hidden_layers=2, projection_dim=64)
# SD3's two CLIPs are concatenated and zero-padded up to the T5 width, so their
# hidden sizes must add up to <= T5 d_model (768 + 1280 <= 4096 in the real one).
_SD3_CLIP_L = dict(hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2, projection_dim=32)
_SD3_CLIP_G = dict(hidden_size=64, intermediate_size=256, num_attention_heads=2, num_hidden_layers=2, projection_dim=64)
# 4 levels -> vae_scale_factor 8 like the real VAEs.  Narrow (16) at full
# resolution like the real ones (128 there): fp16 conv2d on CPU has no fast
# kernel (aten::_slow_conv2d_forward) and the full-resolution decoder convs
# dominate an fp16 call.  Only the mid-block attention (last width) is a Linear.
_VAE_BLOCKS = (16, 16, 32, 32)
_VAE_GROUPS = 16  # GroupNorm groups; divides every block width
_CLIP_MAX_LENGTH = 77  # CLIP max_position_embeddings and tokenizer model_max_length
_T5_MAX_LENGTH = 512  # T5 tokenizer model_max_length (relative positions: any length works)

# Component configs (kwargs of the model classes) for each tiny model.
TINY_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "pixart": {
        "transformer": dict(
            num_attention_heads=_HEADS,
            attention_head_dim=_HEAD_DIM,
            in_channels=4,
            out_channels=8,  # learned sigma, like PixArt-Sigma
            num_layers=2,
            cross_attention_dim=_HIDDEN,
            caption_channels=_T5["d_model"],
            sample_size=8,  # latent size -> 64 px default; see module docstring about resolution binning
            patch_size=2,
            norm_num_groups=32,
            use_additional_conditions=False,
        ),
        "text_encoder": dict(_T5),
        "vae": dict(latent_channels=4, scaling_factor=0.13025, shift_factor=None,
                    use_quant_conv=True, use_post_quant_conv=True),
    },
    "flux-dev": {
        "transformer": dict(
            patch_size=1,
            in_channels=64,  # 16 latent channels packed 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=_HEAD_DIM,
            num_attention_heads=_HEADS,
            joint_attention_dim=_T5["d_model"],
            pooled_projection_dim=_CLIP_L["hidden_size"],  # CLIPTextModel pooler_output
            guidance_embeds=True,
            axes_dims_rope=(8, 12, 12),  # sums to attention_head_dim
        ),
        "text_encoder": dict(_CLIP_L, hidden_act="quick_gelu"),
        "text_encoder_2": dict(_T5),
        "vae": dict(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                    use_quant_conv=False, use_post_quant_conv=False),
    },
    "sd3": {
        "transformer": dict(
            sample_size=8,  # latent size -> 64 px default
            patch_size=2,
            in_channels=16,
            num_layers=2,
            attention_head_dim=_HEAD_DIM,
            num_attention_heads=_HEADS,
            joint_attention_dim=_T5["d_model"],
            caption_projection_dim=_HIDDEN,
            pooled_projection_dim=_SD3_CLIP_L["projection_dim"] + _SD3_CLIP_G["projection_dim"],
            out_channels=16,
            pos_embed_max_size=16,  # max 16 patches -> 256 px
        ),
        "text_encoder": dict(_SD3_CLIP_L, hidden_act="quick_gelu"),
        "text_encoder_2": dict(_SD3_CLIP_G, hidden_act="gelu"),
        "text_encoder_3": dict(_T5),
        "vae": dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                    use_quant_conv=False, use_post_quant_conv=False),
    },
}

# Words the tokenizers know as whole tokens (everything else falls back to
# characters / bytes).  Fixed and ordered so the tokenizers are reproducible.
_WORDS = (
    "a an the of and in on with at by for to from is are this that it its "
    "photo picture painting drawing sketch render portrait landscape image art style "
    "cat dog bird horse fish lion tiger bear fox wolf rabbit owl cow sheep duck "
    "man woman person child girl boy people face eyes hair hand hands "
    "red green blue yellow orange purple pink black white gray brown gold silver "
    "big small tall tiny huge little old young new beautiful cute happy sad dark bright "
    "sky sun moon star stars cloud clouds rain snow sea ocean river lake beach mountain "
    "mountains forest tree trees flower flowers garden field grass city street house "
    "castle room window door table chair car train boat ship road bridge night day "
    "morning sunset sunrise light shadow water fire ice stone wood glass metal "
    "detailed realistic cinematic lighting high quality resolution sharp focus digital "
    "oil watercolor anime cartoon 3d 4k 8k hdr studio background foreground close up "
    "wearing holding sitting standing running flying walking looking playing eating "
    "astronaut riding robot dragon space planet food coffee cup book"
).split()


# --------------------------------------------------------------------------- widths
def check_width(name: str, value: int) -> None:
    """Raise ValueError if ``value`` (a Linear ``in_features`` width) is not a multiple of 32.

    quanto's bf16 int8 CPU path (``torch._weight_int8pack_mm``) segfaults on
    other widths, so every width that feeds a Linear layer must pass this.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: width must be an int, got {value!r}")
    if value <= 0 or value % WIDTH_MULTIPLE != 0:
        raise ValueError(f"{name}={value} is not a positive multiple of {WIDTH_MULTIPLE}")


def linear_widths(model: str, configs: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
    """Every width of ``model``'s configs that becomes the ``in_features`` of some Linear."""
    cfg = TINY_CONFIGS[model] if configs is None else configs
    w: dict[str, int] = {}
    t = cfg["transformer"]
    inner = t["num_attention_heads"] * t["attention_head_dim"]
    w["transformer.inner_dim"] = inner
    w["transformer.ffn_dim"] = 4 * inner
    w["transformer.timestep_proj"] = 256
    if model == "pixart":
        w["transformer.cross_attention_dim"] = t["cross_attention_dim"]
        w["transformer.caption_channels"] = t["caption_channels"]
    elif model == "flux-dev":
        w["transformer.in_channels"] = t["in_channels"]
        w["transformer.joint_attention_dim"] = t["joint_attention_dim"]
        w["transformer.pooled_projection_dim"] = t["pooled_projection_dim"]
        w["transformer.single_proj_out"] = inner + 4 * inner
    elif model == "sd3":
        w["transformer.joint_attention_dim"] = t["joint_attention_dim"]
        w["transformer.caption_projection_dim"] = t["caption_projection_dim"]
        w["transformer.pooled_projection_dim"] = t["pooled_projection_dim"]
    for comp, c in cfg.items():
        if "d_model" in c:  # T5
            w[f"{comp}.d_model"] = c["d_model"]
            w[f"{comp}.d_ff"] = c["d_ff"]
            w[f"{comp}.num_heads*d_kv"] = c["num_heads"] * c["d_kv"]
        elif "hidden_size" in c:  # CLIP
            w[f"{comp}.hidden_size"] = c["hidden_size"]
            w[f"{comp}.intermediate_size"] = c["intermediate_size"]
    w["vae.block_out_channels[-1]"] = _VAE_BLOCKS[-1]  # mid-block attention Linear
    return w


def _check_configs(model: str, configs: dict[str, dict[str, Any]]) -> None:
    for name, value in linear_widths(model, configs).items():
        check_width(f"{model}.{name}", value)
    if model == "sd3":
        clip_sum = configs["text_encoder"]["hidden_size"] + configs["text_encoder_2"]["hidden_size"]
        if clip_sum > configs["text_encoder_3"]["d_model"]:
            raise ValueError("sd3: CLIP hidden sizes must add up to <= T5 d_model (the pipeline pads them to it)")


def _check_modules(model: str, component: str, module) -> None:
    import torch

    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            check_width(f"{model}.{component}.{name}.in_features", m.in_features)


# ----------------------------------------------------------------------- tokenizers
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _learn_bpe_merges(words, max_merges: int) -> list[tuple[str, str]]:
    """Deterministic tiny BPE learner (CLIP style: last symbol carries '</w>')."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        a, b = best
        new_seqs = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new_seqs.append(out)
        seqs = new_seqs
    return merges


def _clip_tokenizer(vocab_size: int | None = None):
    """Byte-level BPE CLIP tokenizer: 256 bytes, 256 bytes+'</w>', merges, then the two specials.

    ``vocab_size`` (the random-full preset: CLIP's real 49408) pads the vocabulary
    with filler tokens before the specials, so ids span the real embedding table.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = _learn_bpe_merges([w for w in _WORDS if w.isascii()], max_merges=400)
    for a, b in merges:
        vocab_list.append(a + b)
    vocab_list = list(dict.fromkeys(vocab_list))
    if vocab_size is not None:
        vocab_list += [f"<|filler{i}|>" for i in range(vocab_size - 2 - len(vocab_list))]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        model_max_length=_CLIP_MAX_LENGTH,
    )
    return tok


def _t5_tokenizer(vocab_size: int | None = None):
    """Unigram T5 tokenizer: <pad>=0, </s>=1, <unk>=2, then pieces (no sentinel extra ids).

    ``vocab_size`` (the random-full preset: T5's real 32128) pads with filler pieces.
    """
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for i, w in enumerate(_WORDS):
        pieces.append(("▁" + w, -3.0 - 0.001 * i))
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()[]/&+*#%@_=<>"
    for c in alphabet:
        pieces.append(("▁" + c, -9.0))
    for c in alphabet:
        pieces.append((c, -10.0))
    seen: set[str] = set()
    uniq = []
    for p, s in pieces:
        if p not in seen:
            seen.add(p)
            uniq.append((p, s))
    if vocab_size is not None:
        uniq += [(f"<filler{i}>", -20.0) for i in range(vocab_size - len(uniq))]
    return T5Tokenizer(vocab=uniq, extra_ids=0, model_max_length=_T5_MAX_LENGTH)


# --------------------------------------------------------------------------- models
def _t5_encoder(cfg: dict[str, Any], vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=cfg["d_model"],
        d_kv=cfg["d_kv"],
        d_ff=cfg["d_ff"],
        num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"],
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",  # T5 v1.1 (xxl) as used by PixArt / FLUX / SD3
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _clip_encoder(cfg: dict[str, Any], tokenizer, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        projection_dim=cfg["projection_dim"],
        hidden_act=cfg["hidden_act"],
        max_position_embeddings=_CLIP_MAX_LENGTH,
        attention_dropout=0.0,
        dropout=0.0,
        layer_norm_eps=1e-5,
        # Real (non-legacy) ids: pooling picks the first eos token.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _vae(cfg: dict[str, Any]):
    from diffusers import AutoencoderKL

    n = len(_VAE_BLOCKS)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=_VAE_BLOCKS,
        layers_per_block=1,
        norm_num_groups=_VAE_GROUPS,
        sample_size=64,
        **cfg,
    ).eval()


def _seeded(seed: int, fn, *args, **kwargs):
    import torch

    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def scheduler(model: str):
    """The checkpoints' own schedulers (their scheduler_config.json values)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if model == "pixart":
        return DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
            prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
            lower_order_final=True, timestep_spacing="linspace",
        )  # fmt: skip
    if model == "flux-dev":
        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )  # fmt: skip
    if model == "sd3":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    raise ValueError(f"unknown model {model!r} for a scheduler; valid choices: {', '.join(TINY_MODELS)}")


def _build_pipeline(model: str, seed: int, configs: dict[str, dict[str, Any]]):
    import torch
    from diffusers import (
        FluxPipeline,
        FluxTransformer2DModel,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    t5_tok = _t5_tokenizer()
    clip_tok = _clip_tokenizer()
    t5_vocab = len(t5_tok)

    with torch.random.fork_rng(devices=[]):
        if model == "pixart":
            comps = dict(
                tokenizer=t5_tok,
                text_encoder=_seeded(seed, _t5_encoder, configs["text_encoder"], t5_vocab),
                transformer=_seeded(seed, PixArtTransformer2DModel, **configs["transformer"]),
                vae=_seeded(seed, _vae, configs["vae"]),
                scheduler=scheduler(model),
            )
            pipe = PixArtSigmaPipeline(**comps)
        elif model == "flux-dev":
            comps = dict(
                tokenizer=clip_tok,
                text_encoder=_seeded(seed, _clip_encoder, configs["text_encoder"], clip_tok, False),
                tokenizer_2=t5_tok,
                text_encoder_2=_seeded(seed, _t5_encoder, configs["text_encoder_2"], t5_vocab),
                transformer=_seeded(seed, FluxTransformer2DModel, **configs["transformer"]),
                vae=_seeded(seed, _vae, configs["vae"]),
                scheduler=scheduler(model),
            )
            pipe = FluxPipeline(**comps)
        elif model == "sd3":
            comps = dict(
                tokenizer=clip_tok,
                text_encoder=_seeded(seed, _clip_encoder, configs["text_encoder"], clip_tok, True),
                tokenizer_2=clip_tok,
                text_encoder_2=_seeded(seed, _clip_encoder, configs["text_encoder_2"], clip_tok, True),
                tokenizer_3=t5_tok,
                text_encoder_3=_seeded(seed, _t5_encoder, configs["text_encoder_3"], t5_vocab),
                transformer=_seeded(seed, SD3Transformer2DModel, **configs["transformer"]),
                vae=_seeded(seed, _vae, configs["vae"]),
                scheduler=scheduler(model),
            )
            pipe = StableDiffusion3Pipeline(**comps)
        else:  # pragma: no cover - guarded by build_tiny
            raise ValueError(model)

    for name, comp in comps.items():
        if isinstance(comp, torch.nn.Module):
            _check_modules(model, name, comp)
    return pipe


def build_tiny(model: str, path: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build the tiny random-weight pipeline for `model`, save_pretrained to `path`, return path.

    ``model`` is one of ``TINY_MODELS``.  The weights are fp32 safetensors; every
    component is built right after ``torch.manual_seed(seed)`` (the global RNG
    state is restored afterwards), so two builds with the same seed write
    identical files.  Load it with
    ``DiffusionPipeline.from_pretrained(path, torch_dtype=...)`` and call it with
    ``helpers.pipelines.call_settings``; for ``"pixart"`` the call needs
    ``use_resolution_binning=False`` (the tiny ``sample_size`` is not one of the
    binned resolutions, and the default ``True`` raises ``ValueError``).
    """
    if model not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {model!r}; expected one of {TINY_MODELS}")
    configs = TINY_CONFIGS[model]
    _check_configs(model, configs)
    pipe = _build_pipeline(model, seed, configs)
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out
