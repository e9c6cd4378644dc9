"""GGUF as its users use it: prequantized files through from_single_file, and the k-quants predicted."""

import pytest

from helpers import grid, params as P
from helpers.backends import gguf
from helpers.components import components_from_folder
from helpers.estimate import estimate


def test_k_quants_are_predicted_from_their_block_layouts(tiny_paths):
    """Each Linear of whole 256-weight blocks holds (rows, in / 256 x bytes a block) uint8 (gguf-py's
    GGML_QUANT_SIZES): the transformer's bytes follow, whichever k-quant, though none can be written here."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    components = components_from_folder(tiny_paths["flux-dev"])
    params = P.validate({"model": "flux-dev", "backend": "gguf", "qtypes": ["none", *gguf.K_QUANTS],
                         "quantize_te": [False], "fuse_qkv": [False]})  # fmt: skip
    rows = {r["qtype"]: r["components"]["transformer"] for r in estimate("flux-dev", "bf16", params, components)}
    from helpers.components import build_on_meta

    module = build_on_meta(components["transformer"], "bf16")
    for qtype in gguf.K_QUANTS:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype.upper()]]
        linears = gguf.quantized_linears(module, qtype, [])
        assert linears and all(n_bytes == k_bytes for n_bytes, k_bytes in
                               [(per_row, module.get_submodule(n).in_features // block * size)
                                for n, (_, per_row) in linears.items()])  # fmt: skip
        saved = sum(rows_ * (module.get_submodule(n).in_features * 2 - per_row) for n, (rows_, per_row) in linears.items())
        assert rows["none"] - rows[qtype] == saved, qtype
    assert rows["q6_k"] > rows["q5_k"] > rows["q4_k"] > rows["q3_k"] > rows["q2_k"]


def test_a_k_quant_without_a_file_is_skipped_saying_why(tmp_path):
    p = P.validate(dict(model="flux-dev", dtype="bf16", backend="gguf", qtypes=["q4_k"], quantize_te=[False],
                        fuse_qkv=[False], warmup=0, repeats=1, device="cpu", out_dir=str(tmp_path)))  # fmt: skip
    (r,) = grid.run_grid(p, progress=False)
    assert r.status == "skipped" and "cannot write q4_k" in r.error and "gguf_file" in r.error


def test_a_prequantized_file_loads_through_from_single_file_and_must_hold_its_qtype(tiny_paths, tmp_path):
    """A file written elsewhere (here: the project's own writer, to a path of its own) is what ``gguf_file``
    names: the transformer loads from it, its Linears hold its block type, and a qtype it does not hold is
    refused by name."""
    import diffusers

    checkpoint = tiny_paths["flux-dev"]
    transformer = diffusers.FluxTransformer2DModel.from_pretrained(checkpoint, subfolder="transformer")
    path = tmp_path / "flux-q8_0.gguf"
    gguf.write(transformer, "q8_0", [], path)
    import torch

    loaded = gguf.preloaded(checkpoint, "q8_0", torch.bfloat16, [], source=str(path))["transformer"]
    assert gguf.held_qtype(loaded) == "q8_0"
    with pytest.raises(ValueError, match="holds q8_0 weights, not q4_0"):
        gguf.preloaded(checkpoint, "q4_0", torch.bfloat16, [], source=str(path))
    assert gguf.source_url("city96/FLUX.1-dev-gguf/flux1-dev-Q2_K.gguf") == (
        "https://huggingface.co/city96/FLUX.1-dev-gguf/blob/main/flux1-dev-Q2_K.gguf")


def test_gguf_file_is_for_the_gguf_backend_at_full_size():
    with pytest.raises(ValueError, match="'gguf_file' needs backend 'gguf' and preset 'full'"):
        P.validate({"backend": "gguf", "preset": "tiny", "gguf_file": "/tmp/x.gguf"})
    with pytest.raises(ValueError, match="'gguf_file' needs backend 'gguf'"):
        P.validate({"backend": "quanto", "gguf_file": "a/b/c.gguf"})
