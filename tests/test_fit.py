"""``python -m helpers fit``: what fits a card, best first, and what misses by how much; the report's,
the notebooks' and the explorer's "What fits".

The estimate rows here are built by hand in the estimate's documented form (``estimate.predict``: ``offload``,
``peak_reserved_gb``, ``peak_phase``, ``host_gb``), so the ranking is tested on figures chosen to tell its
rules apart; the records are built by hand too, each with only the fields the ranking reads.
"""

import json

import pytest

from helpers import fit, params as P, records
from helpers.records import Record

CONTEXT = 0.5  # the CUDA context these tests assume (estimate.CUDA_CONTEXT_GB)
GPU = "NVIDIA H100 80GB HBM3"


def _row(qtype, offload, peak, host=20.0, quantize_te=False, fuse=False, note=None):
    return dict(model="pixart", dtype="bf16", qtype=qtype, quantize_te=quantize_te, te_qtype=None, fuse_qkv=fuse,
                batch_size=1, offload=offload, memory_gb=peak and peak * 0.8, loaded_reserved_gb=peak and peak * 0.8,
                peak_allocated_gb=peak and peak * 0.9, peak_reserved_gb=peak, peak_phase=peak and "denoise",
                host_gb=host if peak is not None else None, components={}, parameters={},
                **({"note": note} if note else {}))  # fmt: skip


# needed = peak + CONTEXT; at 24 GiB: none/none misses by 6.5, int4/sequential is not predicted
ROWS = [
    _row("none", "none", 30.0), _row("none", "model", 20.0), _row("none", "sequential", 5.0, host=40.0),
    _row("int8", "none", 18.0), _row("int8", "model", 12.0), _row("fp8", "none", 17.0), _row("int4", "none", 10.0),
    _row("int4", "sequential", None, note="not predicted: sequential offload of int4 (for this test)"),
]  # fmt: skip


def _record(qtype, preset="full", offload=None, **metrics) -> Record:
    fields = dict(model="pixart", checkpoint="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", preset=preset, device="cuda",
                  dtype="bf16", qtype=qtype, quantize_te=False, fuse_qkv=False, exclude=[], batch_size=1, steps=20,
                  height=1024, width=1024, guidance_scale=4.5, prompts=["p"], seed=0, warmup=1, repeats=3,
                  gpu=GPU if preset == "full" else None, compute_capability="9.0" if preset == "full" else None,
                  memory_gb=5.0, latency_s=2.0, latency_min_s=1.0, latency_max_s=3.0,
                  timestamp="2026-12-06T12:00:00+00:00")  # fmt: skip
    record = Record(**{**fields, **metrics})
    if offload is not None:
        record.offload = offload
    return record


RECORDS = [
    _record("int8", ssim=0.95, latency_s=1.5),
    _record("int4", ssim=0.90, latency_s=1.2, memory_gb=3.0),
    _record("fp8", ssim=0.99, latent_rel_error=0.9),  # suspect: never ranked by its SSIM
    _record("none", preset="tiny", device="cpu", ssim=1.0, identical=True),  # a tiny pipeline's: not counted
]


@pytest.fixture
def found(monkeypatch):
    import helpers.estimate as estimate

    monkeypatch.setattr(estimate, "CUDA_CONTEXT_GB", CONTEXT, raising=False)
    return fit.Predictions("pixart", "bf16", "quanto", "full", [dict(r) for r in ROWS])


def _names(cands):
    return [(c.row["qtype"], c.offload) for c in cands]


def test_every_backend_declares_the_bits_of_each_qtype():
    from helpers.backends import BACKENDS
    from helpers.registry import bits_per_weight

    for name, b in BACKENDS.items():
        assert list(b.BITS) == list(b.QTYPES) and b.BITS["none"] == 16, name
        assert all(0 < bits_per_weight(name, q) <= 16 for q in b.QTYPES)
    with pytest.raises(ValueError, match="unknown qtype 'int3' for backend 'quanto'"):
        bits_per_weight("quanto", "int3")


def test_measured_first_by_ssim_then_bits_then_offload_cost_and_misses_by_how_much(found):
    a = fit.answer(found, RECORDS, 24)
    assert _names(a.fits) == [
        ("int8", "none"), ("int4", "none"),  # measured, SSIM 0.95 > 0.90 (the tiny record does not count)
        ("none", "model"), ("none", "sequential"), ("int8", "model"),  # 16 bits before 8; model before sequential
        ("fp8", "none"),  # suspect: last, whatever its SSIM
    ]
    assert _names(a.misses) == [("none", "none")] and fit._shortfall(a.misses[0]) == pytest.approx(6.5)
    assert _names(a.unknown) == [("int4", "sequential")]
    assert a.best.needed_gb == pytest.approx(18.5) and a.best.spare_gb == pytest.approx(5.5)
    # the host too, when given: sequential offload holds 40 GiB there
    a = fit.answer(found, RECORDS, 24, host_memory=32)
    assert ("none", "sequential") not in _names(a.fits)
    assert ("none", "sequential") in _names(a.misses) and fit._shortfall(a.misses[0]) == pytest.approx(6.5)
    # an offloaded configuration's own record counts for it, not the unoffloaded one's
    a = fit.answer(found, [*RECORDS, _record("none", offload="model", ssim=1.0, identical=True)], 24)
    assert _names(a.fits)[:2] == [("none", "model"), ("int8", "none")]


