"""The grid end to end on the tiny preset: records, images, resume."""

import json

import pytest
from PIL import Image

from helpers import grid, measure, records
from helpers import params as P
from helpers.registry import MODELS


def _params(tmp_path, **kw):
    base = dict(qtypes=["none", "int8"], quantize_te=[False], fuse_qkv=[False], warmup=0, repeats=2,
                out_dir=str(tmp_path), device="cpu")  # fmt: skip
    return P.validate({**base, **kw})


@pytest.mark.parametrize("model", MODELS)
def test_grid_writes_ok_records_with_images(tmp_path, model):
    p = _params(tmp_path, model=model, qtypes=["int8"])
    rows = grid.run_grid(p, progress=False)
    assert [r.status for r in rows] == ["ok"], [r.error for r in rows]
    r = rows[0]
    assert 0 < r.latency_min_s <= r.latency_s <= r.latency_max_s
    assert r.repeats == 2 and r.memory_gb == r.memory_bytes / 1024**3 > 0
    assert r.peak_memory_gb is None or r.peak_memory_gb >= 0
    assert r.versions["optimum-quanto"] == "0.2.7" and r.device_name
    image = Image.open(tmp_path / r.image_path)
    assert image.size == (r.width, r.height)
    line = json.loads(grid.results_path(p).read_text().splitlines()[0])
    assert line["qtype"] == "int8" and line["status"] == "ok"


def test_rerun_of_a_finished_grid_measures_nothing(tmp_path, monkeypatch):
    p = _params(tmp_path)
    first = grid.run_grid(p, progress=False)
    assert len(first) == 2 and all(r.status == "ok" for r in first)
    before = grid.results_path(p).read_text()

    def boom(*a, **k):
        raise AssertionError("a finished configuration was measured again")

    monkeypatch.setattr(measure, "measure", boom)
    again = grid.run_grid(p, progress=False)
    assert grid.results_path(p).read_text() == before
    assert again == first


def test_a_grown_grid_measures_only_the_new_configurations(tmp_path, capsys):
    grid.run_grid(_params(tmp_path, qtypes=["none"]), progress=False)
    rows = grid.run_grid(_params(tmp_path, qtypes=["none", "int8"]))
    path = grid.results_path(_params(tmp_path))
    assert f"pixart_bf16: 1 of 2 configurations from {path}, 1 to run" in capsys.readouterr().out
    assert [r.qtype for r in rows] == ["none", "int8"]
    assert len(records.read(grid.results_path(_params(tmp_path)))) == 2


def test_a_failing_configuration_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    real = measure.measure

    def flaky(pipe, call_kwargs, **kw):
        if type(pipe.transformer.transformer_blocks[0].attn1.to_q).__name__ == "QLinear":
            raise RuntimeError("simulated out of memory")
        return real(pipe, call_kwargs, **kw)

    monkeypatch.setattr(measure, "measure", flaky)
    rows = grid.run_grid(_params(tmp_path, qtypes=["int8", "none"]), progress=False)
    assert [(r.qtype, r.status) for r in rows] == [("int8", "error"), ("none", "ok")]
    assert rows[0].error == "RuntimeError: simulated out of memory"


def test_a_rejected_combination_is_recorded_as_skipped(tmp_path, monkeypatch):

    def reject(*a, **k):
        raise NotImplementedError("this backend cannot do that")

    monkeypatch.setattr("optimum.quanto.quantize", reject)
    rows = grid.run_grid(_params(tmp_path, qtypes=["int8"]), progress=False)
    assert rows[0].status == "skipped"
    assert rows[0].error == "NotImplementedError: this backend cannot do that"
