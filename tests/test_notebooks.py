"""The notebooks: generated from one template, thin, and run by papermill with their parameters injected; the
results document they feed parses back (the batch itself: tests/test_batch.py)."""

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

import grids
from helpers import batch, grid, params as P, records, report
from helpers.quant import fuse_unsupported
from helpers.registry import DTYPES, MODELS

ROOT = Path(__file__).resolve().parents[1]
# grids.SMALL, each configuration fused and unfused too: four configurations, the notebooks' fuse column.
SMALL = {**grids.SMALL, "fuse_qkv": [False, True]}


@pytest.mark.parametrize("model", MODELS)
def test_notebook_is_thin_and_clean(model):
    from helpers.notebook import WIDTH

    nb = nbformat.read(ROOT / "notebooks" / f"{model}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # the title first, then the parameters, whose lines fit the cell (no sideways scrollbar)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert nb.cells[1] is code[0] and "parameters" in code[0].metadata.get("tags", [])
    assert max(len(line) for line in code[0].source.splitlines()) <= WIDTH
    # the kernel metadata JupyterLab writes: opening the notebook does not mark it modified
    assert nb.metadata.kernelspec.display_name == "Python 3 (ipykernel)" and "pygments_lexer" in nb.metadata.language_info
    defaults = {}
    for node in ast.parse(code[0].source).body:
        assert isinstance(node, ast.AnnAssign), "the parameters cell holds only typed assignments"
        defaults[node.target.id] = ast.literal_eval(node.value)
    assert defaults["model"] == model
    # every parameter is there, in order, with the helpers' defaults except where a notebook needs its own
    assert list(defaults) == list(P.DEFAULTS)
    differs = {k for k, v in defaults.items() if v != P.DEFAULTS[k]}
    assert differs <= {"model", "out_dir"} and defaults["out_dir"] == "../outputs"
    for cell in code:
        tree = ast.parse("\n".join(l for l in cell.source.splitlines() if not l.startswith("%")))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree))
        assert not cell.get("outputs") and cell.get("execution_count") is None, "commit notebooks without outputs"


# Every notebook once, both dtypes between them: a kernel's start costs more than its four configurations,
# and the dtype is only a parameter. Two batches into one folder: the results document covers both.
# Each model in one dtype, alternating: every notebook runs once, and both dtypes run.
SECTIONS = {m: ("bf16", "fp16")[i % 2] for i, m in enumerate(MODELS)}


@pytest.mark.parametrize("model", MODELS)
def test_committed_notebook_is_exactly_what_the_template_gives(model):
    from helpers.notebook import notebook_text

    committed = (ROOT / "notebooks" / f"{model}.ipynb").read_text(encoding="utf-8")
    assert committed == notebook_text(model), f"run: python -m helpers notebook --model {model}"


def test_every_notebook_in_the_folder_has_a_model():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(MODELS)


def test_a_notebook_left_with_its_defaults_runs_every_qtype_of_the_chosen_backend():
    """Changing only ``backend`` in JupyterLab must not raise: qtypes unset means all of that backend's."""
    from helpers.notebook import parameters_source
    from helpers.registry import BACKEND_QTYPES

    namespace = {}
    exec(parameters_source("pixart"), namespace)
    for backend, qtypes in BACKEND_QTYPES.items():
        assert P.from_namespace({**namespace, "backend": backend})["qtypes"] == list(qtypes)


