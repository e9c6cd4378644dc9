"""Stable Diffusion 3 medium (``stabilityai/stable-diffusion-3-medium-diffusers``): its configuration files,
as vendored by stable-diffusion-webui-forge and cross-checked against sdnext."""

from .spec import CLIP_L, T5_XXL, TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, TINY_T5, VAE_BLOCKS, ModelSpec, tiny_call
from .spec import tiny_clip, tiny_vae

# OpenCLIP ViT-bigG/14 text tower (text_encoder_2).
_CLIP_G = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
)  # fmt: skip
# The two CLIPs are concatenated and zero-padded up to the T5 width, so their hidden sizes must add up to
# <= T5's d_model (768 + 1280 <= 4096 in the real one; 32 + 64 <= 128 here).
_TINY_CLIP_L, _TINY_CLIP_G = 32, 64

SPEC = ModelSpec(
    key="sd3",
    title="Stable Diffusion 3 medium",
    hub_id="stabilityai/stable-diffusion-3-medium-diffusers",
    pipeline_class="StableDiffusion3Pipeline",
    text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"),
    steps=28,
    height=1024,
    width=1024,
    guidance_scale=7.0,
    full={
        "transformer": ("diffusers", "SD3Transformer2DModel", dict(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, pos_embed_max_size=192,
        )),  # fmt: skip
        "text_encoder": ("transformers", "CLIPTextModelWithProjection", CLIP_L),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", _CLIP_G),
        "text_encoder_3": ("transformers", "T5EncoderModel", T5_XXL),
        "vae": ("diffusers", "AutoencoderKL", dict(
            VAE_BLOCKS, latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
            use_quant_conv=False, use_post_quant_conv=False,
        )),  # fmt: skip
    },
    tiny={
        "transformer": ("diffusers", "SD3Transformer2DModel", dict(
            sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=TINY_HEAD_DIM,
            num_attention_heads=TINY_HEADS, joint_attention_dim=TINY_HIDDEN, caption_projection_dim=TINY_HIDDEN,
            pooled_projection_dim=_TINY_CLIP_L + _TINY_CLIP_G, out_channels=16,
            pos_embed_max_size=16,  # 16 patches a side -> at most 256 px
        )),  # fmt: skip
        "text_encoder": tiny_clip("CLIPTextModelWithProjection", _TINY_CLIP_L, 128, _TINY_CLIP_L, "quick_gelu"),
        "text_encoder_2": tiny_clip("CLIPTextModelWithProjection", _TINY_CLIP_G, 256, _TINY_CLIP_G, "gelu"),
        "text_encoder_3": TINY_T5,
        "vae": tiny_vae(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False),  # fmt: skip
    },
    tiny_call=tiny_call(7.0),
    scheduler=("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0)),
    pos_embed="per-side",
    # diffusers 0.42.1 pipelines/stable_diffusion_3/pipeline_stable_diffusion_3.py:630-631,
    # StableDiffusion3Pipeline.check_inputs: "`max_sequence_length` cannot be greater than 512".
    max_text_tokens=512,
    published_sizes=(
        ("transformer", "", 2, 0.5, "Stable Diffusion 3 Medium model card: a 2 billion parameter MMDiT"),
        ("text_encoder", "", 0.123, 0.0012, "CLIP paper: the ViT-L/14 text tower, 123 M (0.6 M more with a projection)"),
        ("text_encoder_2", "", 0.695, 0.0005, "OpenCLIP model table: ViT-bigG-14 text tower, 694.7 M"),
        ("text_encoder_3", "", 4.7, 0.1, "SD3 paper (arXiv:2403.03206): the T5-XXL encoder, 4.7 B (truncated: 4.76 B)"),
        ("vae", "", 0.0837, 0.0005, "SDXL report (arXiv:2307.01952): the autoencoder, 83.7 M"),
    ),
)
