"""torchao and bitsandbytes beside quanto, and torch.compile."""

import pytest
import torch

from helpers import grid, params as P, report
from helpers.measure import tensor_bytes
from helpers.pipelines import load_pipeline
from helpers.cells import Cell
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
    config = load_config(model, "torchao", Cell(qtype, False, False, 1), exclude=[], dtype="bf16")
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
        for hook in ("unsupported", "notes", "excludes", "files", "preloaded", "load_time", "after_load", "on_meta"):
            assert callable(getattr(b, hook)), (name, hook)
        assert b.unsupported("none", "cpu", True) is None and isinstance(b.TEXT_ENCODERS, bool)
        assert b.notes("none", "cuda") == [] and b.files(None, "none", torch.bfloat16, []) is None


@pytest.mark.slow
def test_torchao_grid_records_every_configuration_ok_or_skipped(tmp_path, tiny_paths):
    """The qtypes that run on the CPU, and fp8dq, which needs compute capability 8.9 (n/a here; the newer
    float8 and microscaling formats: tests/test_gates.py)."""
    qtypes = ["none", "int8wo", "int8dq", "fp8wo", "fp8dq", "int4wo"]
    p = P.validate(dict(model="pixart", backend="torchao", qtypes=qtypes, quantize_te=[False, True],
                        fuse_qkv=[False, True], warmup=0, repeats=1, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert len(rows) == 24
    status = {(r.qtype, r.quantize_te, r.fuse_qkv): (r.status, r.error) for r in rows}
    for (qtype, _, _), (state, reason) in status.items():
        if qtype == "fp8dq":
            assert state == "n/a" and "compute capability 8.9" in reason
        else:
            assert state == "ok", reason
    ok = {(r.qtype, r.quantize_te): r for r in rows if r.status == "ok" and not r.fuse_qkv}
    assert ok[("int8wo", True)].memory_bytes < ok[("int8wo", False)].memory_bytes < ok[("none", False)].memory_bytes
    assert all(r.backend == "torchao" for r in rows) and grid.results_path(p).name == "pixart_bf16_torchao.jsonl"
    assert all(r.versions["torchao"] == "0.18.0" for r in rows if r.status == "ok"), "records name torchao's version"
    text = report.results_markdown([rows])
    assert "## Pixart - Batch Size: 1, Data Type: bf16 - Backend: torchao" in text
    assert "![pixart bf16 torchao Comparison](image_grids/pixart_bf16_torchao_comparison.png)" in text


def test_bitsandbytes_on_cpu_is_na_with_a_reason(tmp_path, tiny_paths):
    p = P.validate(dict(model="sd3", backend="bnb", quantize_te=[False], fuse_qkv=[False], warmup=0, repeats=1,
                        device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    rows = {r.qtype: r for r in grid.run_grid(p, progress=False)}
    assert rows["none"].status == "ok"
    for q in ("nf4", "int8"):
        assert rows[q].status == "n/a" and "bitsandbytes" in rows[q].error and "need CUDA" in rows[q].error


def test_fused_qkv_is_refused_before_loading_where_diffusers_cannot_fuse_the_layers():
    """bitsandbytes' and GGUF's projections are integer data that fuse_qkv_projections cannot concatenate
    into a Linear; ``unsupported`` says so from the configuration alone. The text encoders' qtype is asked
    unfused: an unquantized fused transformer with quantized encoders runs."""
    from helpers.backends import bnb, gguf
    from helpers.quant import unsupported

    for backend, qtype, reason in (("bnb", "nf4", bnb.FUSE_REASON), ("bnb", "int8", bnb.FUSE_REASON),
                                   ("gguf", "q4_0", gguf.FUSE_REASON)):  # fmt: skip
        assert unsupported(backend, Cell(qtype, False, True, 1), "cuda") == reason
        assert reason.startswith(f"the {backend} backend cannot fuse QKV: ")
        assert unsupported(backend, Cell(qtype, False, False, 1), "cuda") is None
        assert unsupported(backend, Cell("none", False, True, 1), "cuda") is None
    assert unsupported("bnb", Cell("none", True, True, 1, "int8"), "cuda") is None
    assert "need CUDA" in unsupported("bnb", Cell("nf4", False, True, 1), "cpu")  # the device first


def test_torchao_int4wo_runs_on_the_cpu_after_loading_in_bf16(tiny_paths):
    """int4wo quantizes after loading, on the device: here torchao's CPU format (Int4OpaqueTensor), every
    Linear whose input width is a multiple of 128 (a group), half a byte a weight plus a bf16 scale and
    zero per group and row. fp16 is refused before anything loads; the record's note says what ran."""
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor

    from helpers.backends import torchao
    from helpers.quant import apply_cell

    with pytest.raises(NotImplementedError, match="torchao int4wo quantizes bfloat16 weights only"):
        load_config("pixart", "torchao", Cell("int4wo", False, False, 1), exclude=[], dtype="fp16")
    assert load_config("pixart", "torchao", Cell("int4wo", True, True, 1), exclude=[], dtype="bf16") is None
    assert torchao.unsupported("int4wo", "cpu", True) is None
    pipe = load_pipeline(tiny_paths["pixart"], "bf16", "cpu")
    shapes = {n: (m.out_features, m.in_features, m.bias is not None)
              for n, m in pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)}  # fmt: skip
    notes = apply_cell(pipe, "pixart", Cell("int4wo", False, False, 1), ["proj_out"], "torchao")
    assert notes == [torchao.INT4_NOTES["cpu"]]
    modules = dict(pipe.transformer.named_modules())
    quantized = 0
    for name, (n, k, bias) in shapes.items():
        weight = modules[name].weight
        if k % 128 == 0 and name != "proj_out":
            assert type(weight) is Int4OpaqueTensor, name
            expected = n * k // 2 + (k // 128) * n * 2 * 2
            quantized += 1
        else:
            assert type(weight) is torch.nn.Parameter and weight.dtype == torch.bfloat16, name
            expected = n * k * 2
        assert tensor_bytes([modules[name]]) == expected + (2 * n if bias else 0), name
    assert quantized >= 10
    with pytest.raises(NotImplementedError, match="CUDA or CPU kernel, not on 'meta'"):  # the estimate: not predicted
        torchao.on_meta(torch.nn.Linear(128, 8, device="meta", dtype=torch.bfloat16), "int4wo", [], True, False)


def test_torchao_int4_without_mslk_needs_cuda_to_pack(monkeypatch):
    """Why int4wo is tile_packed_to_4d on CUDA and another format on the CPU: torchao's default int4 format
    needs the mslk package, and torch has no CPU kernel for tile_packed_to_4d's packing (a CUDA device's
    capability simulated, so that torchao gets as far as packing)."""
    from torchao.quantization import Int4WeightOnlyConfig, quantize_

    from helpers.backends import torchao

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(ImportError, match="mslk"):
        quantize_(torch.nn.Sequential(torch.nn.Linear(256, 64, dtype=torch.bfloat16)), Int4WeightOnlyConfig())
    with pytest.raises(NotImplementedError, match="_convert_weight_to_int4pack"):
        quantize_(torch.nn.Sequential(torch.nn.Linear(256, 64, dtype=torch.bfloat16)), torchao.config("int4wo", "cuda"))
    assert torchao.unsupported("int4wo", "cuda", False) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "compute capability 8.0" in torchao.unsupported("int4wo", "cuda", False)


def test_a_backend_refuses_names_it_does_not_have():
    with pytest.raises(ValueError, match="'int8' for backend 'torchao'; valid choices: none, int8wo, int8dq"):
        P.validate({"backend": "torchao", "qtypes": ["int8"]})
    with pytest.raises(ValueError, match="'fp8' for backend 'bnb'; valid choices: none, nf4, int8"):
        P.validate({"backend": "bnb", "qtypes": ["fp8"]})


@pytest.mark.slow
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
    assert status[False, True] == ("skipped", gguf.FUSE_REASON)  # refused before loading
    assert status[True, False] == ("skipped", gguf.TE_REASON)
    path = gguf.gguf_file(str(tiny_paths["flux-dev"]), "q4_0", torch.bfloat16, [])
    before = path.stat().st_mtime_ns
    gguf.preloaded(str(tiny_paths["flux-dev"]), "q4_0", torch.bfloat16, [])
    assert path.stat().st_mtime_ns == before


def _ask_for_a_gguf_file(checkpoint: str, writes: str, barrier) -> None:
    """One process: ask for the q8_0 file when the other process does; each write of a .gguf file adds a
    line to ``writes`` and takes a second more, so the other process asks while it is being written."""
    import os
    import time

    from helpers.backends import gguf

    real = gguf.write

    def write(*args):
        with open(writes, "a") as f:
            f.write(f"{os.getpid()}\n")
        real(*args)
        time.sleep(1)

    gguf.write = write
    try:
        barrier.wait(timeout=120)
        gguf.gguf_file(checkpoint, "q8_0", torch.bfloat16, [])
    finally:
        gguf.write = real


@pytest.mark.slow
def test_two_processes_asking_for_one_gguf_file_write_it_once(tiny_paths, tmp_path, monkeypatch):
    """Ray runs each configuration in a fresh process: those asking for the same file at once wait for the
    first writer's lock (``<file>.lock``), then read its file. This process and a spawned one ask at once
    (without the lock both write). The driver's ``files`` hook writes the file before any configuration."""
    import multiprocessing

    from helpers.backends import gguf

    monkeypatch.setenv("DQB_CACHE", str(tmp_path))  # no .gguf there yet; the spawned process inherits it
    ctx = multiprocessing.get_context("spawn")
    barrier, writes = ctx.Barrier(2), tmp_path / "writes.txt"
    other = ctx.Process(target=_ask_for_a_gguf_file, args=(tiny_paths["flux-dev"], str(writes), barrier))
    other.start()
    _ask_for_a_gguf_file(tiny_paths["flux-dev"], str(writes), barrier)
    other.join(timeout=120)
    assert other.exitcode == 0
    assert len(writes.read_text().splitlines()) == 1, "both processes wrote the file"
    (path,) = (tmp_path / "gguf").glob("*.gguf")
    before = path.stat().st_mtime_ns
    gguf.files(tiny_paths["flux-dev"], "q8_0", torch.bfloat16, [])  # cached: not written again
    gguf.files(tiny_paths["pixart"], "q8_0", torch.bfloat16, [])  # no single-file loader: nothing to write
    assert path.stat().st_mtime_ns == before and list((tmp_path / "gguf").glob("*.gguf")) == [path]


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


def test_layerwise_casting_of_a_bf16_t5_encoder_runs(tiny_paths):
    """T5's feed-forward casts its input to ``wo``'s weight dtype before calling it: a float8 ``wo`` made the
    input float8 against a bf16 weight, an error record for every model's bf16 text encoders. ``wo`` stays."""
    from helpers.backends import layerwise

    pipe = load_pipeline(tiny_paths["pixart"], "bf16", "cpu")
    layerwise.after_load(pipe.text_encoder, "fp8e4m3", [], False, False)
    t5 = pipe.text_encoder
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16
    out = t5(torch.tensor([[3, 5, 7, 1]])).last_hidden_state
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_the_readme_backend_table_is_generated_from_the_backend_modules():
    """Per backend and qtype: bits, where it runs, what multiplies, whether the estimate predicts it; each
    module declares them for every qtype it has, and the README shows what they declare."""
    from pathlib import Path

    from helpers.backends import BACKENDS, markdown_table
    from helpers.parameters import with_table

    for name, b in BACKENDS.items():
        assert set(b.RUNS_ON) == set(b.KERNEL) == set(b.BITS) == set(b.QTYPES), name
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert with_table(readme, "backends", markdown_table()) == readme, "run: python -m helpers backends --write"
