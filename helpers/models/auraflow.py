"""AuraFlow (``fal/AuraFlow``): ``AuraFlowPipeline``, a UMT5 text encoder (Pile-T5-XL) and the SDXL VAE.

Full size, as reconstructed in the project's shared configs (``configs/auraflow``):
- transformer: diffusers' ``scripts/convert_aura_flow_to_diffusers.py`` builds
  ``AuraFlowTransformer2DModel(num_mmdit_layers=4, num_single_dit_layers=32)`` and leaves every other
  argument at the class defaults of diffusers' ``auraflow_transformer_2d.py``, which are these numbers
  (checked against the class signature in ``tests/test_estimate.py``). Unverified: no copy of the hub's
  config.json was found; ``pos_embed_max_size`` 1024 is v0.1's (32 x 32 patches, so at most 512 px a
  side), and later releases are reported to use 9216.
- text encoder: the encoder of EleutherAI's Pile-T5-XL (d_model 2048, d_ff 5120, 24 layers, 32 heads of
  64, vocabulary 32128, gated GELU) from ComfyUI's ``t5_pile_config_xl.json``; not byte-verified against
  the hub file.
- VAE: the SDXL VAE, PixArt-Sigma's.
- scheduler: flow matching with shift 1.73 (unverified).
"""

from .spec import SDXL_VAE, TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, TINY_UMT5, ModelSpec, tiny_call, tiny_vae

_PILE_T5_XL = dict(
    vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
    feed_forward_proj="gated-gelu", dense_act_fn="gelu_pytorch_tanh", is_gated_act=True,
    layer_norm_epsilon=1e-6, relative_attention_num_buckets=32, tie_word_embeddings=False,
    pad_token_id=1, eos_token_id=2, decoder_start_token_id=0,
)  # fmt: skip

SPEC = ModelSpec(
    key="auraflow",
    title="AuraFlow",
    hub_id="fal/AuraFlow",
    pipeline_class="AuraFlowPipeline",
    text_encoders=("text_encoder",),
    steps=50,
    height=512,  # the pipeline's default is 1024, more than v0.1's position table allows (see above)
    width=512,
    guidance_scale=3.5,
    full={
        "transformer": ("diffusers", "AuraFlowTransformer2DModel", dict(
            sample_size=64, patch_size=2, in_channels=4, num_mmdit_layers=4, num_single_dit_layers=32,
            attention_head_dim=256, num_attention_heads=12, joint_attention_dim=2048, caption_projection_dim=3072,
            out_channels=4, pos_embed_max_size=1024,
        )),  # fmt: skip
        "text_encoder": ("transformers", "UMT5EncoderModel", _PILE_T5_XL),
        "vae": SDXL_VAE,
    },
    tiny={
        "transformer": ("diffusers", "AuraFlowTransformer2DModel", dict(
            sample_size=8, patch_size=2, in_channels=4,  # the patch projection's in_features: 2 x 2 x 4 = 16
            num_mmdit_layers=1, num_single_dit_layers=1, attention_head_dim=TINY_HEAD_DIM,
            num_attention_heads=TINY_HEADS, joint_attention_dim=TINY_HIDDEN, caption_projection_dim=TINY_HIDDEN,
            out_channels=4, pos_embed_max_size=64,  # 8 x 8 patches -> at most 128 px
        )),  # fmt: skip
        "text_encoder": TINY_UMT5,
        "vae": tiny_vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, use_quant_conv=True,
                        use_post_quant_conv=True),  # fmt: skip
    },
    tiny_call=tiny_call(3.5),
    scheduler=("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=1.73)),
    pos_embed="total",
    # No limit: diffusers 0.42.1 AuraFlowPipeline checks none (check_inputs, pipelines/aura_flow/
    # pipeline_aura_flow.py:165), encode_prompt (:292-298) pads and truncates to exactly max_sequence_length
    # tokens, UMT5's relative position buckets take any length and the transformer has no text position table
    # (its text tokens only pass a Linear). The tiny pipeline ran 513, 600 and 2048 tokens; default 256.
    max_text_tokens=None,
    published_sizes=(
        ("transformer", "", 6.8, 0.05, "AuraFlow v0.1 announcement (fal, July 2024): 6.8 B parameters"),
        ("vae", "", 0.0837, 0.0005, "SDXL report (arXiv:2307.01952): the autoencoder, 83.7 M"),
    ),
)
