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


def test_a_section_measured_on_two_devices_says_so_beside_its_tables(tmp_path):
    from helpers import report

    rows = [_record(qtype="none", quantize_te=False, device_name="NVIDIA H100", memory_gb=1.0, latency_s=1.0),
            _record(qtype="int8", quantize_te=False, device_name="NVIDIA A100", memory_gb=0.5, latency_s=1.2)]  # fmt: skip
    assert report.mixed_hardware(rows[:1]) is None
    note = report.mixed_hardware(rows)
    assert "NVIDIA H100: 1" in note and "NVIDIA A100: 1" in note and "not a comparison" in note
    assert note in report.results_markdown([rows])
    assert note in report.report_html(str(tmp_path), [rows])
    assert "not a comparison" in report.styled_tables(rows)[0].caption


def test_record_keys_name_the_tiny_pipeline_by_content_and_reading_builds_nothing(tmp_path, monkeypatch):
    import helpers.pipelines as pipelines
    from helpers import grid, params as P
    from helpers.registry import model_spec

    p = P.validate({"model": "sd3", "out_dir": str(tmp_path)})
    name = pipelines.checkpoint_name(p)
    assert name.startswith("tiny-sd3-") and "/" not in name, "a record's checkpoint is not a path of this machine"

    def refuse(*a, **k):
        raise AssertionError("reading records built a pipeline")

    monkeypatch.setattr(pipelines, "ensure_tiny", refuse)
    monkeypatch.setattr("torch.cuda.is_available", refuse)
    assert grid.grid_records(p) == []
    library, cls, kwargs = model_spec("sd3").tiny["transformer"]
    monkeypatch.setitem(model_spec("sd3").tiny, "transformer", (library, cls, {**kwargs, "num_layers": 3}))
    assert pipelines.checkpoint_name(p) != name, "another tiny architecture gives other records"
