"""report.html as a reader sees it: opened in headless Chromium (Debian's ``chromium`` package).

``make test`` installs that package when it is missing. Without it these tests
fail under CI (``CI`` set) and are skipped elsewhere.
"""

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from helpers import figures, grid, params as P, report

CHROMIUM = "/usr/bin/chromium"
# The machines are offline: keep Chromium from calling home (and retrying refused connections).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
EVIL_PROMPT = "<script>alert(1)</script> | **x**"


def _build_report(out_dir: Path, **kw) -> tuple[list, Path]:
    p = P.validate(dict(model="pixart", dtype="bf16", qtypes=["none", "int8"], quantize_te=[False],
                        fuse_qkv=[False], warmup=0, repeats=1, out_dir=str(out_dir), device="cpu", **kw))  # fmt: skip
    rows = grid.run_grid(p, progress=False)
    assert rows and all(r.status == "ok" for r in rows), [r.error for r in rows]
    figures.image_grid(rows, str(out_dir))
    figures.tradeoff_chart(rows, str(out_dir))
    return rows, report.write_report_html(str(out_dir), [rows])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _build_report(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built_evil(tmp_path_factory):
    return _build_report(tmp_path_factory.mktemp("report-evil"), prompts=[EVIL_PROMPT])


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        why = f"{CHROMIUM} not found: `make test` installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_report(browser):
    """open_report(path) -> (page, problems); problems collects console errors, page errors and dialogs."""
    pages = []

    def _open(path: Path):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        problems = {"console": [], "pageerror": [], "dialog": []}
        page.on("console", lambda m: m.type == "error" and problems["console"].append(m.text))
        page.on("pageerror", lambda e: problems["pageerror"].append(str(e)))
        page.on("dialog", lambda d: (problems["dialog"].append(d.message), d.dismiss()))
        page.goto(path.resolve().as_uri(), wait_until="load")
        return page, problems

    yield _open
    for page in pages:
        page.close()


def _latencies(page) -> list[float]:
    col = page.locator("table.sortable thead th").all_inner_texts().index("Latency (s)")
    return [float(v) for v in page.eval_on_selector_all(
        "table.sortable tbody tr", f"rows => rows.map(r => r.cells[{col}].dataset.value)")]  # fmt: skip


@pytest.mark.slow
def test_report_renders_images_and_sorts(open_report, built, tmp_path):
    rows, path = built
    page, problems = open_report(path)

    widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths), widths

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as image:
        extrema = image.convert("RGB").getextrema()
    assert any(lo < hi for lo, hi in extrema), f"blank screenshot: {extrema}"  # more than one colour

    header = page.locator("table.sortable th", has_text=re.compile(r"^Latency \(s\)$"))
    header.click()
    ascending = _latencies(page)
    assert len(ascending) == len(rows) and ascending == sorted(ascending)
    header.click()
    assert _latencies(page) == ascending[::-1]

    assert problems == {"console": [], "pageerror": [], "dialog": []}


def _column(page, table: str, name: str) -> list[tuple[str, str]]:
    """(text, tooltip) of each body cell of ``name`` in the first ``table`` (a CSS selector)."""
    col = page.locator(f"{table} thead th").all_inner_texts().index(name)
    cells = page.eval_on_selector(table, f"t => Array.from(t.tBodies[0].rows, r => [r.cells[{col}].textContent, "
                                         f"r.cells[{col}].title])")  # fmt: skip
    return [tuple(c) for c in cells]


