"""The random-full preset: full-size architectures, random weights, real costs."""

import pytest
import torch

from helpers import grid, params as P, report
from helpers.estimate import predict


@pytest.mark.slow
def test_random_full_pixart_builds_at_full_size_and_its_memory_equals_the_estimate(tmp_path):
    """PixArt-Sigma, the smallest (0.6B transformer + 4.7B T5-XXL, ~11 GB in bf16): built on the CPU,
    one denoising step at 16 px on 8 text tokens without classifier-free guidance; its measured memory_gb
    equals the estimate for the same configuration, to the byte.

    16 px, not 128: on a CPU without bf16 instructions a bf16 3x3 convolution runs at about 0.5 GFLOP/s
    (fp32: 100-200). There the VAE decode took over 5 minutes at 128 px and 10.8 s per call at 32 px; at
    16 px the whole test takes 28 s on such a CPU (a 2-core AMD EPYC with AVX2 only). The weights, hence
    the memory checked here, do not depend on the size.

    In this process (executor inline), not in a Ray worker as the preset's default: the Ray path is
    tests/test_ray.py's, and a cluster start plus a fresh worker's imports cost this test 14 of its 60 s."""
    p = P.validate(dict(model="pixart", preset="random-full", qtypes=["none"], quantize_te=[False],
                        fuse_qkv=[False], steps=1, height=16, width=16, guidance_scale=1.0, max_sequence_length=8, warmup=0, repeats=1, device="cpu",
                        executor="inline", out_dir=str(tmp_path)))  # fmt: skip
    (r,) = grid.run_grid(p, progress=False)
    assert r.status == "ok", r.error
    assert r.preset == "random-full" and r.checkpoint == "random-full:pixart"
    assert r.executor == "inline" and r.init_s > 0 and r.latency_s > 0 and r.steps == 1 and (r.height, r.width) == (16, 16)
    (expected,) = predict(p)
    assert r.memory_bytes == expected["memory_bytes"]
    assert r.memory_gb == pytest.approx(10.18, abs=0.01)  # 5.46B parameters in bf16, one float32 buffer
    assert "random weights: costs are real, images are noise" in report.results_markdown([[r]])


def test_random_full_refuses_a_checkpoint():
    with pytest.raises(ValueError, match="'checkpoint' must be null with preset 'random-full'"):
        P.validate({"preset": "random-full", "checkpoint": "/tmp"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_random_full_pixart_bf16_grid_on_cuda(tmp_path):
    p = P.validate(dict(model="pixart", preset="random-full", device="cuda", out_dir=str(tmp_path)))
    rows = grid.run_grid(p, progress=False)
    assert len(rows) == 16 and all(r.status == "ok" for r in rows), [r.error for r in rows]
