"""Fidelity to the unquantized run, and the trade-off's recommended set."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import fidelity, grid
from helpers import params as P
from helpers.pareto import pareto_front
from helpers.registry import MODELS


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(20, 235, size=(32, 32, 3), dtype=np.uint8))


def test_a_configuration_against_itself_is_identical():
    image, lat = _image(), torch.randn(1, 4, 8, 8)
    out = fidelity.compare(image, image, lat, lat)
    assert out == {"psnr_db": None, "ssim": 1.0, "latent_rel_error": 0.0, "identical": True}


@pytest.mark.parametrize("delta", [1, 5, 16])
def test_a_known_perturbation_gives_the_psnr_of_the_formula(delta):
    ref = _image()
    shifted = Image.fromarray((np.asarray(ref).astype(np.int16) + delta).astype(np.uint8))  # no clipping: 20..250
    lat = torch.ones(10)
    out = fidelity.compare(shifted, ref, lat * 1.1, lat)
    assert out["psnr_db"] == pytest.approx(10 * math.log10(255**2 / delta**2))  # MSE = delta**2
    assert out["latent_rel_error"] == pytest.approx(0.1)
    assert not out["identical"] and out["ssim"] < 1


def test_summary_averages_prompts_and_is_identical_only_if_all_are():
    same = {"psnr_db": None, "ssim": 1.0, "latent_rel_error": 0.0, "identical": True}
    other = {"psnr_db": 30.0, "ssim": 0.9, "latent_rel_error": 0.2, "identical": False}
    assert fidelity.summarize([same, same])["identical"] is True
    mixed = fidelity.summarize([same, other])
    assert mixed == {"psnr_db": 30.0, "ssim": 0.95, "latent_rel_error": 0.1, "identical": False}


def test_pareto_front_on_a_hand_made_table_with_ties():
    points = [
        (1.0, 5.0),  # 0: least memory -> front
        (2.0, 2.0),  # 1: front
        (2.0, 2.0),  # 2: tie with 1 -> both stay
        (3.0, 1.0),  # 3: fastest -> front
        (3.0, 3.0),  # 4: dominated by 1
        (1.0, 6.0),  # 5: same memory as 0, slower -> dominated
        (4.0, 1.0),  # 6: same latency as 3, more memory -> dominated
    ]
    assert pareto_front(points) == [0, 1, 2, 3]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


PROMPTS = ["ghibli style, a fantasy landscape with castles", "a red car on a road", "two cats on a sofa"]


@pytest.mark.parametrize("model", [pytest.param(m, marks=[pytest.mark.slow] if i else [])  # make test-fast: PixArt
                                   for i, m in enumerate(MODELS)])  # fmt: skip
def test_int4_is_not_closer_to_none_than_int8(tmp_path, tiny_paths, model):
    p = P.validate(dict(model=model, qtypes=["none", "int8", "int4"], quantize_te=[False], fuse_qkv=[False],
                        prompts=PROMPTS, warmup=0, repeats=1, out_dir=str(tmp_path)))  # fmt: skip
    rows = {r.qtype: r for r in grid.run_grid(p, progress=False)}
    assert rows["none"].identical is True and len(rows["none"].fidelity) == 3
    int8, int4 = rows["int8"], rows["int4"]
    assert not int8.identical and not int4.identical
    for i, prompt in enumerate(PROMPTS):
        a, b = int8.fidelity[i], int4.fidelity[i]
        assert a["prompt"] == b["prompt"] == prompt
        assert b["latent_rel_error"] >= a["latent_rel_error"], prompt
    assert int4.psnr_db <= int8.psnr_db and int4.ssim <= int8.ssim
    # the timed prompt is the first; every prompt left an image
    assert int8.prompts == PROMPTS and (tmp_path / int8.image_path).is_file()
    assert (tmp_path / int8.image_path.replace(".png", "_p2.png")).is_file()


def test_clip_score_offline_is_skipped_with_one_line(tmp_path, tiny_paths, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    grid._clip_available.cache_clear()
    p = P.validate(dict(model="pixart", qtypes=["none", "int8"], quantize_te=[False], fuse_qkv=[False],
                        quality_metrics=["clip_score"], warmup=0, repeats=1, out_dir=str(tmp_path)))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert [r.status for r in rows] == ["ok", "ok"] and all(r.clip_score is None for r in rows)
    lines = [line for line in capsys.readouterr().out.splitlines() if "clip_score skipped" in line]
    assert len(lines) == 1
    grid._clip_available.cache_clear()  # the answer depended on HF_HUB_OFFLINE set above