def test_run_all_again_in_the_same_kernel_reads_only_the_parameters():
    """A second Run All finds ``params``, ``rows``, ``predicted`` and the user's own variables in the kernel:
    none of them is a parameter. papermill's injected cell (the one run just before) adds its names."""
    from helpers.notebook import parameters_source

    namespace = {}
    exec(parameters_source("pixart"), namespace)
    first = P.from_namespace(namespace)
    namespace.update(params=first, rows=[], predicted={}, scratch=1, qtypes=["none"])
    assert P.from_namespace(namespace) == P.validate({"model": "pixart", "out_dir": "../outputs", "qtypes": ["none"]})
    injected = {**namespace, "In": ["", "model: str = ...", "# Parameters\nstpes = 3\n", "params = ..."], "stpes": 3}
    with pytest.raises(ValueError, match="unknown parameter 'stpes'"):
        P.from_namespace(injected)


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    cwd = os.getcwd()
    os.chdir(out.parent)  # a relative out_dir, as make report gives: notebooks side by side must not mix folders
    try:
        wanted = [f"{m}_{d}" for m, d in SECTIONS.items()]  # one batch: each model in its one dtype
        assert batch.run_batch(out_dir=out.name, overrides=SMALL, sections=wanted) == 0
        assert os.getcwd() == str(out.parent), "the batch changed this process's working directory"
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.slow
def test_every_notebook_ran_with_the_injected_parameters(batch_out):
    assert set(SECTIONS) == set(MODELS) and set(SECTIONS.values()) == set(DTYPES)
    for model, dtype in SECTIONS.items():
        nb = nbformat.read(batch_out / "notebooks" / f"{model}_{dtype}.ipynb", as_version=4)
        injected = nb.metadata.papermill.parameters
        assert injected["dtype"] == dtype and injected["qtypes"] == SMALL["qtypes"]
        # two notebooks side by side on the CPU, each with its share of the cores, and measured so
        assert injected["threads"] == max(1, (os.cpu_count() or 1) // 2)
        rows = grid.grid_records(P.validate({**injected, "model": model}))
        assert rows and {r.torch_threads for r in rows} == {injected["threads"]}
        assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
        html = (batch_out / "notebooks" / f"{model}_{dtype}.html").read_text()
        assert "helpers.grid.run_grid" not in html, "inputs are hidden in the HTML export"
        # the image grid and the trade-off chart are images, in the notebook and in its HTML export; the chart
        # of what fits says why it is empty where no peak was predicted on this machine (fit predicts them)
        figure_cells = [c for c in nb.cells if "helpers.figures." in c.source]
        assert len(figure_cells) == 3 and "fits_chart" in figure_cells[2].source
        (said,) = [o for o in figure_cells[2].outputs if o.output_type == "stream"]
        assert said.text.startswith("No chart of what fits: peaks not predicted on this machine yet: ")
        for cell in figure_cells[:2]:
            (result,) = [o for o in cell.outputs if o.output_type == "execute_result"]
            assert result.data["image/png"][:8] == "iVBORw0K", f"{cell.source!r} shows no image"
        assert html.count('src="data:image/png;base64,') >= 2, "the HTML export lacks the two figures"
        assert "&lt;Figure size" not in html and "<Figure size" not in html, "a figure shown as its repr text"
        # a plain quanto run shows no library noise (helpers/quiet.py)
        streams = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.output_type == "stream")
        for noise in ("Failed to load", "register_constant", "Unable to import `torchao`"):
            assert noise not in streams, noise
        rows = records.read(batch_out / "results" / f"{model}_{dtype}.jsonl")
        assert {(r.qtype, r.fuse_qkv, r.dtype, r.status) for r in rows} == {
            (q, f, dtype, "skipped" if f and fuse_unsupported(model) else "ok")
            for q in SMALL["qtypes"] for f in SMALL["fuse_qkv"]
        }


def _parse_results(text: str) -> dict:
    """RESULTS.md -> {(model, dtype, batch size): {"image": link, "memory": rows, "latency": rows}}."""
    sections, current, table = {}, None, None
    for line in text.splitlines():
        if m := re.fullmatch(r"## (\S+) - Batch Size: (\d+), Data Type: (\w+)", line):
            current = sections.setdefault((m[1], int(m[2]), m[3]), {})
        elif m := re.fullmatch(r"!\[(.+) Comparison\]\((.+)\)", line):
            current["image"] = (m[1], m[2])
        elif line == "### Sorted by Memory Usage (Ascending)":
            table = current.setdefault("memory", [])
        elif line == "### Sorted by Latency (Ascending)":
            table = current.setdefault("latency", [])
        elif line == "### Fidelity to NONE":
            table = current.setdefault("fidelity", [])
        elif m := re.fullmatch(r"!\[(.+) Trade-off\]\((.+)\)", line):
            current["chart"] = (m[1], m[2])
        elif line.startswith("### "):  # the configurations not measured (n/a; refused or failed)
            table = current.setdefault(line[4:], [])
        elif line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
    return sections


