"""Qwen-Image (``Qwen/Qwen-Image``): ``QwenImagePipeline``, a 20 B MMDiT, the Qwen2.5-VL-7B vision-language
model as text encoder (its last hidden states, text only) and a Wan-2.1-style VAE.

Full size, from the project's shared configs (``configs/qwen-image``, see its PROVENANCE.md), each file a
verbatim copy of the hub's. The text encoder is the whole ``Qwen2_5_VLForConditionalGeneration``, vision
tower and output head included: the pipeline loads it so, though a text prompt runs neither.

Tiny: the same classes. The text encoder keeps a one-block vision tower, so its weights load and quantize as
the real one's do; no call runs it.

The call: the model card's example, 50 steps at 1328 x 1328 (its 1:1 size) with true classifier-free
guidance, ``true_cfg_scale`` 4.0 and a one-space negative prompt, so each step runs the transformer twice.

Its transformer's ``fuse_qkv_projections`` fuses nothing (its attention does not support QKV fusion): those
configurations are ``skipped``. Its rotary frequencies per image size are cached in the first call
(``_compute_video_freqs``, an lru_cache): 512 bytes on tiny, which the estimate's phases count and a later
call's CPU measurement does not see (docs/models.md).
"""

from .spec import TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, ModelSpec, tiny_call

_TINY_TEXT_HIDDEN = 64
# The VAE's latent normalisation (vae/config.json): 16 means and standard deviations, one per latent channel.
_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]  # fmt: skip
_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916]  # fmt: skip
_VAE = dict(z_dim=16, attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0,
            latents_mean=_LATENTS_MEAN, latents_std=_LATENTS_STD)  # fmt: skip
_MROPE = {"type": "default", "rope_type": "default"}


def _qwen2_5_vl(text: dict, vision: dict, rope_theta: float) -> dict:
    text = dict(text, hidden_act="silu", rms_norm_eps=1e-6, rope_theta=rope_theta, use_sliding_window=False,
                attention_dropout=0.0, tie_word_embeddings=False)  # fmt: skip
    ids = dict(bos_token_id=151643, eos_token_id=151645, image_token_id=151655, video_token_id=151656,
               vision_start_token_id=151652, vision_end_token_id=151653, vision_token_id=151654)  # fmt: skip
    if text["vocab_size"] < 151643:  # tiny: the special ids are the local tokenizer's, within its vocabulary
        last = text["vocab_size"] - 1
        ids = {k: last for k in ids}
    text.update(bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"])
    return dict(text_config=text, vision_config=dict(vision, hidden_act="silu", in_channels=3, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2),
                tie_word_embeddings=False, **ids)  # fmt: skip


SPEC = ModelSpec(
    key="qwen-image",
    title="Qwen-Image",
    hub_id="Qwen/Qwen-Image",
    pipeline_class="QwenImagePipeline",
    text_encoders=("text_encoder",),
    steps=50,
    height=1328,
    width=1328,
    guidance_scale=4.0,
    full={
        "transformer": ("diffusers", "QwenImageTransformer2DModel", dict(
            patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=[16, 56, 56],
        )),  # fmt: skip
        "text_encoder": ("transformers", "Qwen2_5_VLForConditionalGeneration", _qwen2_5_vl(
            dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                 rope_scaling=dict(_MROPE, mrope_section=[16, 24, 24])),
            dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                 fullatt_block_indexes=[7, 15, 23, 31], window_size=112),
            rope_theta=1000000.0,
        )),  # fmt: skip
        "vae": ("diffusers", "AutoencoderKLQwenImage", dict(_VAE, base_dim=96, dim_mult=[1, 2, 4, 4],
                                                             num_res_blocks=2)),  # fmt: skip
    },
    tiny={
        "transformer": ("diffusers", "QwenImageTransformer2DModel", dict(
            patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=TINY_HEAD_DIM,
            num_attention_heads=TINY_HEADS, joint_attention_dim=_TINY_TEXT_HIDDEN, guidance_embeds=False,
            axes_dims_rope=[8, 12, 12],  # sums to the head dim
        )),  # fmt: skip
        "text_encoder": ("transformers", "Qwen2_5_VLForConditionalGeneration", _qwen2_5_vl(
            dict(vocab_size=1024, hidden_size=_TINY_TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                 rope_scaling=dict(_MROPE, mrope_section=[4, 6, 6])),  # sums to half the head dim, 32
            dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_TINY_TEXT_HIDDEN,
                 fullatt_block_indexes=[0], window_size=112),
            rope_theta=1000000.0,
        )),  # fmt: skip
        "vae": ("diffusers", "AutoencoderKLQwenImage", dict(_VAE, base_dim=16, dim_mult=[1, 1, 2, 2],
                                                             num_res_blocks=1)),  # fmt: skip
    },
    tiny_call=tiny_call(4.0),
    scheduler=("FlowMatchEulerDiscreteScheduler", dict(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
        base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    )),  # fmt: skip
    call_kwargs={"negative_prompt": " "},
    guidance_argument="true_cfg_scale",
    # diffusers 0.42.1 pipelines/qwenimage/pipeline_qwenimage.py:329-330, QwenImagePipeline.check_inputs:
    # "`max_sequence_length` cannot be greater than 1024".
    max_text_tokens=1024,
    published_sizes=(
        ("transformer", "", 20, 0.5, "Qwen-Image technical report and model card: a 20 B MMDiT"),
        ("text_encoder", "model.language_model", 7, 0.5,
         "Qwen2.5-VL-7B: its language model; the module also holds the output head and the vision tower"),
    ),
)
