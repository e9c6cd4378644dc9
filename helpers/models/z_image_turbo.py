"""Z-Image-Turbo (``Tongyi-MAI/Z-Image-Turbo``): ``ZImagePipeline``, a single-stream 6 B transformer, a
Qwen3-4B text encoder (its second-to-last hidden states) and the FLUX.1 VAE.

Full size, from the project's shared configs (``configs/z-image-turbo``, see its PROVENANCE.md), each
file a verbatim copy of the hub's. ``model_index.json`` names ``Qwen3Model``, the backbone of the
``Qwen3ForCausalLM`` its ``text_encoder/config.json`` names (tied embeddings: no separate output head).

A few-step distilled model without classifier-free guidance: the model card's example runs 9 steps (the card
says they make 8 transformer passes; diffusers' docstring example gives 8) at guidance 0 and 1024 x 1024.

Its transformer cannot fuse QKV (no ``fuse_qkv_projections``): those configurations are ``skipped``. Its
rotary table is built in the first call and kept (``RopeEmbedder.freqs_cis``): 96 KiB on tiny, 384 KiB at full
size, which the estimate's phases count from the denoise phase on and a later call's CPU measurement does not
see (docs/models.md).
"""

from .spec import TINY_HEAD_DIM, VAE_BLOCKS, ModelSpec, tiny_call, tiny_vae

_TINY_TEXT_HIDDEN = 64

SPEC = ModelSpec(
    key="z-image-turbo",
    title="Z-Image-Turbo",
    hub_id="Tongyi-MAI/Z-Image-Turbo",
    pipeline_class="ZImagePipeline",
    text_encoders=("text_encoder",),
    steps=9,
    height=1024,
    width=1024,
    guidance_scale=0.0,
    full={
        "transformer": ("diffusers", "ZImageTransformer2DModel", dict(
            all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
            n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0,
            t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512],
        )),  # fmt: skip
        "text_encoder": ("transformers", "Qwen3Model", dict(
            vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, hidden_act="silu", max_position_embeddings=40960,
            rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=True, attention_bias=False,
            bos_token_id=151643, eos_token_id=151645,
        )),  # fmt: skip
        "vae": ("diffusers", "AutoencoderKL", dict(
            VAE_BLOCKS, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
        )),  # fmt: skip
    },
    tiny={
        "transformer": ("diffusers", "ZImageTransformer2DModel", dict(
            # 3 heads of 32: the feed-forward width is int(dim / 3 * 8), 256 here (128 would give 341)
            all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3 * TINY_HEAD_DIM, n_layers=1,
            n_refiner_layers=1, n_heads=3, n_kv_heads=3, qk_norm=True,
            cap_feat_dim=_TINY_TEXT_HIDDEN, axes_dims=[8, 12, 12],  # sums to the head dim, TINY_HEAD_DIM
            axes_lens=[1536, 512, 512],
        )),  # fmt: skip
        "text_encoder": ("transformers", "Qwen3Model", dict(
            vocab_size=1024, hidden_size=_TINY_TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=TINY_HEAD_DIM, hidden_act="silu",
            max_position_embeddings=2048, tie_word_embeddings=True, attention_bias=False,
        )),  # fmt: skip
        "vae": tiny_vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                        use_post_quant_conv=False),  # fmt: skip
    },
    tiny_call=tiny_call(0.0),
    scheduler=("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0,
                                                       use_dynamic_shifting=False)),  # fmt: skip
    # No pipeline check (diffusers 0.42.1 pipelines/z_image/pipeline_z_image.py: the tokenizer pads and
    # truncates to max_sequence_length); the transformer's text positions run along its first rope axis,
    # axes_lens[0] = 1536 long.
    max_text_tokens=None,
    published_sizes=(
        ("transformer", "", 6, 0.5, "Z-Image technical report and model card: a 6 B parameter model"),
        ("text_encoder", "", 4.0, 0.05, "Qwen3-4B model card: 4.0 B parameters"),
    ),
)
