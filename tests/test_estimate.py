"""The memory estimate: exact on the tiny preset, the published sizes at full size."""

import json

import pytest

from helpers.cells import Cell, cell_of
from helpers import params as P
from helpers.components import components_from_folder
from helpers.estimate import estimate, predict
from helpers.measure import GB, pipeline_modules, tensor_bytes
from helpers.pipelines import load_pipeline
from helpers.quant import apply_cell, fuse_unsupported
from helpers.registry import MODELS


# Each model in one dtype per backend, the other dtype with the other backend: every model's load in fp16
# (T5's float32 `wo`, transformers' _keep_in_fp32_modules) and in bf16 is checked, at half the cost of both
# dtypes twice (about 25 s of make test).
# make test-fast checks the first model of each (PixArt-Sigma), make test all four (about 3 s each).
QUANTO_DTYPES = [pytest.param(m, ("bf16", "fp16")[i % 2], marks=[pytest.mark.slow] if i else [])
                 for i, m in enumerate(MODELS)]  # fmt: skip
TORCHAO_DTYPES = [pytest.param(m, ("fp16", "bf16")[i % 2], marks=[pytest.mark.slow] if i else [])
                  for i, m in enumerate(MODELS)]  # fmt: skip


def _predicted(model: str, rows: list[dict]) -> list[dict]:
    """The rows the estimate predicts; the others are configurations the grid refuses before loading (a
    transformer that cannot fuse QKV), which the estimate says it does not predict, with the same reason."""
    for row in rows:
        if row["memory_bytes"] is None:
            assert row["fuse_qkv"] and fuse_unsupported(model) in row["note"], row
    return [row for row in rows if row["memory_bytes"] is not None]


@pytest.mark.parametrize("model, dtype", QUANTO_DTYPES)
def test_tiny_prediction_equals_a_real_load_to_the_byte(tiny_paths, model, dtype):
    """Every configuration of the default grid: meta-device prediction == bytes of the loaded,
    fused and quantized pipeline. Any load-time behaviour not reproduced (dtype kept in
    float32, non-persistent buffers, tied weights, quanto's layouts) makes this fail.
    quanto quantizes after loading, so every configuration starts from a deep copy of one real load: the
    same tensors, byte for byte, as a load of its own, without its 0.2 s."""
    import copy

    params = P.validate({"model": model, "dtype": dtype})
    rows = estimate(model, dtype, params, components_from_folder(tiny_paths[model]))
    assert len(rows) == 16
    loaded = load_pipeline(tiny_paths[model], dtype, "cpu")
    for row in _predicted(model, rows):
        pipe = copy.deepcopy(loaded)
        apply_cell(pipe, model, cell_of(row), [])
        modules = pipeline_modules(pipe)
        assert {n: tensor_bytes([m]) for n, m in modules.items()} == row["components"], row
        assert tensor_bytes(modules.values()) == row["memory_bytes"]


def test_exclude_is_part_of_the_prediction(tiny_paths):
    params = P.validate({"model": "pixart", "qtypes": ["int8"], "quantize_te": [False], "fuse_qkv": [False]})
    components = components_from_folder(tiny_paths["pixart"])
    plain = estimate("pixart", "bf16", params, components)[0]
    kept = estimate("pixart", "bf16", {**params, "exclude": ["proj_out"]}, components)[0]
    pipe = load_pipeline(tiny_paths["pixart"], "bf16", "cpu")
    apply_cell(pipe, "pixart", Cell("int8", False, False, 1), ["proj_out"])
    assert kept["memory_bytes"] == tensor_bytes(pipeline_modules(pipe).values()) > plain["memory_bytes"]


def test_auraflow_transformer_is_what_diffusers_conversion_script_builds():
    """The script builds AuraFlowTransformer2DModel(num_mmdit_layers=4, num_single_dit_layers=32) from the
    original checkpoint and leaves every other argument at the class defaults: the shipped numbers must be
    exactly those defaults."""
    import inspect

    import diffusers

    from helpers.registry import model_spec

    library, cls, kwargs = model_spec("auraflow").full["transformer"]
    signature = inspect.signature(getattr(diffusers, cls).__init__).parameters
    defaults = {k: p.default for k, p in signature.items() if k != "self"}
    assert {**defaults, "num_mmdit_layers": 4, "num_single_dit_layers": 32} == kwargs


