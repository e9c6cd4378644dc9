"""report.html's figures as a reader sees them: formatted per column, n/a where a figure says nothing,
the summary's savings against NONE, each environment once. Records are made up: nothing runs."""

import re

import pytest

from helpers import figures, records, report
from helpers.cells import Cell

EXPONENT = re.compile(r"\d[eE][+-]?\d")


def _record(**kw):
    base = dict(
        model="pixart", checkpoint="ck", preset="tiny", device="cpu", dtype="bf16", qtype="int8",
        quantize_te=False, fuse_qkv=False, exclude=[], batch_size=1, steps=2, height=64, width=64,
        guidance_scale=4.5, prompts=["p"], seed=0, warmup=1, repeats=3, device_name="cpu0",
        versions={"torch": "2"}, memory_gb=0.002, peak_memory_gb=3.815e-06, latency_s=0.04,
        ssim=0.99, psnr_db=40.0, latent_rel_error=1.2e-05,
    )  # fmt: skip
    return records.Record(**{**base, **kw})


def _cells(page: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", page)


@pytest.mark.parametrize(
    "value, text",
    [(0.000123, "0.000123"), (3.042, "3.04"), (3.816e-06, "0.00000382"), (0.0009996, "0.00100"), (1234.5, "1230"),
     (0.0, "0"), (-0.5, "-0.500")],
)  # fmt: skip
def test_significant_digits_never_write_an_exponent(value, text):
    assert report.significant(value) == text


def test_each_column_has_its_format():
    formats = report.FORMATS
    assert formats["Memory (GB)"](0.0011440) == "0.001" and formats[report.PREDICTED](9.3468) == "9.347"
    assert formats["Latency (s)"](0.03723) == "0.0372" and formats["Latency (s)"](3.042) == "3.04"
    assert formats["PSNR to NONE (dB)"](39.76) == "39.8" and formats["SSIM to NONE"](0.99691) == "0.997"
    assert formats["Latency change (%)"](-84.53) == "-84.5" and formats["Latency change (%)"](12.0) == "+12.0"


def test_summary_gives_the_savings_against_none_and_no_cell_has_an_exponent(tmp_path):
    none = _record(qtype="none", memory_gb=0.004, latency_s=0.05, ssim=1.0, psnr_db=None, identical=True,
                   latent_rel_error=0.0)  # fmt: skip
    int8 = _record(memory_gb=0.001, latency_s=0.06, peak_memory_gb=0.75, device_name="cpu1")
    page = report.report_html(str(tmp_path), [[none, int8]], [{Cell("int8", False, False, 1): 9.3468}])
    summary = page[page.index('id="summary"') : page.index('<table class="sortable"')]
    # INT8 is recommended: 0.003 GB (75.0 %) less than NONE, 20 % slower
    assert re.search(r"<td>INT8</td>.*>0\.003<.*>75\.0<.*>\+20\.0<.*>9\.347<", summary)
    assert not [c for c in _cells(page) if EXPONENT.search(c)]
    # a CPU peak below 1 MB is n/a with why; one above it is a figure
    assert re.search(r'<td class="num na" data-value="" title="On the CPU, peak [^"]*">n/a</td>', page)
    assert '<td class="num" data-value="0.75">0.750</td>' in page
    # two environments, each written once and linked from its section
    assert page.count('id="environment-E1"') == page.count('id="environment-E2"') == 1
    assert page.count('href="#environment-E2"') == 2  # summary and section
    assert "Mixed hardware" in summary


@pytest.mark.parametrize("status", ["missing", "error"])
def test_summary_says_when_none_did_not_measure_instead_of_inventing_savings(tmp_path, status):
    int8 = _record()
    rows = [int8] if status == "missing" else [_record(qtype="none", status="error", error="OOM"), int8]
    page = report.report_html(str(tmp_path), [rows])
    assert "No savings shown: NONE (Quantize TE No, Fuse QKV No) " + ("did not run" if status == "missing" else
                                                                      "failed: OOM") in page  # fmt: skip
    assert "Memory saved" not in page


def test_tradeoff_chart_labels_do_not_overlap(tmp_path):
    rows = [_record(qtype=q, quantize_te=te, fuse_qkv=fuse, memory_gb=m, latency_s=t)
            for q, te, fuse, m, t in [("none", False, False, 0.004, 0.2), ("int8", False, True, 0.002, 0.035),
                                      ("fp8", False, True, 0.002, 0.0343), ("int8", True, True, 0.002, 0.0345),
                                      ("none", True, True, 0.004, 0.05)]]  # fmt: skip
    fig = figures.tradeoff_chart(rows, str(tmp_path))
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len(rows)
    inside = ax.get_window_extent(renderer)
    for i, box in enumerate(boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
        assert box.count_overlaps(boxes[:i] + boxes[i + 1 :]) == 0, ax.texts[i].get_text()


def test_a_figure_of_part_of_a_section_never_replaces_the_sections_own(tmp_path):
    """A notebook run on a subset of the grid (qtypes none and int8 of 16) draws beside the report's grid and
    chart, never over them: the report's grid keeps matching its tables."""
    rows = [_record(qtype=q, memory_gb=m, latency_s=t) for q, m, t in [("none", 0.004, 0.2), ("int8", 0.002, 0.05)]]
    for r in rows:
        records.append(tmp_path / "results" / "pixart_bf16.jsonl", r)
    grid_png, chart_png = figures.image_grid_path(tmp_path, "pixart_bf16"), figures.tradeoff_path(tmp_path, "pixart_bf16")
    figures.image_grid(rows, str(tmp_path)), figures.tradeoff_chart(rows, str(tmp_path))
    whole = grid_png.read_bytes(), chart_png.read_bytes()
    fig = figures.image_grid(rows[:1], str(tmp_path))
    chart = figures.tradeoff_chart(rows[:1], str(tmp_path))
    assert (grid_png.read_bytes(), chart_png.read_bytes()) == whole
    assert figures.subset_path(grid_png).read_bytes() == fig.png and "subset: 1 of the 2" in fig._suptitle.get_text()
    assert figures.subset_path(chart_png).read_bytes() == chart.png
    figures.image_grid(rows[:1], str(tmp_path), shared=True)  # the report's own rows
    assert grid_png.read_bytes() != whole[0]
