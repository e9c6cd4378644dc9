"""Offloading as an axis of the grid (issue 23): validated first, skipped on the CPU with one reason, refused
before loading where a library cannot run it (decided here for CUDA, as tests/test_gpu_paths.py does), and
invisible to every identity and file name of a configuration that does not offload.

Checked in the libraries' source and left allowed (no refusal): unquantized pipelines in every mode;
bitsandbytes nf4 in every mode and int8 with model offload (with transformers > 4.58.0 and bitsandbytes >= 0.48.0:
Linear8bitLt.to moves its state) and sequential offload (accelerate's set_module_tensor_to_device special-cases
Params4bit / Int8Params; not run on a GPU here); torchao's other qtypes in every mode
(diffusers' group offloading swaps torchao tensors whole, accelerate moves them with .to); GGUF with model and
group offload (GGUFParameter keeps its quant_type through .data and .to); layerwise casting in every mode
(plain float8 parameters)."""

import pytest

from helpers import grid, offload, outputs, quant, records
from helpers.backends import bnb, quanto, torchao
from helpers import params as P
from helpers.cells import Cell, cell_of, cells, reference_of

MODES = ["none", "model", "group-block", "group-leaf", "sequential"]


def test_an_unknown_offload_mode_is_refused_before_anything_loads():
    with pytest.raises(ValueError) as e:
        P.validate({"offload": ["none", "disk"]})
    assert str(e.value) == ("parameter 'offload': unknown mode 'disk'; valid choices: none, model, group-block, "
                            "group-leaf, sequential")  # fmt: skip
    with pytest.raises(ValueError, match=r"^parameter 'offload' must be list of str, got 'model'$"):
        P.validate({"offload": "model"})
    with pytest.raises(ValueError, match="parameter 'offload' is empty"):
        P.validate({"offload": []})
    with pytest.raises(ValueError, match="parameter 'offload' has duplicates"):
        P.validate({"offload": ["model", "model"]})
    assert P.validate({}).offload == ["none"] and P.validate({"offload": MODES}).offload == MODES


def test_the_grid_iterates_offload_and_names_it_only_when_not_none():
    p = P.validate({"qtypes": ["none", "int8"], "quantize_te": [False], "fuse_qkv": [False], "offload": MODES})
    grid_ = cells(p)
    assert [(c.qtype, c.offload) for c in grid_] == [(q, m) for q in ("none", "int8") for m in MODES]
    assert grid_[0].slug == "none_qte0_fuse0_bs1" and grid_[1].slug == "none_qte0_fuse0_bs1_offload-model"
    # the reference of every one of them: unquantized and not offloaded
    assert {reference_of(c) for c in grid_} == {Cell("none", False, False, 1)}
    assert cell_of({"qtype": "int8", "quantize_te": False, "fuse_qkv": False, "batch_size": 1}).offload == "none"
    assert cell_of({"qtype": "int8", "quantize_te": False, "fuse_qkv": False, "batch_size": 1,
                        "offload": "sequential"}) == Cell("int8", False, False, 1, None, "sequential")  # fmt: skip


