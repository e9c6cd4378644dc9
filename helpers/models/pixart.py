"""PixArt-Sigma XL 1024 (``PixArt-alpha/PixArt-Sigma-XL-2-1024-MS``).

Full size: the transformer reconstructed from the byte-verified 512-MS config (sample_size 128 for
1024 px, interpolation_scale 2); T5 and the SDXL VAE from the sibling repo
``pixart_sigma_sdxlvae_T5_diffusers``.
"""

from .spec import SDXL_VAE, T5_XXL, TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, TINY_T5, ModelSpec, tiny_call, tiny_vae

SPEC = ModelSpec(
    key="pixart",
    title="PixArt-Sigma",
    hub_id="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
    pipeline_class="PixArtSigmaPipeline",
    text_encoders=("text_encoder",),
    steps=20,
    height=1024,
    width=1024,
    guidance_scale=4.5,
    full={
        "transformer": ("diffusers", "PixArtTransformer2DModel", dict(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
            cross_attention_dim=1152, caption_channels=4096, sample_size=128, patch_size=2,
            interpolation_scale=2, use_additional_conditions=False,
        )),  # fmt: skip
        "text_encoder": ("transformers", "T5EncoderModel", T5_XXL),
        "vae": SDXL_VAE,
    },
    tiny={
        "transformer": ("diffusers", "PixArtTransformer2DModel", dict(
            num_attention_heads=TINY_HEADS, attention_head_dim=TINY_HEAD_DIM, in_channels=4,
            out_channels=8,  # learned sigma, like PixArt-Sigma
            num_layers=2, cross_attention_dim=TINY_HIDDEN, caption_channels=TINY_HIDDEN,
            sample_size=8, patch_size=2, norm_num_groups=32, use_additional_conditions=False,
        )),  # fmt: skip
        "text_encoder": TINY_T5,
        "vae": tiny_vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, use_quant_conv=True,
                        use_post_quant_conv=True),  # fmt: skip
    },
    # The pipeline's default use_resolution_binning=True raises for a sample_size that is not a real one.
    tiny_call=tiny_call(4.5, use_resolution_binning=False),
    scheduler=("DPMSolverMultistepScheduler", dict(
        num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
        prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
        lower_order_final=True, timestep_spacing="linspace",
    )),  # fmt: skip
    # The pipeline's default (True) needs ftfy and bs4 and falls back to False with a warning.
    call_kwargs={"clean_caption": False},
    # Else PixArt-Sigma generates at the nearest 1024-px aspect bin and resizes: the size asked for is measured.
    sized_call_kwargs={"use_resolution_binning": False},
    # No limit: diffusers 0.42.1 PixArtSigmaPipeline checks none (check_inputs, pipelines/pixart_alpha/
    # pipeline_pixart_sigma.py:401), encode_prompt (:297-304) pads and truncates the prompt to exactly
    # max_sequence_length tokens (the tokenizer's model_max_length only warns), T5's relative position buckets
    # take any length and the transformer has no text position table. The tiny pipeline ran 513, 600 and 2048
    # tokens; the model was trained at 300 (the pipeline's default), so more only costs memory and time.
    max_text_tokens=None,
    published_sizes=(
        ("transformer", "", 0.6, 0.05, "PixArt-Sigma paper (arXiv:2403.04692): 0.6 B parameters"),
        ("text_encoder", "", 4.7, 0.1, "SD3 paper (arXiv:2403.03206): the T5-XXL encoder, 4.7 B (truncated: 4.76 B)"),
        ("vae", "", 0.0837, 0.0005, "SDXL report (arXiv:2307.01952): the autoencoder, 83.7 M"),
    ),
)
