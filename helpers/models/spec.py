"""What a model module declares (``ModelSpec``), and the component numbers several models share.

Every architecture is ``(library, class name, config kwargs)``: what
``model_index.json`` and a component's ``config.json`` tell ``from_pretrained``.
Full-size numbers come from the checkpoints' configuration files (see each
model module and the project's shared configs' PROVENANCE.md); fields not given
take the class's own defaults. Tiny numbers are the same architectures at
widths that are multiples of 16 (``torch._weight_int8pack_mm``, quanto's bf16
int8 path on the CPU, segfaults on other ``in_features``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (library, class name, constructor kwargs): what helpers/components.py makes a Component of
ComponentSpec = tuple[str, str, dict]


@dataclass(frozen=True)
class ModelSpec:
    key: str  # the name in params, records and the CLI
    title: str  # as the model's authors write it
    hub_id: str
    pipeline_class: str  # name in ``diffusers``
    text_encoders: tuple[str, ...]  # attribute names on the pipeline
    # The full-size call (the pipeline's own ``__call__`` defaults unless a module says otherwise).
    steps: int
    height: int
    width: int
    guidance_scale: float
    full: dict[str, ComponentSpec]
    tiny: dict[str, ComponentSpec]
    tiny_call: dict  # height, width, num_inference_steps, guidance_scale, extra_call_kwargs
    scheduler: tuple[str, dict]  # diffusers class name, kwargs (the checkpoint's scheduler_config.json)
    call_kwargs: dict = field(default_factory=dict)  # every call of this pipeline
    sized_call_kwargs: dict = field(default_factory=dict)  # calls whose height or width is given
    # How the transformer's position table limits the image side: "per-side" (pos_embed_max_size patches
    # a side), "total" (pos_embed_max_size patches in all, a square), or None (no table, no limit).
    pos_embed: str | None = None
    # The most text tokens (``max_sequence_length``) the pipeline accepts, the same for every preset (the
    # pipeline class checks it, not the checkpoint); None: no limit (each module says why).
    max_text_tokens: int | None = None
    # The call argument the guidance value goes to: "guidance_scale" (CFG, or a guidance-distilled model's
    # embedded guidance), or another the pipeline names (Qwen-Image's true CFG is "true_cfg_scale").
    guidance_argument: str = "guidance_scale"
    # Sizes as their publishers state them: (component, submodule counted ("" for all of it), billions as
    # published, how far off the publisher's rounding allows (billions: 0.5 for "20 B", 0 for an exact count),
    # where it is stated). What is counted is what a checkpoint stores: parameters and persistent buffers (a
    # position table), a shared tensor once. tests/test_models.py checks each full-size component against it,
    # and the README's model table (``python -m helpers models --write``) shows both.
    published_sizes: tuple[tuple[str, str, float, float, str], ...] = ()


# ---------------------------------------------------------------- full-size components several models share
# T5 v1.1 XXL encoder (PixArt-Sigma, FLUX.1-dev, SD3).
T5_XXL = dict(
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
)  # fmt: skip
# CLIP ViT-L/14 text tower (FLUX: CLIPTextModel; SD3: with projection).
CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2,
)  # fmt: skip
VAE_BLOCKS = dict(
    block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)  # fmt: skip
# The SDXL VAE (PixArt-Sigma, AuraFlow).
SDXL_VAE = ("diffusers", "AutoencoderKL", dict(
    VAE_BLOCKS, latent_channels=4, sample_size=512, scaling_factor=0.13025, force_upcast=False,
))  # fmt: skip

# ---------------------------------------------------------------- tiny components several models share
TINY_HIDDEN = 128  # transformer inner dim (4 heads x 32) and T5 d_model
TINY_HEADS = 4
TINY_HEAD_DIM = 32
TINY_T5_VOCAB = 512  # the local T5 tokenizer's vocabulary, padded (helpers/tiny.py)
TINY_CLIP_VOCAB = 1024  # the local CLIP tokenizer's vocabulary, padded; its two specials are the last ids
TINY_TEXT = {"max_sequence_length": 64}
CLIP_MAX_LENGTH = 77

_T5_TINY = dict(
    vocab_size=TINY_T5_VOCAB, d_model=TINY_HIDDEN, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
    feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)  # fmt: skip
TINY_T5 = ("transformers", "T5EncoderModel", _T5_TINY)
TINY_UMT5 = ("transformers", "UMT5EncoderModel", _T5_TINY)


def tiny_clip(cls: str, hidden_size: int, intermediate_size: int, projection_dim: int, hidden_act: str) -> ComponentSpec:
    return ("transformers", cls, dict(
        vocab_size=TINY_CLIP_VOCAB, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=projection_dim, hidden_act=hidden_act,
        max_position_embeddings=CLIP_MAX_LENGTH, attention_dropout=0.0, dropout=0.0, layer_norm_eps=1e-5,
        bos_token_id=TINY_CLIP_VOCAB - 2, eos_token_id=TINY_CLIP_VOCAB - 1, pad_token_id=TINY_CLIP_VOCAB - 1,
    ))  # fmt: skip


def tiny_vae(cls: str = "AutoencoderKL", **kwargs) -> ComponentSpec:
    """Narrow at full resolution (16) like the real ones (128): fp16 conv2d on the CPU has no fast kernel.
    Only the mid-block attention (last width, 32) is a Linear. ``cls``: AutoencoderKL or a subclass of its
    layout (AutoencoderKLFlux2)."""
    return ("diffusers", cls, dict(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[16, 16, 32, 32], layers_per_block=1,
        norm_num_groups=16, sample_size=64, **kwargs,
    ))  # fmt: skip


def tiny_call(guidance_scale: float, **extra) -> dict:
    """32x32 px, 2 steps, 64 text tokens: a call near 0.03 s in bf16 on 2 CPU cores."""
    return dict(height=32, width=32, num_inference_steps=2, guidance_scale=guidance_scale,
                extra_call_kwargs={**TINY_TEXT, **extra})  # fmt: skip