@pytest.mark.slow
def test_results_document_has_the_published_format(batch_out):
    text = (batch_out / "RESULTS.md").read_text()
    assert text.startswith("# Experiment Results\n")
    sections = _parse_results(text)
    assert set(sections) == {(report.title(m), 1, d) for m, d in SECTIONS.items()}
    for (title, _, dtype), s in sections.items():
        model = title.lower()
        assert s["image"] == (f"{model} {dtype}", f"image_grids/{model}_{dtype}_comparison.png")
        assert (batch_out / s["image"][1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for kind, col in (("memory", 3), ("latency", 4)):
            header, rule, *rows = s[kind]
            assert header == ["Quantization", "Quantize TE", "Fuse QKV", "Memory (GB)", "Latency (s)"]
            assert all(set(c) == {"-"} for c in rule)
            assert all(re.fullmatch(r"\d+\.\d{3}", r[3]) and re.fullmatch(r"\d+\.\d{3}", r[4]) for r in rows)
            values = [float(r[col]) for r in rows]
            assert values == sorted(values), f"{title} {dtype}: not sorted by {kind}"
            configs = sorted((r[0], r[1], r[2]) for r in rows)
            fused = ("No", "Yes") if fuse_unsupported(model) is None else ("No",)  # else skipped, not in the table
            assert configs == sorted((q.upper(), "No", f) for q in SMALL["qtypes"] for f in fused)
        header, _, *rows = s["fidelity"]
        assert header == ["Quantization", "Quantize TE", "Fuse QKV", "PSNR (dB)", "SSIM"]
        assert {(r[0], r[3], r[4]) for r in rows if r[0] == "NONE"} == {("NONE", "identical", "1.000")}
        assert all(re.fullmatch(r"\d+\.\d{3}", r[3]) for r in rows if r[0] != "NONE")
        assert s["chart"] == (f"{model} {dtype}", f"charts/{model}_{dtype}_tradeoff.png")
        assert (batch_out / s["chart"][1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_papermill_injecting_an_unknown_parameter_fails_at_the_first_cell(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(
            str(ROOT / "notebooks" / "pixart.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"stpes": 3, "out_dir": str(tmp_path)}, cwd=str(ROOT / "notebooks"),
            kernel_name="python3", progress_bar=False,
        )  # fmt: skip
    assert e.value.ename == "ValueError" and "'stpes'" in e.value.evalue
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_explorer_shows_the_chosen_configuration_beside_the_unquantized_one(batch_out):
    from helpers.explore import explorer

    injected = nbformat.read(batch_out / "notebooks" / "sd3_bf16.ipynb", as_version=4).metadata.papermill.parameters
    p = P.validate({**injected, "model": "sd3"})  # what the batch ran: threads included
    rows = grid.grid_records(p)
    box = explorer(rows, str(batch_out))
    top, qte, fuse, panes = box.children
    qtype = top.children[0]
    # it opens on the lowest-memory quantized configuration, with its fidelity and its peak as the report gives them
    lowest = min((r for r in rows if r.qtype != "none"), key=lambda r: (r.memory_gb, r.latency_s))
    assert (qtype.value, fuse.value) == ("INT8", lowest.fuse_qkv)
    text = " ".join(c.value for c in panes.children[0].children if isinstance(c.value, str))
    assert f"PSNR <b>{lowest.psnr_db:.1f} dB</b>, SSIM <b>{lowest.ssim:.3f}</b>" in text
    from helpers.report import shown_peak

    peak = shown_peak(lowest)
    assert ("n/a</span>" if peak is None else f"{peak:.3f} GB") in text
    assert panes.children[0].layout.margin, "the two panes are kept apart"
    qtype.value, fuse.value = "INT8", True
    chosen, base = panes.children
    chosen_text = " ".join(c.value for c in chosen.children if isinstance(c.value, str))
    base_text = " ".join(c.value for c in base.children if isinstance(c.value, str))
    int8 = next(r for r in rows if r.qtype == "int8" and r.fuse_qkv)
    none = next(r for r in rows if r.qtype == "none" and r.fuse_qkv)
    assert f"{int8.latency_s:.3f} s" in chosen_text and f"{none.latency_s:.3f} s" in base_text
    import ipywidgets

    images = [bytes(c.value) for c in chosen.children if isinstance(c, ipywidgets.Image)]
    assert len(images) == 1 and images[0][:4] == b"\x89PNG"
