"""What quantizing and fusing do to the bytes a pipeline holds, checked against arithmetic."""

import pytest
import torch

from helpers.measure import component_bytes, pipeline_modules, tensor_bytes
from helpers.pipelines import load_pipeline
from helpers.cells import Cell
from helpers.quant import apply_cell, fuse_unsupported
from helpers.registry import MODELS

ELEM = {"bf16": 2, "fp16": 2}


def _linear_shapes(module) -> dict[str, tuple[int, int, bool]]:
    return {
        name: (m.out_features, m.in_features, m.bias is not None)
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def _quantized_shapes(module) -> dict[str, tuple[int, int, bool]]:
    """What quanto quantizes, as (rows, inputs per row, bias): every Linear, and every Conv2d (a vision-language
    encoder's patch convolution), whose weight is out_channels rows of in_channels x kernel inputs."""
    return {
        **_linear_shapes(module),
        **{name: (m.out_channels, m.weight[0].numel(), m.bias is not None)
           for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)},
    }  # fmt: skip


def _int4_group(k: int) -> int:
    if k <= 128:
        return k
    g = 128
    while k % g and g > 32:
        g -= 32
    assert k % g == 0, f"in_features {k} has no int4 group"
    return g


def _expected_qlinear_bytes(qtype: str, n: int, k: int, bias: bool, s: int) -> int:
    """Bytes of one quanto QLinear after freeze, from the format's definition.

    int8 / fp8: one byte a weight + one scale per output row.
    int4: half a byte a weight + a scale and a shift per group of inputs. quanto's
    group is 128 inputs when in_features > 128 (else 96, 64 or 32 if one of those
    divides it); at in_features <= 128 a whole row is one group.
    Every QLinear also holds two scalar buffers (input_scale, output_scale).
    """
    if qtype in ("int8", "fp8"):
        weight = n * k + n * s
    elif qtype == "int4":
        weight = n * k // 2 + 2 * n * (k // _int4_group(k)) * s
    else:
        raise AssertionError(qtype)
    return weight + (n * s if bias else 0) + 2 * s


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("qtype", ["int8", "fp8", "int4"])
def test_quantized_linear_bytes_follow_the_format(tiny_paths, model, qtype):
    pipe = load_pipeline(tiny_paths[model], "bf16", "cpu")
    shapes = _linear_shapes(pipe.transformer)
    before = {name: tensor_bytes([m]) for name, m in pipe.transformer.named_modules() if name in shapes}
    apply_cell(pipe, model, Cell(qtype, False, False, 1), exclude=[])
    modules = dict(pipe.transformer.named_modules())
    checked = 0
    for name, (n, k, bias) in shapes.items():
        after = tensor_bytes([modules[name]])
        expected = _expected_qlinear_bytes(qtype, n, k, bias, 2)
        assert after == expected, f"{name} ({n}x{k}): {after} bytes, format says {expected}"
        # and the ratio the format implies, against the unquantized bf16 weight
        weight_before = n * k * 2
        weight_after = expected - (n * 2 if bias else 0) - 4
        ratio = weight_after / weight_before
        if qtype == "int4":
            assert ratio == pytest.approx(0.25 + 2 / _int4_group(k))
        else:
            assert ratio == pytest.approx(0.5 + 1 / k)
        assert before[name] == n * k * 2 + (n * 2 if bias else 0)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("model", MODELS)
def test_fuse_qkv_adds_exactly_the_fused_projections(tiny_paths, model):
    if reason := fuse_unsupported(model):  # and the grid refuses it with this reason (test_grid)
        with pytest.raises((AttributeError, AssertionError)):
            pipe = load_pipeline(tiny_paths[model], "bf16", "cpu")
            before = {n for n, _ in pipe.transformer.named_modules()}
            pipe.transformer.fuse_qkv_projections()
            assert {n for n, _ in pipe.transformer.named_modules()} != before, reason
        return
    pipe = load_pipeline(tiny_paths[model], "bf16", "cpu")
    before = tensor_bytes([pipe.transformer])
    linears = dict(pipe.transformer.named_modules())
    apply_cell(pipe, model, Cell("none", False, True, 1), exclude=[])
    fused = {
        name: m for name, m in pipe.transformer.named_modules()
        if name.rsplit(".", 1)[-1] in ("to_qkv", "to_kv", "to_added_qkv")
    }  # fmt: skip
    assert fused, "fuse_qkv_projections() created no fused projection"
    # The fused weights are the concatenation of the separate ones, which stay in place.
    expected = 0
    for name, m in fused.items():
        parent, leaf = name.rsplit(".", 1)
        parts = {"to_qkv": ("to_q", "to_k", "to_v"), "to_kv": ("to_k", "to_v"),
                 "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj")}[leaf]  # fmt: skip
        expected += sum(tensor_bytes([linears[f"{parent}.{p}"]]) for p in parts)
        assert tensor_bytes([m]) == sum(tensor_bytes([linears[f"{parent}.{p}"]]) for p in parts)
    assert tensor_bytes([pipe.transformer]) - before == expected


