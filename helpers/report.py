"""The results document (``RESULTS.md``, in the published format) and ``report.html``.

Both are built from records only. Text that came from parameters (prompt,
paths, error messages) is escaped wherever it is rendered.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from .figures import image_grid_path, recommended, section_of, tradeoff_path
from .params import config_of
from .records import Record, labels

COLUMNS = ["Quantization", "Quantize TE", "Fuse QKV", "Memory (GB)", "Latency (s)"]



def title(model: str) -> str:
    """``flux-dev`` -> ``Flux-dev``, as the published headings write it."""
    return model[:1].upper() + model[1:]


def heading(model: str, batch_size: int, dtype: str, backend: str) -> str:
    """The published section heading; a backend other than quanto is named after it."""
    text = f"{title(model)} - Batch Size: {batch_size}, Data Type: {dtype}"
    return text if backend == "quanto" else f"{text} - Backend: {backend}"


def _config_table(rows: list[Record], metrics: dict) -> pd.DataFrame:
    """The ``ok`` rows in grid order: the three configuration columns, then ``metrics`` (name -> getter)."""
    ok = [r for r in rows if r.status == "ok"]
    data = {
        "Quantization": [labels(r)[0] for r in ok],
        "Quantize TE": [labels(r)[1] for r in ok],
        "Fuse QKV": [labels(r)[2] for r in ok],
    }
    data.update({name: [get(r) for r in ok] for name, get in metrics.items()})
    return pd.DataFrame(data)


def table(rows: list[Record]) -> pd.DataFrame:
    """The published table: memory and latency of the ``ok`` rows, in grid order."""
    return _config_table(rows, {"Memory (GB)": lambda r: r.memory_gb, "Latency (s)": lambda r: r.latency_s})


def sorted_tables(rows: list[Record]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(by memory, by latency), ascending; ties keep grid order."""
    df = table(rows)
    by_memory = df.sort_values("Memory (GB)", kind="stable").reset_index(drop=True)
    by_latency = df.sort_values("Latency (s)", kind="stable").reset_index(drop=True)
    return by_memory, by_latency


