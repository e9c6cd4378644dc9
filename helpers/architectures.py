"""Full-size architectures of every component, as numbers (no weights).

Each entry is ``(library, class name, config kwargs)``: what ``model_index.json``
and a component's ``config.json`` tell ``from_pretrained``. Fields not given
take the class's own defaults, which match these checkpoints (checked by
``tests/test_estimate.py`` against the published parameter counts).

Where the numbers come from: the configuration files of the hub checkpoints
``PixArt-alpha/PixArt-Sigma-XL-2-1024-MS`` (transformer reconstructed from the
byte-verified 512-MS config; T5 and VAE from its sibling repo
``pixart_sigma_sdxlvae_T5_diffusers``), ``black-forest-labs/FLUX.1-dev`` and
``stabilityai/stable-diffusion-3-medium-diffusers``, as vendored by
stable-diffusion-webui-forge and cross-checked against sdnext (see the
project's shared configs' PROVENANCE.md).
"""

from __future__ import annotations

# T5 v1.1 XXL encoder: shared by all three pipelines.
_T5_XXL = dict(
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
)  # fmt: skip
# CLIP ViT-L/14 text tower (FLUX: CLIPTextModel; SD3: with projection).
_CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2,
)  # fmt: skip
# OpenCLIP ViT-bigG/14 text tower (SD3's text_encoder_2).
_CLIP_G = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
)  # fmt: skip
_VAE_BLOCKS = dict(
    block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)  # fmt: skip

FULL: dict[str, dict[str, tuple[str, str, dict]]] = {
    "pixart": {
        "transformer": ("diffusers", "PixArtTransformer2DModel", dict(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
            cross_attention_dim=1152, caption_channels=4096, sample_size=128, patch_size=2,
            interpolation_scale=2, use_additional_conditions=False,
        )),  # fmt: skip
        "text_encoder": ("transformers", "T5EncoderModel", _T5_XXL),
        "vae": ("diffusers", "AutoencoderKL", dict(
            _VAE_BLOCKS, latent_channels=4, sample_size=512, scaling_factor=0.13025, force_upcast=False,
        )),  # fmt: skip
    },
    "flux-dev": {
        "transformer": ("diffusers", "FluxTransformer2DModel", dict(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        )),  # fmt: skip
        "text_encoder": ("transformers", "CLIPTextModel", _CLIP_L),
        "text_encoder_2": ("transformers", "T5EncoderModel", _T5_XXL),
        "vae": ("diffusers", "AutoencoderKL", dict(
            _VAE_BLOCKS, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
        )),  # fmt: skip
    },
    "sd3": {
        "transformer": ("diffusers", "SD3Transformer2DModel", dict(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, pos_embed_max_size=192,
        )),  # fmt: skip
        "text_encoder": ("transformers", "CLIPTextModelWithProjection", _CLIP_L),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", _CLIP_G),
        "text_encoder_3": ("transformers", "T5EncoderModel", _T5_XXL),
        "vae": ("diffusers", "AutoencoderKL", dict(
            _VAE_BLOCKS, latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
            use_quant_conv=False, use_post_quant_conv=False,
        )),  # fmt: skip
    },
}
