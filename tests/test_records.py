import json

from helpers import records


def _record(**kw):
    base = dict(
        model="pixart", checkpoint="ck", preset="tiny", device="cpu", dtype="bf16", qtype="int8",
        quantize_te=True, fuse_qkv=False, exclude=[], batch_size=1, steps=2, height=64, width=64,
        guidance_scale=4.5, prompts=["p"], seed=0, warmup=1, repeats=3,
    )  # fmt: skip
    return records.Record(**{**base, **kw})


def test_record_round_trips_through_json(tmp_path):
    r = _record(memory_bytes=123, memory_gb=123 / 1024**3, latency_s=0.5, versions={"torch": "x"})
    path = tmp_path / "r.jsonl"
    records.append(path, r)
    records.append(path, _record(qtype="int4", status="error", error="boom"))
    back = records.read(path)
    assert back[0] == r
    assert back[1].status == "error" and back[1].error == "boom"
    assert json.loads(path.read_text().splitlines()[0])["latency_s"] == 0.5


def test_latest_keeps_the_last_record_per_configuration():
    a, b, c = _record(status="error", error="x"), _record(qtype="fp8"), _record(latency_s=1.0)
    out = records.latest([a, b, c])
    assert out == [b, c]


def test_unknown_status_and_field_are_refused():
    import pytest

    with pytest.raises(ValueError, match="status"):
        _record(status="fine")
    with pytest.raises(ValueError, match="unknown record field"):
        records.Record.from_dict({**_record().__dict__, "latency_ms": 3})