def mixed_hardware(rows: list[Record]) -> str | None:
    """A warning when a section's ``ok`` records were measured on more than one device, else ``None``."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.status == "ok":
            counts[r.device_name] = counts.get(r.device_name, 0) + 1
    if len(counts) < 2:
        return None
    where = "; ".join(f"{name or 'unknown'}: {n}" for name, n in counts.items())
    return (f"Mixed hardware: these configurations were measured on {len(counts)} different devices ({where}). "
            "A table mixing hardware is not a comparison.")  # fmt: skip


PREDICTED = "Full-size memory, predicted (GB)"
RANDOM_NOTE = "random weights: costs are real, images are noise (fidelity is not meaningful)"


def _predicted(r: Record, predicted: dict | None) -> float | None:
    if predicted is None:
        return None
    return predicted.get(config_of(r))


def styled_tables(rows: list[Record], predicted: dict | None = None):
    """The two sorted tables as pandas Stylers with captions, for a notebook to display.

    With ``predicted`` (``estimate.predicted_gb``), a column gives each
    configuration's predicted memory at full size.
    """
    by_memory, by_latency = sorted_tables(rows)
    if predicted is not None:
        ok = [r for r in rows if r.status == "ok"]
        values = {labels(r): _predicted(r, predicted) for r in ok}
        for df in (by_memory, by_latency):
            df[PREDICTED] = [values[k] for k in zip(df["Quantization"], df["Quantize TE"], df["Fuse QKV"])]
    fid = fidelity_table(rows).set_index(["Quantization", "Quantize TE", "Fuse QKV"])
    by_memory = by_memory.join(fid, on=["Quantization", "Quantize TE", "Fuse QKV"])
    by_latency = by_latency.join(fid, on=["Quantization", "Quantize TE", "Fuse QKV"])
    mixed = mixed_hardware(rows)
    return [
        df.style.set_caption(caption + (f". {mixed}" if mixed else "")).format(precision=3).hide(axis="index")
        for df, caption in (
            (by_memory, "Sorted by Memory Usage (Ascending)"),
            (by_latency, "Sorted by Latency (Ascending)"),
        )
    ]


def _psnr(r: Record):
    return "identical" if r.identical else r.psnr_db


def fidelity_table(rows: list[Record]) -> pd.DataFrame:
    """PSNR (dB) and SSIM of each ``ok`` configuration against NONE (same fuse and batch size), grid order."""
    return _config_table(
        rows,
        {
            "PSNR (dB)": lambda r: _psnr(r) if r.ssim is not None else "n/a",
            "SSIM": lambda r: r.ssim if r.ssim is not None else "n/a",
        },
    )


def recommended_text(rows: list[Record]) -> str:
    best = recommended(rows)
    return "; ".join(
        "{} / TE {} / Fuse {}".format(*labels(r))
        for r in best
    ) or "none measured"


def _md_cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = html.escape(str(value), quote=False).replace("|", "\\|")
    return " ".join(text.split())


def markdown_table(df: pd.DataFrame) -> str:
    widths = [len(c) for c in df.columns]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for values in df.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(v) for v in values) + " |")
    return "\n".join(lines)


def batch_sizes(rows: list[Record]) -> list[int]:
    return sorted({r.batch_size for r in rows})


def results_markdown(sections: list[list[Record]]) -> str:
    """``# Experiment Results`` and, per model and dtype and batch size, the grid image and two tables."""
    out = ["# Experiment Results", ""]
    for rows in sections:
        if not rows:
            continue
        model, dtype, backend, section = rows[0].model, rows[0].dtype, rows[0].backend, section_of(rows[0])
        for bs in batch_sizes(rows):
            sub = [r for r in rows if r.batch_size == bs]
            by_memory, by_latency = sorted_tables(sub)
            out += [
                f"## {heading(model, bs, dtype, backend)}",
                "",
                *([f"*{RANDOM_NOTE}*", ""] if rows[0].preset == "random-full" else []),
                *([f"**{_md_cell(mixed_hardware(sub))}**", ""] if mixed_hardware(sub) else []),
                f"![{section.replace('_', ' ')} Comparison](image_grids/{section}_comparison.png)",
                "",
                "### Sorted by Memory Usage (Ascending)",
                "",
                markdown_table(by_memory),
                "",
                "### Sorted by Latency (Ascending)",
                "",
                markdown_table(by_latency),
                "",
                "### Fidelity to NONE",
                "",
                markdown_table(fidelity_table(sub)),
                "",
                f"![{section.replace('_', ' ')} Trade-off](charts/{section}_tradeoff.png)",
                "",
                f"Recommended (no other configuration uses less memory and less time): {recommended_text(sub)}",
                "",
            ]
    return "\n".join(out)


def write_results_markdown(out_dir: str, sections: list[list[Record]]) -> Path:
    path = Path(out_dir) / "RESULTS.md"
    path.write_text(results_markdown(sections), encoding="utf-8")
    return path


