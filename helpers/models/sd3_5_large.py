"""Stable Diffusion 3.5 Large (``stabilityai/stable-diffusion-3.5-large``): SD3's pipeline and encoders, a
larger transformer with RMS-normed queries and keys.

Full size, from the project's shared configs (``configs/sd3.5-large``, see its PROVENANCE.md):
- transformer: reconstructed (no copy of the hub's config.json was found); its parameter count is exactly
  the hub's safetensors index (``total_size`` / 2 bytes = 8,146,280,768), which tests/test_models.py checks.
- text encoders and VAE: SD3 medium's (CLIP-L, OpenCLIP bigG, T5-XXL; the 16-channel VAE). The CLIP-L file
  was seen for 3.5; the other three are substituted from SD3 medium (same architectures, unverified for 3.5).
- the call: the model card's example, 28 steps, guidance 3.5, 1024 x 1024.
"""

from .sd3 import SPEC as _SD3
from .spec import TINY_HEAD_DIM, TINY_HEADS, TINY_HIDDEN, ModelSpec

_TINY_POOLED = _SD3.tiny["transformer"][2]["pooled_projection_dim"]

SPEC = ModelSpec(
    key="sd3.5-large",
    title="Stable Diffusion 3.5 Large",
    hub_id="stabilityai/stable-diffusion-3.5-large",
    pipeline_class="StableDiffusion3Pipeline",
    text_encoders=_SD3.text_encoders,
    steps=28,
    height=1024,
    width=1024,
    guidance_scale=3.5,
    full={
        **_SD3.full,
        "transformer": ("diffusers", "SD3Transformer2DModel", dict(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
            num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
            pooled_projection_dim=2048, pos_embed_max_size=192, qk_norm="rms_norm",
        )),  # fmt: skip
    },
    tiny={
        **_SD3.tiny,
        "transformer": ("diffusers", "SD3Transformer2DModel", dict(
            sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=TINY_HEAD_DIM,
            num_attention_heads=TINY_HEADS, joint_attention_dim=TINY_HIDDEN, caption_projection_dim=TINY_HIDDEN,
            pooled_projection_dim=_TINY_POOLED, out_channels=16, pos_embed_max_size=16, qk_norm="rms_norm",
        )),  # fmt: skip
    },
    tiny_call=_SD3.tiny_call,
    scheduler=_SD3.scheduler,
    pos_embed="per-side",
    max_text_tokens=_SD3.max_text_tokens,  # the same pipeline class, the same check
    published_sizes=(
        ("transformer", "", 8.1, 0.05, "model card: an MMDiT of 8.1 billion parameters"),
        ("transformer", "", 8.146280768, 0, "the hub's safetensors index: total_size 16,292,561,536 bytes in bf16, "
                                            "its 89,653,248-element position table included"),
        *_SD3.published_sizes[1:],  # the same encoders and VAE
    ),
)