@pytest.mark.slow
def test_cli_prints_json_with_the_documented_keys(tiny_cache, tmp_path, capsys):
    """The CLI in this process (tests/test_faults.py runs `python -m helpers` as a user does): a fresh
    interpreter's imports would cost this test 8 of its 14 s."""
    from helpers.__main__ import main

    # Two configurations: each one's peaks take a fake call of its pipeline (about 1.5 s each here).
    (tmp_path / "p.yaml").write_text("qtypes: [none, int4]\nquantize_te: [true]\nfuse_qkv: [false]\n")
    capsys.readouterr()
    assert main(["estimate", "--model", "sd3", "--dtype", "fp16", "--preset", "tiny", "--format", "json",
                 "--params", str(tmp_path / "p.yaml")]) in (0, None)  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    keys = {"model", "dtype", "qtype", "quantize_te", "fuse_qkv", "batch_size", "memory_gb", "components", "offload",
            "loaded_reserved_gb", "peak_allocated_gb", "peak_reserved_gb", "peak_phase", "host_gb"}  # fmt: skip
    assert all(keys <= set(r) for r in rows)
    assert {r["qtype"] for r in rows} == {"none", "int4"}
    for r in rows:  # what the caching allocator reserves covers what it hands out, which covers the tensors
        assert r["peak_phase"] in ("encode", "denoise", "decode"), r
        assert r["loaded_reserved_gb"] >= r["memory_gb"] and r["peak_reserved_gb"] >= r["peak_allocated_gb"] > r["memory_gb"]


def test_prediction_is_cached_by_everything_it_depends_on(tiny_cache, monkeypatch):
    import helpers.estimate as estimate_module

    params = P.validate({"model": "pixart", "qtypes": ["none"], "quantize_te": [False], "fuse_qkv": [False],
                         "exclude": ["norm_out"]})  # fmt: skip (a grid no other test predicts)
    first = predict(params, preset="tiny")
    built = []
    real = estimate_module.build_on_meta
    monkeypatch.setattr(estimate_module, "build_on_meta", lambda *a, **k: built.append(a) or real(*a, **k))
    assert predict(params, preset="tiny") == first
    assert built == [], "a cached prediction built a component again"
    other = predict({**params, "qtypes": ["int8"]}, preset="tiny")
    assert [a[0].class_name for a in built] == ["PixArtTransformer2DModel"], "only the changed variant is built"
    assert other[0]["memory_bytes"] < first[0]["memory_bytes"]


@pytest.mark.parametrize("model, dtype", TORCHAO_DTYPES)
def test_tiny_torchao_prediction_equals_a_real_load_to_the_byte(tiny_paths, model, dtype):
    """torchao quantizes at load through diffusers' and transformers' configs; the estimate runs
    torchao's quantize_ on the meta device. Equal bytes for every CPU-runnable configuration. (int8dq's
    weights are int8wo's layout, checked per Linear in tests/test_backends.py.) A configuration that loads
    nothing quantized (none; a fused transformer, quantized after loading, without its encoders) starts from
    a deep copy of one unquantized load, the same tensors, as quanto's test does."""
    import copy

    from helpers.quant import load_config

    params = P.validate({"model": model, "backend": "torchao", "qtypes": ["none", "int8wo", "fp8wo"]})
    rows = estimate(model, dtype, params, components_from_folder(tiny_paths[model]))
    assert len(rows) == 12
    plain = load_pipeline(tiny_paths[model], dtype, "cpu")
    for row in _predicted(model, rows):
        config = load_config(model, "torchao", cell_of(row), [], dtype)
        pipe = copy.deepcopy(plain) if config is None else load_pipeline(tiny_paths[model], dtype, "cpu",
                                                                         quantization_config=config)  # fmt: skip
        apply_cell(pipe, model, cell_of(row), [], "torchao")
        modules = pipeline_modules(pipe)
        assert {n: tensor_bytes([m]) for n, m in modules.items()} == row["components"], row


def test_the_estimate_says_what_it_cannot_predict(tiny_paths):
    params = P.validate({"model": "pixart", "backend": "torchao", "qtypes": ["none", "int4wo"],
                         "quantize_te": [False], "fuse_qkv": [False]})  # fmt: skip
    rows = estimate("pixart", "bf16", params, components_from_folder(tiny_paths["pixart"]))
    assert rows[0]["memory_bytes"] > 0
    assert rows[1]["memory_bytes"] is None and rows[1]["note"].startswith("not predicted: ")
    # bitsandbytes is predicted (helpers/backends/bnb.py on_meta; tests/test_bnb_estimate.py checks its layers
    # against bitsandbytes' CPU kernels); fusing QKV it cannot run is a row's note, not a number.
    params = P.validate({"model": "pixart", "backend": "bnb", "qtypes": ["none", "nf4", "int8"],
                         "quantize_te": [True], "fuse_qkv": [False, True]})  # fmt: skip
    rows = {(r["qtype"], r["fuse_qkv"]): r for r in estimate("pixart", "bf16", params, components_from_folder(tiny_paths["pixart"]))}
    assert 0 < rows["nf4", False]["memory_bytes"] < rows["int8", False]["memory_bytes"] < rows["none", False]["memory_bytes"]
    assert rows["nf4", True]["memory_bytes"] is None and "cannot fuse QKV" in rows["nf4", True]["note"]


