"""SDNQ: every qtype on the CPU, measured against the estimate to the byte, with fidelity."""

import pytest

from helpers import grid, params as P
from helpers.backends import sdnq
from helpers.cells import cell_of
from helpers.components import components_from_folder
from helpers.estimate import estimate


@pytest.mark.parametrize("model", ["pixart", "flux-dev"])
def test_an_sdnq_grid_is_ok_with_fidelity_and_equals_its_estimate(tiny_paths, tmp_path, model):
    """Every SDNQ qtype runs on the CPU (SDNQ refuses no device): each configuration is one ``ok`` record with
    fidelity to NONE, and holds exactly the bytes the estimate predicts (sdnq_post_load_quant on the meta
    device). Each qtype with and without the text encoders quantized."""
    p = P.validate(dict(model=model, dtype="bf16", backend="sdnq", quantize_te=[False, True], fuse_qkv=[False],
                        warmup=0, repeats=1, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert [(r.qtype, r.quantize_te) for r in rows] == [(q, t) for q in sdnq.QTYPES for t in (False, True)]
    assert all(r.status == "ok" for r in rows), [(r.qtype, r.error) for r in rows if r.status != "ok"]
    predicted = {cell_of(e): e for e in estimate(model, "bf16", p, components_from_folder(tiny_paths[model]))}
    for r in rows:
        assert r.memory_bytes == predicted[cell_of(r)]["memory_bytes"], r.qtype
        if r.qtype != "none":
            assert r.ssim is not None or r.identical, r.qtype
            assert any("SDNQ_USE_TORCH_COMPILE=0" in n for n in r.notes), r.notes
    quantized = {r.qtype: r.memory_bytes for r in rows if not r.quantize_te}
    # fewer bits, fewer bytes; SVD's low-rank branch costs bytes on top of uint4; the encoders shrink too
    assert quantized["none"] > quantized["int8"] == quantized["float8_e4m3fn"] > quantized["int6"] > quantized["uint4"]
    assert quantized["uint4_svd"] > quantized["uint4"]
    assert all(r.memory_bytes < quantized[r.qtype] for r in rows if r.quantize_te and r.qtype != "none")


def test_sdnq_names_are_sdnqs_own():
    """The qtypes are SDNQ's weight-type names (sdnq.common.accepted_weight_dtypes), SVD apart."""
    from sdnq.common import accepted_weight_dtypes

    assert {q.removesuffix("_svd") for q in sdnq.QTYPES if q != "none"} <= set(accepted_weight_dtypes)
    assert set(sdnq.MATMUL) <= {"int8", "float8_e4m3fn"}
