"""torchao and bitsandbytes beside quanto, and torch.compile."""

import pytest
import torch

from helpers import grid, params as P, report
from helpers.measure import tensor_bytes
from helpers.pipelines import load_pipeline
from helpers.params import Config
from helpers.quant import load_config


def _expected_linear_bytes(qtype: str, n: int, k: int, bias: bool) -> int:
    """torchao's layouts: int8 (Int8Tensor) holds an int8 weight, a float32 scale and an int8 zero
    point per output row; fp8 (Float8Tensor) a float8 weight and a float32 scale per row."""
    per_row = {"int8wo": 4 + 1, "int8dq": 4 + 1, "fp8wo": 4}[qtype]
    return n * k + n * per_row + (2 * n if bias else 0)


@pytest.mark.parametrize("qtype", ["int8wo", "int8dq", "fp8wo"])
@pytest.mark.parametrize("model", ["pixart", "sd3"])
def test_torchao_quantizes_every_linear_to_its_layout(tiny_paths, model, qtype):
    plain = load_pipeline(tiny_paths[model], "bf16", "cpu")
    shapes = {n: (m.out_features, m.in_features, m.bias is not None)
              for n, m in plain.transformer.named_modules() if isinstance(m, torch.nn.Linear)}  # fmt: skip
    config = load_config(model, "torchao", Config(qtype, False, False, 1), exclude=[], dtype="bf16")
    pipe = load_pipeline(tiny_paths[model], "bf16", "cpu", quantization_config=config)
    modules = dict(pipe.transformer.named_modules())
    for name, (n, k, bias) in shapes.items():
        assert tensor_bytes([modules[name]]) == _expected_linear_bytes(qtype, n, k, bias), name
    # about half of the bf16 weights: one byte a weight plus a few bytes a row
    weights_before = sum(2 * n * k for n, k, _ in shapes.values())
    weights_after = sum(_expected_linear_bytes(qtype, n, k, False) for n, k, _ in shapes.values())
    assert 0.5 < weights_after / weights_before < 0.55
    assert tensor_bytes([pipe.text_encoder]) == tensor_bytes([plain.text_encoder])  # quantize_te off


def test_every_backend_module_has_the_interface():
    from helpers.backends import BACKENDS

    for name, b in BACKENDS.items():
        assert b.NAME == name and b.QTYPES[0] == "none" and isinstance(b.PREDICTED, bool) and b.PACKAGE
        for hook in ("unsupported", "excludes", "preloaded", "load_time", "after_load", "on_meta"):
            assert callable(getattr(b, hook)), (name, hook)
        assert b.unsupported("none", "cpu") is None and isinstance(b.TEXT_ENCODERS, bool)