# ---------------------------------------------------------------- report.html

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1200px;color:#222}
h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fde8e8}
tr.skipped td{background:#fff6da}
.env{font-size:.8rem;color:#555}
.mixed{background:#fde8e8;padding:.25rem .5rem}
img.grid{max-width:100%;border:1px solid #ddd}
"""

# Sort a table by the clicked column (numbers numerically, blanks last); click again to reverse.
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var asc = th.dataset.dir !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? "asc" : "desc";
    var key = function (tr) {
      var t = tr.cells[col].dataset.value !== undefined ? tr.cells[col].dataset.value : tr.cells[col].textContent;
      var n = parseFloat(t);
      return t === "" ? null : (isNaN(n) ? t : n);
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""

_HTML_COLUMNS = [
    ("Quantization", lambda r: labels(r)[0]),
    ("Quantize TE", lambda r: labels(r)[1]),
    ("Fuse QKV", lambda r: labels(r)[2]),
    ("Memory (GB)", lambda r: r.memory_gb),
    ("Peak memory (GB)", lambda r: r.peak_memory_gb),
    ("Latency (s)", lambda r: r.latency_s),
    ("Latency min (s)", lambda r: r.latency_min_s),
    ("Latency max (s)", lambda r: r.latency_max_s),
    ("Compile (s)", lambda r: r.compile_s),
    ("Init (s)", lambda r: r.init_s),
    ("Repeats", lambda r: r.repeats),
    ("PSNR to NONE (dB)", lambda r: "identical" if r.identical else r.psnr_db),
    ("SSIM to NONE", lambda r: r.ssim),
    ("Latent rel. error", lambda r: r.latent_rel_error),
    ("Status", lambda r: r.status),
    ("Reason", lambda r: r.error or ""),
]


def _html_cell(value) -> str:
    if value is None:
        return '<td class="num" data-value=""></td>'
    if isinstance(value, float):
        # 4 significant digits: the tiny preset's figures are far below the 3 decimals of RESULTS.md
        return f'<td class="num" data-value="{value!r}">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _html_table(rows: list[Record], predicted: dict | None) -> str:
    order = sorted(rows, key=lambda r: (r.status != "ok", r.memory_gb if r.memory_gb is not None else 0))
    columns = list(_HTML_COLUMNS)
    if predicted is not None:
        columns.insert(4, (PREDICTED, lambda r: _predicted(r, predicted)))
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    body = []
    for r in order:
        css = {"error": "failed", "skipped": "skipped"}.get(r.status, "")
        cells = "".join(_html_cell(get(r)) for _, get in columns)
        body.append(f'<tr class="{css}">{cells}</tr>')
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _embedded_png(path: Path) -> str:
    if not path.is_file():
        return "<p><em>no image grid</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="grid" alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _environment(rows: list[Record]) -> str:
    r = rows[0]
    versions = ", ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in sorted(r.versions.items()))
    return (
        f'<p class="env">Measured on {html.escape(r.device)} ({html.escape(r.device_name)}); {versions}. '
        f"Preset {html.escape(r.preset)}, checkpoint <code>{html.escape(r.checkpoint)}</code>; "
        f"{r.steps} steps at {r.width}&times;{r.height}, guidance {r.guidance_scale}; "
        f"warm-up {r.warmup}, repeats {r.repeats}; seed {r.seed}; "
        f"prompts {', '.join('&ldquo;' + html.escape(p) + '&rdquo;' for p in r.prompts)}.</p>"
    )


def report_html(out_dir: str, sections: list[list[Record]], predictions: list[dict | None] | None = None) -> str:
    """``predictions``, one per section (or ``None``): ``estimate.predicted_gb`` of its model and dtype."""
    predictions = predictions or [None] * len(sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Experiment Results</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Experiment Results</h1>",
        "<p>What each quantization choice costs (memory, latency) and what it looks like. "
        "Click a column heading to sort. Memory (GB) is what the model holds; peak is the most one "
        "inference needed on top; latency is the median of the timed runs. "
        f"<b>{html.escape(PREDICTED)}</b> is not measured: it is what the same configuration of the "
        "full-size checkpoint will hold, predicted from its architecture (<code>python -m helpers estimate</code>).</p>",
    ]
    for rows, predicted in zip(sections, predictions):
        if not rows:
            continue
        model, dtype, backend, section = rows[0].model, rows[0].dtype, rows[0].backend, section_of(rows[0])
        for bs in batch_sizes(rows):
            sub = [r for r in rows if r.batch_size == bs]
            parts += [
                f"<h2>{html.escape(heading(model, bs, dtype, backend))}</h2>",
                f'<p class="env"><b>{RANDOM_NOTE}</b></p>' if rows[0].preset == "random-full" else "",
                f'<p class="mixed"><b>{html.escape(mixed_hardware(sub))}</b></p>' if mixed_hardware(sub) else "",
                _environment(sub),
                _html_table(sub, predicted),
                _embedded_png(image_grid_path(out_dir, section)),
                "<h3>Trade-off</h3>",
                _embedded_png(tradeoff_path(out_dir, section)),
                f"<p><b>Recommended</b> (no other configuration uses less memory and less time): "
                f"{html.escape(recommended_text(sub))}</p>",
            ]
    parts += [f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)


def write_report_html(out_dir: str, sections: list[list[Record]], predictions: list[dict | None] | None = None) -> Path:
    path = Path(out_dir) / "report.html"
    path.write_text(report_html(out_dir, sections, predictions), encoding="utf-8")
    return path