@pytest.mark.parametrize("model", MODELS)
def test_quantize_te_changes_the_text_encoders_and_nothing_else(tiny_paths, model):
    from helpers.registry import model_spec

    sizes, shapes = {}, {}
    for te in (False, True):
        pipe = load_pipeline(tiny_paths[model], "bf16", "cpu")
        shapes = {name: _quantized_shapes(getattr(pipe, name)) for name in model_spec(model).text_encoders}
        apply_cell(pipe, model, Cell("int8", te, False, 1), exclude=[])
        sizes[te] = component_bytes(pipe)
    assert set(sizes[True]) == set(sizes[False])
    for name in sizes[False]:
        if name in shapes:
            # every Linear (and Conv2d) of the encoder shrinks to its int8 size; nothing else changes
            saved = sum(
                n * k * 2 + (n * 2 if b else 0) - _expected_qlinear_bytes("int8", n, k, b, 2)
                for n, k, b in shapes[name].values()
            )
            assert saved > 0
            assert sizes[False][name] - sizes[True][name] == saved, name
        else:
            assert sizes[True][name] == sizes[False][name], name


def _independent_count(pipe) -> int:
    """Bytes from the modules' state_dicts (quanto serialises data, scales and shifts
    as plain tensors) plus non-persistent buffers; tied weights counted once."""
    total, seen = 0, set()
    for module in pipeline_modules(pipe).values():
        tensors = list(module.state_dict().values())
        for sub in module.modules():
            tensors += [sub._buffers[n] for n in sub._non_persistent_buffers_set if sub._buffers.get(n) is not None]
        for t in tensors:
            if t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("qtype", ["none", "int8", "fp8", "int4"])
def test_memory_count_matches_an_independent_count(tiny_paths, model, qtype):
    pipe = load_pipeline(tiny_paths[model], "fp16", "cpu")
    apply_cell(pipe, model, Cell(qtype, True, fuse_unsupported(model) is None, 1), exclude=[])
    assert tensor_bytes(pipeline_modules(pipe).values()) == _independent_count(pipe)


def test_exclude_keeps_named_modules_unquantized(tiny_paths):
    from optimum.quanto import QTensor

    pipe = load_pipeline(tiny_paths["pixart"], "bf16", "cpu")
    apply_cell(pipe, "pixart", Cell("int8", False, False, 1), exclude=["proj_out"])
    assert not isinstance(pipe.transformer.proj_out.weight, QTensor)
    assert isinstance(pipe.transformer.transformer_blocks[0].attn1.to_q.weight, QTensor)


def test_quanto_fp8_keeps_its_plain_weight_class_where_quanto_would_pick_marlin(monkeypatch):
    """quanto 0.2.7 makes fp8 weights MarlinF8QBytesTensor on a CUDA GPU of capability >= 8 with its
    quanto_cuda extension registered (WeightQBytesTensor.create). Simulated here on fake CUDA tensors:
    quanto's own dispatch picks Marlin outside the project's routing and WeightQBytesTensor inside it,
    and after_load quantizes fp8, and only fp8, inside it."""
    import optimum.quanto
    import optimum.quanto.tensor.weights.marlin as marlin
    from optimum.quanto import qfloat8
    from optimum.quanto.library.extensions import extension
    from optimum.quanto.tensor.weights import WeightQBytesTensor, qbytes, quantize_weight
    from torch._subclasses.fake_tensor import FakeTensorMode

    from helpers.backends import quanto

    class Marlin(Exception):
        pass

    def marlin_chosen(*args, **kwargs):
        raise Marlin  # the real class packs with the nvcc-built kernel

    monkeypatch.setattr(marlin, "MarlinF8QBytesTensor", marlin_chosen)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(extension._extensions, "quanto_cuda", object())  # quanto registers it on a CUDA machine
    with FakeTensorMode(allow_non_fake_inputs=True):
        weight = torch.empty(256, 256, dtype=torch.bfloat16, device="cuda")
        scale = torch.empty(256, 1, dtype=torch.bfloat16, device="cuda")
        with pytest.raises(Marlin):
            quantize_weight(weight, qfloat8, axis=0, scale=scale)
        with quanto.plain_fp8("fp8"):
            plain = quantize_weight(weight, qfloat8, axis=0, scale=scale)
        with quanto.plain_fp8("int8"), pytest.raises(Marlin):
            quantize_weight(weight, qfloat8, axis=0, scale=scale)
    assert type(plain) is WeightQBytesTensor and plain.device.type == "cuda"

    seen = {}  # whether quanto sees its extension while after_load freezes (builds the weights)
    real_freeze = optimum.quanto.freeze

    def freeze(module):
        seen[qtype] = qbytes.is_extension_available("quanto_cuda")
        real_freeze(module)

    monkeypatch.setattr(optimum.quanto, "freeze", freeze)
    for qtype in ("int8", "fp8", "int4"):
        quanto.after_load(torch.nn.Sequential(torch.nn.Linear(128, 128)), qtype, [], True, False)
    assert seen == {"int8": True, "fp8": False, "int4": True} and qbytes.is_extension_available("quanto_cuda")
    assert quanto.notes("fp8", "cuda") == [quanto.FP8_NOTE]
    assert quanto.notes("fp8", "cpu") == quanto.notes("int8", "cuda") == []
