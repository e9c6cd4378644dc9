"""How far a configuration's output is from the unquantized run's: PSNR, SSIM, latent error.

PSNR and SSIM of the decoded images come from scikit-image; two bit-identical
images are reported as ``identical`` (PSNR ``None``), never as a division by zero.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch


def compare(image, reference, latents: torch.Tensor, reference_latents: torch.Tensor) -> dict:
    """One prompt: ``psnr_db``, ``ssim``, ``latent_rel_error`` (||x - ref|| / ||ref||) and ``identical``."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = np.asarray(image.convert("RGB"))
    b = np.asarray(reference.convert("RGB"))
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    identical = bool(np.array_equal(a, b))
    ref_norm = torch.linalg.vector_norm(reference_latents).item()
    diff_norm = torch.linalg.vector_norm(latents - reference_latents).item()
    return {
        "psnr_db": None if identical else float(peak_signal_noise_ratio(b, a, data_range=255)),
        "ssim": float(structural_similarity(b, a, channel_axis=-1, data_range=255)),
        "latent_rel_error": diff_norm / ref_norm if ref_norm else (0.0 if diff_norm == 0 else float("inf")),
        "identical": identical,
    }


def summarize(per_prompt: list[dict]) -> dict:
    """The mean over prompts. PSNR averages the prompts whose images differ; ``identical`` only if all are."""
    finite = [p["psnr_db"] for p in per_prompt if p["psnr_db"] is not None]
    return {
        "psnr_db": statistics.fmean(finite) if finite else None,
        "ssim": statistics.fmean(p["ssim"] for p in per_prompt),
        "latent_rel_error": statistics.fmean(p["latent_rel_error"] for p in per_prompt),
        "identical": all(p["identical"] for p in per_prompt),
    }


def clip_score(images: list, prompts: list[str], device: str) -> float:
    """torchmetrics' CLIPScore of the images against their prompts (downloads CLIP from the hub)."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    metric = CLIPScore(model_name_or_path=CLIP_MODEL).to(device)
    pixels = [torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1) for im in images]
    return float(metric(pixels, prompts).item())


CLIP_MODEL = "openai/clip-vit-large-patch14"