def test_the_first_line_is_a_configuration_that_fits_or_says_none_does(found):
    text = fit.format_table(fit.answer(found, RECORDS, 24))
    first = text.splitlines()[0]
    assert first.startswith("Best fit on a 24 GiB card: pixart bf16 (quanto) INT8, TE No, fuse No, offload none")
    assert "needs 18.50 GiB (5.50 spare)" in first and "SSIM 0.950" in first and GPU in first
    assert "do not fit" in text and "6.50" in text and "not measured" in text and "int4 (for this test)" in text
    none = fit.format_table(fit.answer(found, RECORDS, 4)).splitlines()[0]
    assert none.startswith("Nothing of pixart bf16 (quanto) is predicted to fit a 4 GiB card")
    assert "closest: NONE, TE No, fuse No, offload sequential, short by 1.50 GiB" in none
    data = json.loads(fit.format_json(fit.answer(found, RECORDS, 24)))
    assert data["cuda_context_gib"] == CONTEXT and data["configurations"][0]["fits"] is True
    assert [c["fits"] for c in data["configurations"]] == [True] * 6 + [False, None]
    assert data["configurations"][0]["measured"]["ssim"] == 0.95


def test_cli_reads_the_records_of_its_out_folder(found, monkeypatch, tmp_path, capsys):
    from helpers.__main__ import main

    for r in RECORDS:
        records.append(tmp_path / "results" / "pixart_bf16.jsonl", r)
    asked = []
    monkeypatch.setattr(fit, "predictions", lambda params, preset: asked.append((params["model"], preset)) or found)
    assert main(["fit", "--model", "pixart", "--gpu-memory", "24", "--out", str(tmp_path)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert asked == [("pixart", "full")] and "INT8" in first and "SSIM 0.950" in first
    assert main(["fit", "--model", "pixart", "--gpu-memory", "24", "--out", str(tmp_path / "none")]) == 0
    assert "NONE, TE No, fuse No, offload model" in capsys.readouterr().out.splitlines()[0]  # nothing measured
    with pytest.raises(SystemExit) as e:
        main(["fit", "--model", "pixart", "--gpu-memory", "-1"])
    assert e.value.code == 2 and "valid values: more than 0" in capsys.readouterr().err


def test_cards_table_chart_and_report(found, tmp_path):
    from helpers import figures, report

    best = fit.best_per_card(found, RECORDS)
    assert {card: c and (c.row["qtype"], c.offload) for card, c in best.items()} == {
        8: ("none", "sequential"), 12: ("int4", "none"), 16: ("int4", "none"),
        24: ("int8", "none"), 48: ("int8", "none"), 80: ("int8", "none"),
    }  # fmt: skip
    df = fit.cards_frame([found], [RECORDS])
    assert list(df.columns) == ["Section"] + [f"{c} GiB" for c in fit.CARDS_GB]
    assert df.iloc[0]["24 GiB"] == "int8, offload none: 18.5 GiB, SSIM 0.950"
    assert fit.cards_frame([found], [RECORDS], cards=(4,)).iloc[0]["4 GiB"] == "nothing fits"

    fig = figures.fits_chart(found, str(tmp_path))
    assert fig is not None and figures.fits_path(str(tmp_path), "pixart_bf16").read_bytes()[:4] == b"\x89PNG"
    assert figures.fits_chart(fit.Predictions("pixart", "bf16", "bnb", "full", note="not bnb"), str(tmp_path)) is None

    page = report.report_html(str(tmp_path), [RECORDS[:3]], fits=[found])
    assert '<a href="#what-fits">What fits</a>' in page and '<table class="fits">' in page
    assert "int8, offload none: 18.5 GiB, SSIM 0.950" in page and 'alt="What fits chart of pixart bf16' in page
    assert "What fits" not in report.report_html(str(tmp_path), [RECORDS[:3]])


def test_explorer_slider_marks_what_fits(found, tmp_path):
    from helpers import explore

    box = explore.explorer(RECORDS[:3], str(tmp_path), found)
    slider, table = box.children[-2:]
    assert slider.value == 24 and "<b>6</b> of 8 predicted to fit 24 GiB" in table.value
    slider.value = 12
    assert "<b>2</b> of 8 predicted to fit 12 GiB" in table.value
    # one row per configuration, a column per offload mode; the chosen one (the explorer opens on the
    # lowest-memory quantized one, int4) in bold
    assert table.value.count("<tr>") == 1 + 4 and table.value.count("<th>offload ") == 3
    assert table.value.count("<b>") == 2 and "<b>int4</b>" in table.value
    # records of several offload modes: a dropdown picks among them
    box = explore.explorer([*RECORDS[:3], _record("int8", offload="model", ssim=0.95)], str(tmp_path), found)
    assert [c.description for c in box.children[0].children] == ["qtype", "batch size", "offload"]


@pytest.mark.skipif(not hasattr(__import__("helpers.estimate").estimate, "CUDA_CONTEXT_GB"),
                    reason="the estimate does not predict peaks yet (estimate.CUDA_CONTEXT_GB)")  # fmt: skip
def test_the_estimate_gives_the_fields_fit_reads(tiny_paths):
    p = P.validate({"model": "pixart", "qtypes": ["none", "int8"], "quantize_te": [False], "fuse_qkv": [False]})
    found = fit.predictions(p, preset="tiny")
    assert {fit.offload_of(r) for r in found.rows} >= {"none"}
    for row in found.rows:
        assert {"offload", "peak_reserved_gb", "peak_phase", "host_gb"} <= set(row)
    a = fit.answer(found, [], 80)
    assert a.fits and a.best.needed_gb < 80
