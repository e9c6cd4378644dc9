"""FLUX.2-dev (``black-forest-labs/FLUX.2-dev``): ``Flux2Pipeline``, a 32 B transformer, Mistral Small 3.x
24 B (a vision-language model) as text encoder and a 32-channel VAE.

Full size, from the project's shared configs (``configs/flux2-dev``, see its PROVENANCE.md):
- transformer: reconstructed from diffusers' conversion script (``scripts/convert_flux2_to_diffusers.py``)
  and code copies of the hub's file; 32.22 B parameters.
- text encoder: ``Mistral3ForConditionalGeneration`` from a copy embedded in musubi-tuner (not
  byte-verified). The pipeline stacks its hidden states after layers 10, 20 and 30, so the transformer's
  ``joint_attention_dim`` is 3 x 5120. Vision tower and output head are loaded and unused for text.
- VAE and scheduler: FLUX.2-klein's re-saves of FLUX.2-dev's (architecture verified, metadata not).

Tiny: the same classes. The text encoder has 3 layers and the tiny call stacks all three
(``text_encoder_out_layers`` (1, 2, 3)); its one-layer vision tower loads and quantizes, no call runs it.
The hub's tokenizer is a ``PixtralProcessor``, whose image half needs torchvision; the tiny pipeline saves
the tokenizer alone (helpers/tiny.py says why).

The call: 50 steps, guidance 4.0 (the pipeline's defaults, and BFL's reference settings for dev), 1024 x 1024.
"""

from .spec import TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, ModelSpec, tiny_call, tiny_vae

_TINY_TEXT_HIDDEN = 64
_TINY_TEXT_LAYERS = 3


def _mistral3(text: dict, vision: dict) -> dict:
    return dict(
        text_config=dict(text, model_type="mistral", hidden_act="silu", attention_dropout=0.0, sliding_window=None),
        vision_config=dict(vision, model_type="pixtral", hidden_act="silu", num_channels=3, patch_size=14,
                           rope_theta=10000.0, attention_dropout=0.0),
        image_token_index=10, multimodal_projector_bias=False, projector_hidden_act="gelu", spatial_merge_size=2,
        vision_feature_layer=-1,
        # Mistral Small's output head is its own tensor (24.0 B parameters with it). The config file says nothing,
        # and transformers 5.23's Mistral3Config defaults to tying; from_pretrained then finds lm_head.weight and
        # embed_tokens both in the checkpoint, different, and does not tie them (modeling_utils.py, tie_weights:
        # "so we will NOT tie them"). False here is what that load ends with.
        tie_word_embeddings=False,
    )  # fmt: skip


SPEC = ModelSpec(
    key="flux2-dev",
    title="FLUX.2-dev",
    hub_id="black-forest-labs/FLUX.2-dev",
    pipeline_class="Flux2Pipeline",
    text_encoders=("text_encoder",),
    steps=50,
    height=1024,
    width=1024,
    guidance_scale=4.0,
    full={
        "transformer": ("diffusers", "Flux2Transformer2DModel", dict(
            patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
            num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256, mlp_ratio=3.0,
            axes_dims_rope=[32, 32, 32, 32], rope_theta=2000, eps=1e-6, guidance_embeds=True,
        )),  # fmt: skip
        "text_encoder": ("transformers", "Mistral3ForConditionalGeneration", _mistral3(
            dict(vocab_size=131072, hidden_size=5120, intermediate_size=32768, num_hidden_layers=40,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
                 rope_theta=1000000000.0),
            dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, head_dim=64,
                 image_size=1540),
        )),  # fmt: skip
        "vae": ("diffusers", "AutoencoderKLFlux2", dict(
            block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=32, norm_num_groups=32,
            sample_size=1024, use_quant_conv=True, use_post_quant_conv=True, patch_size=[2, 2],
            batch_norm_eps=1e-4, batch_norm_momentum=0.1,  # the file's force_upcast: not an AutoencoderKLFlux2 argument
        )),  # fmt: skip
    },
    tiny={
        "transformer": ("diffusers", "Flux2Transformer2DModel", dict(
            patch_size=1, in_channels=128,  # 32 latent channels packed 2 x 2
            num_layers=1, num_single_layers=1, attention_head_dim=TINY_HEAD_DIM, num_attention_heads=TINY_HEADS,
            joint_attention_dim=_TINY_TEXT_LAYERS * _TINY_TEXT_HIDDEN, timestep_guidance_channels=32,
            axes_dims_rope=[8, 8, 8, 8], guidance_embeds=True,
        )),  # fmt: skip
        "text_encoder": ("transformers", "Mistral3ForConditionalGeneration", _mistral3(
            dict(vocab_size=1024, hidden_size=_TINY_TEXT_HIDDEN, intermediate_size=128,
                 num_hidden_layers=_TINY_TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=TINY_HEAD_DIM,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=1000000000.0),
            dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
                 image_size=56),
        )),  # fmt: skip
        "vae": tiny_vae("AutoencoderKLFlux2", latent_channels=32, use_quant_conv=True, use_post_quant_conv=True,
                        patch_size=[2, 2]),  # fmt: skip
    },
    tiny_call=tiny_call(4.0, text_encoder_out_layers=(1, 2, 3)),
    scheduler=("FlowMatchEulerDiscreteScheduler", dict(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential",
    )),  # fmt: skip
    # No pipeline check (diffusers 0.42.1 pipelines/flux2/pipeline_flux2.py: the processor pads and truncates
    # to max_sequence_length); Mistral's rotary positions reach 131072 and the transformer's text positions
    # are rope coordinates without a table.
    max_text_tokens=None,
    published_sizes=(
        ("transformer", "", 32, 0.5, "BFL's FLUX.2 announcement and model card: a 32 B parameter transformer"),
        ("text_encoder", "", 24, 0.5, "Mistral Small 3.1 / 3.2: 24 B parameters"),
    ),
)
