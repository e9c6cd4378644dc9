import pytest

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
        ({"quantize_te": ["maybe"]}, ["'quantize_te'", "list of bool"]),
        ({"warmup": -1}, ["'warmup'", ">= 0"]),
        ({"repeats": 0}, ["'repeats'", ">= 1"]),
        ({"batch_sizes": [0]}, ["'batch_sizes'", ">= 1"]),
        ({"qtypes": []}, ["'qtypes'", "empty"]),
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