def test_on_the_cpu_every_offloading_configuration_is_skipped_with_one_reason(tmp_path):
    p = P.validate(dict(model="pixart", qtypes=["none", "int8"], quantize_te=[False], fuse_qkv=[False], offload=MODES,
                        warmup=0, repeats=1, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert [(r.qtype, r.offload) for r in rows] == [(q, m) for q in ("none", "int8") for m in MODES]
    for r in rows:
        if r.offload == "none":
            assert r.status == "ok", r.error
        else:
            assert (r.status, r.error) == ("n/a", "offloading needs an accelerator (CUDA here)")
            assert r.load_s is None, "refused before loading"
    int8 = rows[MODES.index("none") + len(MODES)]
    assert int8.ssim is not None, "int8 is compared with the unquantized, unoffloaded run"
    assert not any("offload" in name for r in rows for name in r.image_paths)
    back = records.read(grid.results_path(p))
    assert [(r.offload, r.status) for r in back] == [(r.offload, r.status) for r in records.latest(back)]
    assert {r.offload for r in back} == set(MODES)
    assert grid.run_grid(p, progress=False) == rows, "a rerun finds every configuration, skipped ones included"


def _decide(backend, qtype, mode, te=False, te_qtype=None, compile_mode=False):
    return quant.unsupported(backend, Cell(qtype, te, False, 1, te_qtype, mode), "cuda", compile_mode)


def test_combinations_a_library_cannot_run_are_refused_before_loading_on_cuda(monkeypatch):
    import torch
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    monkeypatch.setattr(ext, "CUDA_HOME", "/usr/local/cuda")  # quanto int4 on CUDA needs one (its own refusal)
    refused = {
        ("quanto", "int8", "sequential"): "accelerate's set_module_tensor_to_device",
        ("quanto", "int4", "sequential"): "WeightQBitsTensor need (qtype, axis",
        ("quanto", "int8", "group-block"): "keeps the old _data and _scale, on the CPU",
        ("quanto", "fp8", "group-leaf"): "ModuleGroup._transfer_tensor_to_device",
        ("quanto", "fp8", "model"): "picks MarlinF8QBytesTensor",
        ("bnb", "int8", "group-block"): "every layer's 8-bit weight stays on the GPU",
        ("bnb", "int8", "group-leaf"): "Linear8bitLt keeps its 8-bit weight in state.CB",
        ("gguf", "q8_0", "sequential"): "GGML_QUANT_SIZES[None]",
        ("gguf", "q4_0", "sequential"): "raises KeyError",
        ("torchao", "int4wo", "model"): "For CPU device only",
        ("torchao", "int4wo", "group-leaf"): "Int4OpaqueTensor",
    }
    for (backend, qtype, mode), words in refused.items():
        reason = _decide(backend, qtype, mode)
        assert reason and words in reason, (backend, qtype, mode, reason)
        assert reason.startswith({"bnb": "bitsandbytes"}.get(backend, backend)), reason
    # the text encoders' qtype counts too
    assert _decide("quanto", "none", "sequential", te=True, te_qtype="int8") == quanto.OFFLOAD_SEQUENTIAL
    assert _decide("quanto", "none", "model", te=("text_encoder",), te_qtype="fp8") == quanto.OFFLOAD_FP8_MODEL
    assert _decide("torchao", "int8wo", "model", compile_mode="default") == torchao.OFFLOAD_MODEL_COMPILE
    allowed = [("quanto", "int8", "model"), ("quanto", "int4", "model"), ("gguf", "q8_0", "model"),
               ("gguf", "q8_0", "group-block"), ("gguf", "q4_1", "group-leaf"), ("layerwise", "fp8e4m3", "sequential"),
               ("layerwise", "fp8e5m2", "group-leaf"), ("torchao", "int8wo", "sequential"),
               ("torchao", "fp8wo", "group-block"), ("torchao", "int8dq", "model"), ("bnb", "nf4", "model"),
               ("bnb", "nf4", "sequential"), ("bnb", "nf4", "group-block"), ("bnb", "int8", "sequential")]  # fmt: skip
    for backend, qtype, mode in allowed:
        assert _decide(backend, qtype, mode) is None, (backend, qtype, mode)
    for backend in P.BACKEND_QTYPES:  # unquantized: the libraries' plain path, every mode
        for mode in MODES:
            assert _decide(backend, "none", mode) is None, (backend, mode)
    # quanto fp8 picks Marlin on compute capability 8.0 or newer only
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert _decide("quanto", "fp8", "model") is None


def test_bitsandbytes_int8_with_model_offload_needs_the_versions_that_move_8_bit_weights(monkeypatch):
    """diffusers issue #10653: older, enable_model_cpu_offload skips the 8-bit component's hook and its
    .to('cpu') leaves it on the GPU. The installed versions move it, so it is measured."""
    assert _decide("bnb", "int8", "model") is None
    installed = {"transformers": "4.57.1", "bitsandbytes": "0.50.2"}
    monkeypatch.setattr(bnb, "_version", installed.get)
    reason = _decide("bnb", "int8", "model")
    assert reason.startswith("bitsandbytes int8 with model offload: diffusers' enable_model_cpu_offload skips")
    assert "installed: transformers 4.57.1, bitsandbytes 0.50.2; diffusers issue #10653" in reason
    assert _decide("bnb", "nf4", "model", te=True, te_qtype="int8") == reason, "an 8-bit text encoder too"
    assert _decide("bnb", "nf4", "model") is None and _decide("bnb", "int8", "sequential") is None
    installed.update(transformers="4.59.0", bitsandbytes="0.47.0")
    assert "bitsandbytes 0.47.0" in _decide("bnb", "int8", "model")


def test_the_refused_library_paths_fail_as_their_reasons_say():
    """What the reasons describe, reproduced on the CPU with the libraries' own calls (no GPU needed)."""
    import gguf
    import torch
    from accelerate.utils import set_module_tensor_to_device
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from optimum.quanto import freeze, qint8, quantize

    linear = torch.nn.Sequential(torch.nn.Linear(64, 64, dtype=torch.bfloat16))
    quantize(linear, weights=qint8)
    freeze(linear)
    with pytest.raises(TypeError):  # sequential: the weight rebuilt as type(weight)(tensor, requires_grad=...)
        set_module_tensor_to_device(linear[0], "weight", "meta")
    weight = linear[0].weight
    inner, moved = weight._data, weight.data.to("cpu", copy=True)  # group offload's move, CPU to CPU here
    assert moved._data is not inner
    weight.data = moved
    assert weight._data is inner, "the setter keeps the old inner tensors (on the GPU: still on the CPU)"

    layer = torch.nn.Linear(32, 4)
    data = torch.zeros(4, 34, dtype=torch.uint8)  # one Q8_0 block of 32 weights per row
    layer.weight = GGUFParameter(data, quant_type=gguf.GGMLQuantizationType.Q8_0)
    with pytest.raises(KeyError):
        set_module_tensor_to_device(layer, "weight", "meta")


def test_an_offloading_configuration_loads_on_the_cpu_and_gets_its_mode(monkeypatch):
    """On CUDA: loaded where from_pretrained puts it (no device_map, no .to), then one call per mode."""
    import diffusers
    import torch

    from helpers import pipelines

    seen = {}

    class Loaded:
        moved = False

        def to(self, device):
            self.moved = True
            return self

        def set_progress_bar_config(self, **kw):
            pass

        def __getattr__(self, name):
            if name.startswith("enable_"):
                return lambda *args, **kwargs: seen.setdefault("calls", []).append((name, args, kwargs))
            raise AttributeError(name)

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", lambda path, **kw: seen.update(kw) or Loaded())
    assert offload.load_device("model", "cuda") == "cpu" and offload.load_device("none", "cuda") == "cuda"
    pipe = pipelines.load_pipeline("some/checkpoint", "bf16", offload.load_device("group-leaf", "cuda"), offload=True)
    assert "device_map" not in seen and not pipe.moved
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for mode in MODES:
        offload.apply(pipe, mode, "cuda")
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert seen["calls"] == [
        ("enable_model_cpu_offload", (), {"device": cuda}),
        ("enable_group_offload", (cuda,), {"offload_device": cpu, "offload_type": "block_level",
                                           "num_blocks_per_group": offload.NUM_BLOCKS_PER_GROUP}),
        ("enable_group_offload", (cuda,), {"offload_device": cpu, "offload_type": "leaf_level", "use_stream": True}),
        ("enable_sequential_cpu_offload", (), {"device": cuda}),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="offloading needs an accelerator"):
        offload.apply(pipe, "model", "cpu")


# Today's identity of one configuration (computed with the code before offload existed): it and the file
# names made from it never change for a configuration that does not offload.
KEY = ('{"backend": "quanto", "batch_size": 1, "checkpoint": "ck", "compile": false, "compute_capability": "9.0", '
       '"device": "cuda", "dtype": "bf16", "exclude": [], "fuse_qkv": false, "gpu": "NVIDIA H100 80GB HBM3", '
       '"guidance_scale": 4.5, "height": 1024, "max_sequence_length": null, "model": "pixart", "preset": "full", '
       '"prompts": ["p"], "qtype": "int8", "quality_metrics": [], "quantize_te": false, "repeats": 3, "seed": 0, '
       '"steps": 20, "te_qtype": null, "threads": null, "warmup": 1, "width": 1024}')  # fmt: skip
NAMES = (["images/pixart_bf16/int8_qte0_fuse0_bs1-2e5a46ea6f78.png"],
         "latents/pixart_bf16/int8_qte0_fuse0_bs1-2e5a46ea6f78.safetensors")  # fmt: skip
# A record line as written before the field (a tiny CPU run): no "offload" in it.
OLD_LINE = ('{"attempts": 1, "backend": "quanto", "batch_size": 1, "checkpoint": "tiny-pixart-abc", "compile": false, '
            '"device": "cpu", "dtype": "bf16", "exclude": [], "fuse_qkv": false, "guidance_scale": 4.5, "height": 32, '
            '"model": "pixart", "preset": "tiny", "prompts": ["p"], "qtype": "none", "quality_metrics": [], '
            '"quantize_te": false, "repeats": 1, "seed": 0, "status": "ok", "steps": 2, "warmup": 0, '
            '"width": 32}')  # fmt: skip
OLD_KEY_HASH = "b811f3850f6f"  # outputs.identity_hash of that record, before the field


def test_identities_and_file_names_without_offload_are_unchanged(tmp_path):
    base = dict(model="pixart", checkpoint="ck", preset="full", device="cuda", dtype="bf16", qtype="int8",
                quantize_te=False, fuse_qkv=False, exclude=[], batch_size=1, steps=20, height=1024, width=1024,
                guidance_scale=4.5, prompts=["p"], seed=0, warmup=1, repeats=3, gpu="NVIDIA H100 80GB HBM3",
                compute_capability="9.0")  # fmt: skip
    r = records.Record(**base)
    assert r.offload == "none" and r.identity_key() == KEY and outputs.names(r) == NAMES
    assert records.Record(**base, offload="none").identity_key() == KEY
    assert records.identity_key({k: v for k, v in vars(r).items() if k != "offload"}) == KEY
    model = records.Record(**base, offload="model")
    assert model.identity_key() != KEY and '"offload": "model"' in model.identity_key()
    images, latents = outputs.names(model)
    assert images[0].startswith("images/pixart_bf16/int8_qte0_fuse0_bs1_offload-model-") and images != NAMES[0]

    path = tmp_path / "old.jsonl"
    path.write_text(OLD_LINE + "\n")
    (old,) = records.read(path)
    assert old.offload == "none" and outputs.identity_hash(old) == OLD_KEY_HASH
    assert cell_of(old) == Cell("none", False, False, 1)
    assert records.labels(old)[0] == "NONE" and records.labels(model)[0] == "INT8, offload model"