def _grid_against_estimate(tiny_paths, tmp_path, **overrides):
    """Run a small tiny grid; every record ``ok`` and its memory equal to the estimate's row, to the byte."""
    from helpers import grid

    p = P.validate(dict(fuse_qkv=[False], warmup=0, repeats=1, out_dir=str(tmp_path), device="cpu", **overrides))
    rows = grid.run_grid(p, progress=False)
    assert rows and all(r.status == "ok" for r in rows), [(r.qtype, r.error) for r in rows]
    rows_predicted = estimate(p.model, p.dtype, p, components_from_folder(tiny_paths[p.model]), phases=True)
    predicted = {cell_of(e): e["memory_bytes"] for e in rows_predicted}
    assert {cell_of(r): r.memory_bytes for r in rows} == predicted
    # Each phase of the fixed-seed call: the CPU's measured peak (memory_bytes + the live storages the call
    # made, measure.LiveBytes) equals the prediction on fake tensors, to the byte, for every configuration these
    # grids run: GGUF's dequantized blocks and layerwise casting's per-layer casts included (docs/phases.md).
    phases = {cell_of(e): {k: e["memory_bytes"] + v for k, v in e["phase_live_bytes"].items()}
              for e in rows_predicted if e["phase_live_bytes"]}  # fmt: skip
    assert all(e["note"].startswith("phases not predicted: ") for e in rows_predicted if not e["phase_live_bytes"])
    assert all(cell_of(e) in phases for e in rows_predicted), [e["note"] for e in rows_predicted]
    measured = {cell_of(r): {k: round(v * GB) for k, v in r.phase_peak_gb.items()} for r in rows}
    assert {c: measured[c] for c in phases} == phases
    return rows


@pytest.mark.slow
def test_per_encoder_and_mixed_qtypes_equal_their_estimates(tiny_paths, tmp_path):
    """SD3: encoders chosen one by one, and a qtype of their own (an unquantized transformer with int8
    encoders too); records carry quantize_te as given and the tables read 1+3 and NONE / TE INT8."""
    from helpers import report

    rows = _grid_against_estimate(tiny_paths, tmp_path, model="sd3", dtype="fp16", qtypes=["none", "fp8"],
                                  quantize_te=[False, ["text_encoder_3", "text_encoder"], True], te_qtypes=["int8"])
    assert len(rows) == 6
    by = {(r.qtype, str(r.quantize_te)): r for r in rows}
    assert by["none", "['text_encoder_3', 'text_encoder']"].te_qtype == "int8"
    assert by["none", "False"].te_qtype is None
    # quantizing encoders 1 and 3 saves less than all three, more than none
    assert by["fp8", "False"].memory_bytes > by["fp8", "['text_encoder_3', 'text_encoder']"].memory_bytes \
        > by["fp8", "True"].memory_bytes  # fmt: skip
    from helpers import figures

    figures.image_grid(rows, str(tmp_path))
    figures.tradeoff_chart(rows, str(tmp_path))
    assert figures.image_grid_path(str(tmp_path), "sd3_fp16").is_file()
    assert "TE 3+1" in report.recommended_text(rows) or "TE Yes" in report.recommended_text(rows)
    df = report.table(rows)
    assert ("NONE / TE INT8", "3+1") in set(zip(df["Quantization"], df["Quantize TE"]))
    assert ("FP8", "No") in set(zip(df["Quantization"], df["Quantize TE"]))


@pytest.mark.slow
def test_gguf_and_layerwise_casting_equal_their_estimates(tiny_paths, tmp_path):
    """GGUF: FLUX's transformer from a .gguf file (q8_0, q4_0) with fidelity to NONE; fp8 layerwise
    casting of SD3's transformer and text encoders. Measured memory == prediction, to the byte."""
    gguf = _grid_against_estimate(tiny_paths, tmp_path / "gguf", model="flux-dev", dtype="bf16", backend="gguf",
                                  qtypes=["none", "q8_0", "q4_0"], quantize_te=[False])  # fmt: skip
    by = {r.qtype: r for r in gguf}
    assert by["none"].memory_bytes > by["q8_0"].memory_bytes > by["q4_0"].memory_bytes
    assert all(by[q].ssim is not None and by[q].psnr_db > 20 for q in ("q8_0", "q4_0"))
    assert by["q8_0"].psnr_db > by["q4_0"].psnr_db  # more bits, closer to NONE
    lw = _grid_against_estimate(tiny_paths, tmp_path / "lw", model="sd3", dtype="fp16", backend="layerwise",
                                qtypes=["none", "fp8e4m3"], quantize_te=[False, True])  # fmt: skip
    by = {(r.qtype, r.quantize_te): r for r in lw}
    assert by["none", False].memory_bytes > by["fp8e4m3", False].memory_bytes > by["fp8e4m3", True].memory_bytes
    assert by["fp8e4m3", True].ssim is not None