@pytest.mark.slow
def test_report_leads_with_a_summary_and_fits_the_page(open_report, built):
    rows, path = built
    page, problems = open_report(path)
    assert page.evaluate("""() => {
        const summary = document.querySelector("table.summary"), first = document.querySelector("table.sortable");
        return summary.compareDocumentPosition(first) === Node.DOCUMENT_POSITION_FOLLOWING;
    }"""), "the summary comes before the first detailed table"
    # the tiny int8 transformer holds less than NONE's: the summary says how much, against NONE
    assert [text for text, _ in _column(page, "table.summary", "Quantization")][0] == "INT8"
    assert float(_column(page, "table.summary", "Memory saved (%)")[0][0]) > 0

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    cells = page.eval_on_selector_all("td", "tds => tds.map(td => td.textContent)")
    assert cells and not [c for c in cells if re.search(r"\d[eE][+-]?\d", c)], "a cell shows an exponent"
    alts = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.getAttribute('alt') || '')")
    assert len(alts) == 2 and all(a.strip() for a in alts), alts

    targets = page.eval_on_selector_all("nav.toc a", "links => links.map(a => a.getAttribute('href'))")
    assert len(targets) == 3 and all(page.locator(t).count() == 1 for t in targets), targets
    environments = page.eval_on_selector_all('a[href^="#environment-"]', "links => links.map(a => a.hash)")
    assert set(environments) == {"#environment-E1"} and page.locator("#environment-E1").count() == 1

    # a CPU peak of a tiny pipeline says nothing: n/a, with why
    assert ("n/a", report.NOT_APPLICABLE[report.PEAK_CPU]) in _column(page, "table.sortable", report.PEAK_CPU)
    assert problems == {"console": [], "pageerror": [], "dialog": []}


@pytest.mark.slow
def test_prompt_with_markup_renders_as_text(open_report, built_evil):
    rows, path = built_evil
    page, problems = open_report(path)
    assert problems == {"console": [], "pageerror": [], "dialog": []}  # no alert(1) dialog
    assert page.locator("script").count() == 1  # the report's own sorting script only
    assert EVIL_PROMPT in page.evaluate("document.body.innerText")


def test_markdown_tables_keep_five_cells_with_markup_prompt(built_evil):
    rows, _ = built_evil
    md = report.results_markdown([rows])
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert table_lines
    for line in table_lines:
        cells = re.split(r"(?<!\\)\|", line)[1:-1]  # unescaped pipes only
        assert len(cells) == len(report.COLUMNS), line
    assert "<script>" not in md


def _fits_row(qtype, offload, peak, te_qtype=None):
    return dict(model="pixart", dtype="bf16", qtype=qtype, quantize_te=te_qtype is not None, te_qtype=te_qtype,
                fuse_qkv=te_qtype is not None, batch_size=1, offload=offload, memory_gb=peak, loaded_reserved_gb=peak,
                peak_allocated_gb=peak, peak_reserved_gb=peak, peak_phase="denoise", host_gb=30.0)  # fmt: skip


@pytest.mark.slow
def test_what_fits_table_and_chart_fit_the_page(open_report, built):
    """The report's "What fits" (estimate rows built by hand in the estimate's form, the longest cell text a
    mixed-qtype configuration gives): a table per card and a chart, at 1280 px without scrolling sideways."""
    from helpers import fit

    rows, path = built
    found = fit.Predictions("pixart", "bf16", "quanto", "full", [
        _fits_row("none", "none", 21.0), _fits_row("none", "group-block", 9.0), _fits_row("none", "sequential", 3.2),
        _fits_row("int8", "none", 12.5), _fits_row("int8", "group-leaf", 7.1),
        _fits_row("int8", "none", 10.4, te_qtype="int4"), _fits_row("int8", "group-block", 6.0, te_qtype="int4"),
    ])  # fmt: skip
    target = path.with_name("report-fits.html")
    target.write_text(report.report_html(str(path.parent), [rows], fits=[found]), encoding="utf-8")
    page, problems = open_report(target)

    assert page.locator("nav.toc a[href='#what-fits']").count() == 1 and page.locator("#what-fits").count() == 1
    heads = page.locator("table.fits thead th").all_inner_texts()
    assert heads == ["Section"] + [f"{card} GiB" for card in fit.CARDS_GB]
    cells = page.locator("table.fits tbody td").all_inner_texts()
    assert cells[0] == "pixart bf16" and all("GiB" in c for c in cells[1:]), cells
    chart = page.locator("img[alt^='What fits chart of pixart bf16']")
    assert chart.count() == 1 and chart.evaluate("i => i.complete && i.naturalWidth > 0")

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    assert page.eval_on_selector("table.fits", "t => t.scrollWidth <= t.parentElement.clientWidth"), \
        "the What fits table scrolls in its box"  # fmt: skip
    assert chart.bounding_box()["width"] <= 1280
    assert problems == {"console": [], "pageerror": [], "dialog": []}
