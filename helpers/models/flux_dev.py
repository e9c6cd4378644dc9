"""FLUX.1-dev (``black-forest-labs/FLUX.1-dev``): its configuration files, as vendored by
stable-diffusion-webui-forge and cross-checked against sdnext."""

from .spec import CLIP_L, T5_XXL, TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, TINY_T5, VAE_BLOCKS, ModelSpec, tiny_call
from .spec import tiny_clip, tiny_vae

_CLIP_HIDDEN = 64

SPEC = ModelSpec(
    key="flux-dev",
    title="FLUX.1-dev",
    hub_id="black-forest-labs/FLUX.1-dev",
    pipeline_class="FluxPipeline",
    text_encoders=("text_encoder", "text_encoder_2"),
    steps=28,
    height=1024,
    width=1024,
    guidance_scale=3.5,
    full={
        "transformer": ("diffusers", "FluxTransformer2DModel", dict(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        )),  # fmt: skip
        "text_encoder": ("transformers", "CLIPTextModel", CLIP_L),
        "text_encoder_2": ("transformers", "T5EncoderModel", T5_XXL),
        "vae": ("diffusers", "AutoencoderKL", dict(
            VAE_BLOCKS, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
        )),  # fmt: skip
    },
    tiny={
        "transformer": ("diffusers", "FluxTransformer2DModel", dict(
            patch_size=1, in_channels=64,  # 16 latent channels packed 2x2
            num_layers=1, num_single_layers=1, attention_head_dim=TINY_HEAD_DIM, num_attention_heads=TINY_HEADS,
            joint_attention_dim=TINY_HIDDEN, pooled_projection_dim=_CLIP_HIDDEN,  # CLIPTextModel pooler_output
            guidance_embeds=True, axes_dims_rope=[8, 12, 12],  # sums to attention_head_dim
        )),  # fmt: skip
        "text_encoder": tiny_clip("CLIPTextModel", _CLIP_HIDDEN, 256, 64, "quick_gelu"),
        "text_encoder_2": TINY_T5,
        "vae": tiny_vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                        use_post_quant_conv=False),  # fmt: skip
    },
    tiny_call=tiny_call(3.5),
    scheduler=("FlowMatchEulerDiscreteScheduler", dict(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )),  # fmt: skip
    # diffusers 0.42.1 pipelines/flux/pipeline_flux.py:504-505, FluxPipeline.check_inputs: "`max_sequence_length`
    # cannot be greater than 512" (a ValueError at the first call).
    max_text_tokens=512,
    published_sizes=(
        ("transformer", "", 12, 0.5, "FLUX.1 [dev] model card: a 12 billion parameter rectified flow transformer"),
        ("text_encoder", "", 0.123, 0.0012, "CLIP paper: the ViT-L/14 text tower, 123 M (0.6 M more with a projection)"),
        ("text_encoder_2", "", 4.7, 0.1, "SD3 paper (arXiv:2403.03206): the T5-XXL encoder, 4.7 B (truncated: 4.76 B)"),
        ("vae", "", 0.0837, 0.0005, "SDXL report (arXiv:2307.01952): the autoencoder, 83.7 M"),
    ),
)
