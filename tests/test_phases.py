"""Peak memory by phase: measured on the CPU by live tensor storages, predicted on fake tensors, replayed
through the model of CUDA's caching allocator (helpers/estimate.py, "Phases")."""

import pytest

from helpers.cells import cell_of
from helpers import grid, params as P
from helpers.components import components_from_folder
from helpers.estimate import estimate
from helpers.measure import GB

# Not grids.SMALL: each test names its own qtypes, the text encoders are quantized too (the encode phase runs
# quantized encoders) and the grid runs inline on the CPU, in the process whose storages are counted.
SMALL = dict(quantize_te=[True], fuse_qkv=[False], warmup=0, repeats=1, device="cpu", executor="inline")


@pytest.mark.parametrize("model, dtype, backend, qtype", [
    ("pixart", "bf16", "quanto", "int8"),
    pytest.param("auraflow", "bf16", "torchao", "int8wo", marks=pytest.mark.slow),  # 4 s: make test only
])  # fmt: skip
def test_predicted_phase_peaks_equal_the_measured_ones(tiny_paths, tmp_path, model, dtype, backend, qtype):
    """PixArt-Sigma and AuraFlow, unquantized and quantized with the text encoders (the encode phase runs
    quantized encoders, the denoise phase a quantized transformer): every phase's measured peak on the CPU
    equals the prediction, to the byte (FLUX and SD3: tests/test_estimate.py's grids)."""
    p = P.validate(dict(model=model, dtype=dtype, backend=backend, qtypes=["none", qtype], out_dir=str(tmp_path), **SMALL))
    records = grid.run_grid(p, progress=False)
    assert [r.status for r in records] == ["ok"] * 2, [r.error for r in records]
    predicted = {cell_of(e): e for e in estimate(model, dtype, p, components_from_folder(tiny_paths[model]), phases=True)}
    for r in records:
        e = predicted[cell_of(r)]
        assert {k: round(v * GB) for k, v in r.phase_peak_gb.items()} == {
            k: e["memory_bytes"] + v for k, v in e["phase_live_bytes"].items()}, r.qtype  # fmt: skip
        assert r.peak_phase == max(r.phase_peak_gb, key=r.phase_peak_gb.get)
        assert set(r.phase_peak_gb) == {"encode", "denoise", "decode"} and r.phase_peak_reserved_gb is None


def test_offload_modes_are_predicted_with_their_weights_on_the_host(tiny_paths):
    """The estimate predicts an offloading configuration's GPU peak (the live tensors plus the weights the
    mode brings to the GPU) and the host memory that holds the weights; loading reserves nothing on the GPU.
    (On the CPU such a configuration is a skipped record: tests/test_offload.py.)"""
    modes = ["none", "model", "group-block", "group-leaf", "sequential"]
    p = P.validate(dict(model="pixart", qtypes=["none"], quantize_te=[False], fuse_qkv=[False], offload=modes))
    rows = {r["offload"]: r for r in estimate("pixart", "bf16", p, components_from_folder(tiny_paths["pixart"]), phases=True)}
    none = rows["none"]
    assert none["host_gb"] == 0 and none["loaded_reserved_gb"] >= none["memory_gb"]
    assert none["peak_reserved_gb"] >= none["peak_allocated_gb"] > none["memory_gb"]
    for mode in modes[1:]:
        row = rows[mode]
        assert row["host_gb"] == pytest.approx(row["memory_gb"]) and row["loaded_reserved_gb"] == 0, mode
        assert 0 < row["peak_allocated_gb"] < none["peak_allocated_gb"], mode
        assert row["peak_reserved_gb"] >= row["peak_allocated_gb"], mode
    assert rows["sequential"]["peak_allocated_gb"] <= rows["model"]["peak_allocated_gb"]


def test_bitsandbytes_phases_are_predicted(tiny_paths):
    """bitsandbytes runs on CUDA only here, so its records on this CPU are skipped; the estimate still predicts
    its phases from its own layers on fake tensors (their CPU forward makes the same storages:
    tests/test_bnb_estimate.py), and its loading quantizes weight by weight, so the unquantized weight of the
    largest layer passes through the device on top of what is loaded so far."""
    p = P.validate(dict(model="pixart", backend="bnb", qtypes=["none", "nf4", "int8"], quantize_te=[True], fuse_qkv=[False]))
    rows = {r["qtype"]: r for r in estimate("pixart", "bf16", p, components_from_folder(tiny_paths["pixart"]), phases=True)}
    for qtype, row in rows.items():
        assert "note" not in row and set(row["phase_live_bytes"]) == {"encode", "denoise", "decode"}, row.get("note")
        assert row["peak_reserved_gb"] >= row["peak_allocated_gb"] > row["memory_gb"], qtype
        assert row["loaded_reserved_gb"] >= row["memory_gb"], qtype
    assert rows["nf4"]["peak_allocated_gb"] < rows["int8"]["peak_allocated_gb"] < rows["none"]["peak_allocated_gb"]