def test_torchao_grid_records_every_configuration_ok_or_skipped(tmp_path, tiny_paths):
    p = P.validate(dict(model="pixart", backend="torchao", quantize_te=[False, True], fuse_qkv=[False, True],
                        warmup=0, repeats=1, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    assert p["qtypes"] == ["none", "int8wo", "int8dq", "fp8wo", "fp8dq", "int4wo"]
    rows = grid.run_grid(p, progress=False)
    assert len(rows) == 24
    status = {(r.qtype, r.quantize_te, r.fuse_qkv): (r.status, r.error) for r in rows}
    for (qtype, _, _), (state, reason) in status.items():
        if qtype in ("fp8dq", "int4wo"):
            assert state == "skipped" and "CUDA" in reason
        else:
            assert state == "ok", reason
    ok = {(r.qtype, r.quantize_te): r for r in rows if r.status == "ok" and not r.fuse_qkv}
    assert ok[("int8wo", True)].memory_bytes < ok[("int8wo", False)].memory_bytes < ok[("none", False)].memory_bytes
    assert all(r.backend == "torchao" for r in rows) and grid.results_path(p).name == "pixart_bf16_torchao.jsonl"
    assert all(r.versions["torchao"] == "0.18.0" for r in rows if r.status == "ok"), "records name torchao's version"
    text = report.results_markdown([rows])
    assert "## Pixart - Batch Size: 1, Data Type: bf16 - Backend: torchao" in text
    assert "![pixart bf16 torchao Comparison](image_grids/pixart_bf16_torchao_comparison.png)" in text


def test_bitsandbytes_on_cpu_is_skipped_with_a_reason(tmp_path, tiny_paths):
    p = P.validate(dict(model="sd3", backend="bnb", quantize_te=[False], fuse_qkv=[False], warmup=0, repeats=1,
                        device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    rows = {r.qtype: r for r in grid.run_grid(p, progress=False)}
    assert rows["none"].status == "ok"
    for q in ("nf4", "int8"):
        assert rows[q].status == "skipped" and "bitsandbytes" in rows[q].error and "CUDA" in rows[q].error


def test_a_backend_refuses_names_it_does_not_have():
    with pytest.raises(ValueError, match="'int8' for backend 'torchao'; valid choices: none, int8wo, int8dq"):
        P.validate({"backend": "torchao", "qtypes": ["int8"]})
    with pytest.raises(ValueError, match="'fp8' for backend 'bnb'; valid choices: none, nf4, int8"):
        P.validate({"backend": "bnb", "qtypes": ["fp8"]})


def test_compile_records_its_first_call_apart_from_latency(tmp_path, tiny_paths):
    p = P.validate(dict(model="pixart", qtypes=["none"], quantize_te=[False], fuse_qkv=[False], compile="default",
                        warmup=1, repeats=2, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    (r,) = grid.run_grid(p, progress=False)
    if r.status == "error" and torch.backends.cpu.get_cpu_capability() == "AVX2":
        # Seen as a CPU without AVX-512 (ATEN_CPU_CAPABILITY=avx2): the compiled bf16 transformer returns NaN
        # (eager is finite, and so is each block compiled alone); the grid records that instead of a figure.
        assert r.error.endswith("final latents are NaN or inf"), r.error
        pytest.xfail("torch.compile's AVX2 code gives NaN for this bf16 transformer; recorded as an error")
    assert r.status == "ok", r.error
    assert r.compile == "default" and r.compile_s is not None
    # compiling takes seconds; a compiled tiny call takes milliseconds, and no sample includes the compile
    assert r.compile_s > 10 * r.latency_max_s


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend, qtype", [("bnb", "nf4"), ("bnb", "int8"), ("torchao", "int4wo"), ("torchao", "fp8dq")])
def test_cuda_backends_run(tmp_path, tiny_paths, backend, qtype):
    p = P.validate(dict(model="pixart", backend=backend, qtypes=["none", qtype], quantize_te=[False],
                        fuse_qkv=[False], warmup=0, repeats=1, device="cuda", out_dir=str(tmp_path)))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert rows[0].status == "ok" and rows[1].status in ("ok", "skipped"), rows[1].error


def test_gguf_refusals_are_recorded_with_the_reason_and_the_file_is_written_once(tiny_paths, tmp_path):
    """No single-file loader (PixArt), fused QKV and text encoders are ``skipped`` with why; the .gguf file is
    cached by checkpoint, dtype and qtype, so a second load does not write it again."""
    from helpers.backends import gguf

    p = P.validate(dict(model="pixart", backend="gguf", qtypes=["q8_0"], quantize_te=[False], fuse_qkv=[False],
                        warmup=0, repeats=1, out_dir=str(tmp_path / "pixart"), device="cpu"))  # fmt: skip
    (r,) = grid.run_grid(p, progress=False)
    assert r.status == "skipped" and "single-file loader for PixArtTransformer2DModel" in r.error
    p = P.validate(dict(model="flux-dev", backend="gguf", qtypes=["q4_0"], quantize_te=[False, True],
                        fuse_qkv=[False, True], warmup=0, repeats=1, out_dir=str(tmp_path / "flux"), device="cpu"))  # fmt: skip
    status = {(r.quantize_te, r.fuse_qkv): (r.status, r.error) for r in grid.run_grid(p, progress=False)}
    assert status[False, False] == ("ok", None)
    assert status[False, True][0] == "skipped" and status[False, True][1].startswith("fuse_qkv_projections: ")
    assert status[True, False] == ("skipped", gguf.TE_REASON)
    path = gguf.gguf_file(str(tiny_paths["flux-dev"]), "q4_0", torch.bfloat16, [])
    before = path.stat().st_mtime_ns
    gguf.preloaded(str(tiny_paths["flux-dev"]), "q4_0", torch.bfloat16, [])
    assert path.stat().st_mtime_ns == before


def test_layerwise_casting_stores_weights_in_float8_and_computes_in_the_pipeline_dtype(tiny_paths):
    from helpers.backends import layerwise

    pipe = load_pipeline(tiny_paths["sd3"], "fp16", "cpu")
    layerwise.after_load(pipe.transformer, "fp8e4m3", ["proj_out"], True, False)
    layerwise.after_load(pipe.text_encoder_3, "fp8e4m3", [], False, False)
    block = pipe.transformer.transformer_blocks[0]
    assert block.attn.to_q.weight.dtype == torch.float8_e4m3fn and block.norm1.linear.weight.dtype == torch.float16
    assert pipe.transformer.proj_out.weight.dtype == torch.float16  # excluded
    assert pipe.transformer.dtype == torch.float16  # diffusers reports the compute dtype
    t5 = pipe.text_encoder_3
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert t5.shared.weight.dtype == torch.float16  # embeddings stay: the pipeline reads the encoder's dtype there
