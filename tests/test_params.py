import pytest

from helpers.cells import Cell, cell_of, cells
from helpers import params as P


def test_defaults_give_the_published_grid():
    p = P.validate({})
    assert p["qtypes"] == ["none", "int8", "fp8", "int4"]
    assert p["quantize_te"] == [False, True] and p["fuse_qkv"] == [False, True]
    assert p["batch_sizes"] == [1]


@pytest.mark.parametrize(
    "override, words",
    [
        ({"modle": "pixart"}, ["'modle'", "valid parameters", "model"]),
        ({"model": "sdxl"}, ["'model'", "'sdxl'", "pixart, flux-dev, sd3"]),
        ({"dtype": "fp32"}, ["'dtype'", "fp16, bf16"]),
        ({"preset": "huge"}, ["'preset'", "tiny, full"]),
        ({"qtypes": ["int2"]}, ["'qtypes'", "'int2'", "none, int8, fp8, int4"]),
        ({"repeats": "five"}, ["'repeats'", "int"]),
        ({"quantize_te": ["maybe"]}, ["'quantize_te'", "list of false, true or lists of text-encoder names"]),
        ({"model": "sd3", "quantize_te": [["text_encoder_4"]]}, ["'quantize_te'", "'text_encoder_4'",
                                                                 "text_encoder, text_encoder_2, text_encoder_3"]),
        ({"model": "sd3", "quantize_te": [[]]}, ["'quantize_te'", "empty list", "false"]),
        ({"model": "sd3", "quantize_te": [["text_encoder", "text_encoder"]]}, ["'quantize_te'", "twice"]),
        ({"quantize_te": [["text_encoder"], ["text_encoder"]]}, ["'quantize_te'", "duplicates"]),
        ({"te_qtypes": ["int3"]}, ["'te_qtypes'", "'int3'", "int8, fp8, int4"]),
        ({"te_qtypes": ["none"]}, ["'te_qtypes'", "'none'", "int8, fp8, int4"]),
        ({"backend": "gguf", "te_qtypes": ["q8_0"]}, ["'te_qtypes'", "'gguf'", "transformer only"]),
        ({"backend": "gguf", "qtypes": ["q2_K"]}, ["'qtypes'", "q8_0, q6_k, q5_1, q5_k, q5_0, q4_1, q4_k, q4_0, q3_k, q2_k"]),
        ({"backend": "layerwise", "qtypes": ["fp8"]}, ["'qtypes'", "fp8e4m3, fp8e5m2"]),
        ({"warmup": -1}, ["'warmup'", ">= 0"]),
        ({"repeats": 0}, ["'repeats'", ">= 1"]),
        ({"batch_sizes": [0]}, ["'batch_sizes'", ">= 1"]),
        ({"qtypes": []}, ["'qtypes'", "empty"]),
        ({"threads": 10_000}, ["'threads'", "10000", "valid values: 1 to"]),
        ({"model": "flux-dev", "max_sequence_length": 600}, ["'max_sequence_length'", "600", "1 to 512 or null"]),
        ({"executor": "inline", "timeout_s": 60}, ["'timeout_s'", "executor 'ray'", "null"]),
        ({"timeout_s": -5}, ["'timeout_s'", ">= 1 or null"]),
        ({"device": "cuda", "ray_resources": {"num_gpus": 0.25}}, ["'ray_resources'", "num_gpus 0.25", "whole number"]),
    ],
)
def test_bad_parameters_name_the_key_and_the_choices(override, words):
    with pytest.raises(ValueError) as e:
        P.validate(override)
    for w in words:
        assert w in str(e.value)


def test_params_file_must_be_a_mapping(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        P.load_params_file(f)
    f.write_text("a: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        P.load_params_file(f)
    f.write_text("")
    assert P.load_params_file(f) == {}


def test_validated_parameters_are_a_typed_frozen_object_that_still_reads_as_plain_names():
    import dataclasses
    import json

    p = P.validate({"model": "sd3", "qtypes": ["int8"]})
    assert isinstance(p, P.Params) and p.model == p["model"] == "sd3" and p.qtypes == ["int8"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.dtype = "fp16"
    assert list(p) == list(P.DEFAULTS) and P.validate(json.loads(json.dumps(dict(p)))) == p
    with pytest.raises(KeyError):
        p["stpes"]


def test_per_encoder_and_mixed_entries_make_one_configuration_each():
    """quantize_te entries are false, true or encoder lists; te_qtypes is an axis only where an encoder is
    quantized, so `false` appears once; entries travel as given (lists), configurations hold tuples."""
    p = P.validate({"model": "sd3", "qtypes": ["int8"], "fuse_qkv": [False], "te_qtypes": ["fp8", "int8"],
                    "quantize_te": [False, True, ["text_encoder_3", "text_encoder"]]})  # fmt: skip
    got = [(c.quantize_te, c.te_qtype) for c in cells(p)]
    assert got == [(False, None), (True, "fp8"), (True, "int8"),
                   (("text_encoder_3", "text_encoder"), "fp8"), (("text_encoder_3", "text_encoder"), "int8")]  # fmt: skip
    c = cells(p)[3]
    assert c.encoders("sd3") == ["text_encoder_3", "text_encoder"] and c.encoder_qtype == "fp8"
    assert c.as_given() == ["text_encoder_3", "text_encoder"] and c.slug == "int8_qte-text_encoder_3-text_encoder_tefp8_fuse0_bs1"
    assert Cell("int8", True, False, 1).slug == "int8_qte1_fuse0_bs1"  # today's names are kept
    assert cell_of({"qtype": "int8", "quantize_te": ["text_encoder_3", "text_encoder"], "fuse_qkv": False,
                        "batch_size": 1, "te_qtype": "fp8"}) == c  # fmt: skip
    assert cells(P.validate({"model": "sd3", "qtypes": ["int8"], "fuse_qkv": [False]}))[1].encoders("sd3") == [
        "text_encoder", "text_encoder_2", "text_encoder_3"]  # fmt: skip


def test_table_labels_keep_yes_no_and_read_encoder_numbers_and_the_mix():
    from helpers.records import qtype_label, te_label

    assert te_label("sd3", True) == "Yes" and te_label("sd3", False) == "No"
    assert te_label("sd3", ["text_encoder", "text_encoder_3"]) == "1+3"
    assert qtype_label("int8", "fp8", True) == "INT8 / TE FP8" and qtype_label("int8", None, True) == "INT8"
    assert qtype_label("int8", None, False) == "INT8"
