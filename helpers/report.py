"""The results document (``RESULTS.md``, in the published format) and ``report.html``.

Both are built from records only. Text that came from parameters (prompt,
paths, error messages) is escaped wherever it is rendered.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

from .backends import PUBLISHED
from .figures import fits_chart, fits_path, image_grid_path, recommended, tradeoff_path
from .cells import Cell, cell_of
from .records import SUSPECT, Record, identity_hardware, labels, section_of, suspect
from .registry import preset

COLUMNS = ["Quantization", "Quantize TE", "Fuse QKV", "Memory (GB)", "Latency (s)"]



def title(model: str) -> str:
    """``flux-dev`` -> ``Flux-dev``, as the published headings write it."""
    return model[:1].upper() + model[1:]


def heading(model: str, batch_size: int, dtype: str, backend: str, gpu: str | None = None) -> str:
    """The published section heading; a backend other than quanto is named after it, a GPU model after it."""
    text = f"{title(model)} - Batch Size: {batch_size}, Data Type: {dtype}"
    text = text if backend == PUBLISHED else f"{text} - Backend: {backend}"
    return text if gpu is None else f"{text} - GPU: {gpu}"


def gpu_label(r: Record) -> str | None:
    """``NVIDIA H100 80GB HBM3 (compute capability 9.0)`` for a CUDA record, ``None`` on the CPU."""
    return None if r.gpu is None else f"{r.gpu} (compute capability {r.compute_capability})"


def tables_of(rows: list[Record]) -> list[tuple[int, str | None, list[Record]]]:
    """A section's records split into the tables it shows: one per batch size and GPU model, so no table
    compares configurations measured on different GPUs. ``(batch size, GPU label or None, records)``."""
    out = []
    for bs in batch_sizes(rows):
        for hardware in dict.fromkeys(identity_hardware(r) for r in rows if r.batch_size == bs):
            sub = [r for r in rows if r.batch_size == bs and identity_hardware(r) == hardware]
            out.append((bs, gpu_label(sub[0]), sub))
    return out


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


# The configurations a section did not measure, in two tables: what this device cannot run by design (n/a),
# and what a library refused or what failed (skipped, error).
NOT_RUN = (("Not applicable on this device (n/a)", ("n/a",)), ("Refused or failed", ("skipped", "error")))


def not_run_table(rows: list[Record], statuses: tuple[str, ...]) -> pd.DataFrame:
    """The rows with one of ``statuses``, in grid order: configuration, offload mode, status and reason."""
    kept = [r for r in rows if r.status in statuses]
    return pd.DataFrame({
        "Quantization": [labels(r)[0] for r in kept],
        "Quantize TE": [labels(r)[1] for r in kept],
        "Fuse QKV": [labels(r)[2] for r in kept],
        "Offload": [r.offload for r in kept],
        "Status": [r.status for r in kept],
        "Reason": [r.error or "" for r in kept],
    })  # fmt: skip


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


def _predicted(r: Record, predicted: dict | None) -> float | None:
    if predicted is None:
        return None
    return predicted.get(cell_of(r))


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
        for bs, gpu, sub in tables_of(rows):
            by_memory, by_latency = sorted_tables(sub)
            out += [
                f"## {heading(model, bs, dtype, backend, gpu)}",
                "",
                f"Each latency is one call of {sub[0].steps} steps at {sub[0].width}×{sub[0].height}, guidance "
                f"{sub[0].guidance_scale:g}.",
                "",
                *([f"*{note}*", ""] if (note := preset(rows[0].preset).NOTE) else []),
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
                *[line for title, statuses in NOT_RUN if (missing := not_run_table(sub, statuses)).shape[0]
                  for line in (f"### {title}", "", markdown_table(missing), "")],
                *[line for r in sub if suspect(r) for line in
                  (f"**{_md_cell(labels(r)[0])}, TE {labels(r)[1]}, fuse {labels(r)[2]}**: {_md_cell(suspect(r))}.", "")],
            ]
    return "\n".join(out)


def write_results_markdown(out_dir: str, sections: list[list[Record]]) -> Path:
    path = Path(out_dir) / "RESULTS.md"
    path.write_text(results_markdown(sections), encoding="utf-8")
    return path


# ---------------------------------------------------------------- report.html

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;padding:0 1.5rem;max-width:1200px;color:#222}
h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
h3 .env{font-weight:normal}
nav.toc ul{margin:.25rem 0;columns:2 24rem}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.na{color:#888;cursor:help}
table.summary th,table.fits th{cursor:auto}
tr.failed td{background:#fde8e8}
tr.skipped td{background:#fff6da}
tr.not-applicable td{background:#eef2f7;color:#445}
tr.suspect td{background:#fde8e8;font-style:italic}
.env{font-size:.8rem;color:#555}
code{overflow-wrap:anywhere}
.mixed{background:#fde8e8;padding:.25rem .5rem}
img{max-width:100%;height:auto;border:1px solid #ddd}
table.fits td{font-size:.8rem;min-width:6rem}
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


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits in fixed notation, never an exponent: 0.000123, 3.04, 1230."""
    if not math.isfinite(value):
        return str(value)
    rounded = float(f"{value:.{digits - 1}e}")
    decimals = digits - 1 - math.floor(math.log10(abs(rounded))) if rounded else 0
    return f"{rounded:.{max(decimals, 0)}f}"


# The peak column says what its figure is: a table holds one device's records (tables_of).
PEAK_CPU = "Peak growth (GB, CPU resident)"
PEAK_CUDA = "Peak allocated (GB, absolute)"

# How report.html writes each numeric column: memory as published (3 decimals), timings to 3 significant digits.
FORMATS = {
    "Memory (GB)": "{:.3f}".format,
    PREDICTED: "{:.3f}".format,
    PEAK_CPU: "{:.3f}".format,
    PEAK_CUDA: "{:.3f}".format,
    "Reserved (GB)": "{:.3f}".format,
    "Device used (GB, NVML)": "{:.3f}".format,
    "Peak reserved (GB)": "{:.3f}".format,
    "Peak device used (GB, NVML)": "{:.3f}".format,
    "Host peak (GB)": "{:.3f}".format,
    "Memory saved (GB)": "{:.3f}".format,
    "Memory saved (%)": "{:.1f}".format,
    "Latency (s)": significant,
    "Latency min (s)": significant,
    "Latency max (s)": significant,
    "Latency change (%)": "{:+.1f}".format,
    "Compile (s)": significant,
    "Init (s)": significant,
    "PSNR to NONE (dB)": "{:.1f}".format,
    "SSIM to NONE": "{:.3f}".format,
    "Latent rel. error": significant,
}

_NO_REFERENCE = "No fidelity: its NONE reference (Quantize TE No, same Fuse QKV and batch size) did not run"
# Why a measured (``ok``) configuration has no figure in a column: its cell shows n/a with this as tooltip.
NOT_APPLICABLE = {
    PEAK_CPU: (
        "On the CPU, peak is how much the process's resident memory grew during one call. Below 1 MB "
        "(or where Linux cannot reset the peak) that says nothing: the call reuses memory earlier calls left resident."
    ),
    "Host peak (GB)": "Linux did not say (no /proc/self/status)",
    PREDICTED: "No prediction: the estimate cannot quantize this configuration on the meta device",
    "Compile (s)": "The transformer is not compiled",
    "Init (s)": "Only the random-full preset builds its weights; the others load them",
    "PSNR to NONE (dB)": _NO_REFERENCE,
    "SSIM to NONE": _NO_REFERENCE,
    "Latent rel. error": _NO_REFERENCE,
}


def shown_peak(r: Record) -> float | None:
    """Peak memory, but ``None`` on the CPU below what the table shows (0.000 GB), where it carries no information."""
    if r.device == "cpu" and (r.peak_memory_gb or 0) < 0.0005:
        return None
    return r.peak_memory_gb


_HTML_COLUMNS = {
    "Quantization": lambda r: labels(r)[0],
    "Quantize TE": lambda r: labels(r)[1],
    "Fuse QKV": lambda r: labels(r)[2],
    "Memory (GB)": lambda r: r.memory_gb,
    PEAK_CPU: shown_peak,
    PEAK_CUDA: shown_peak,
    "Reserved (GB)": lambda r: r.memory_reserved_gb,
    "Device used (GB, NVML)": lambda r: r.device_used_gb,
    "Peak reserved (GB)": lambda r: r.peak_reserved_gb,
    "Peak device used (GB, NVML)": lambda r: r.peak_device_used_gb,
    "Host peak (GB)": lambda r: r.host_peak_gb,
    "Latency (s)": lambda r: r.latency_s,
    "Steps": lambda r: r.steps,
    "Latency min (s)": lambda r: r.latency_min_s,
    "Latency max (s)": lambda r: r.latency_max_s,
    "Compile (s)": lambda r: r.compile_s,
    "Init (s)": lambda r: r.init_s,
    "Repeats": lambda r: r.repeats,
    "PSNR to NONE (dB)": lambda r: "identical" if r.identical else r.psnr_db,
    "SSIM to NONE": lambda r: r.ssim,
    "Latent rel. error": lambda r: r.latent_rel_error,
    "Status": lambda r: r.status + (f" ({SUSPECT})" if suspect(r) else ""),
    "Reason": lambda r: r.error or suspect(r) or "",
}
# Columns only a CUDA table has (the caching allocator and NVML), and the peak column of the other device.
_CUDA_ONLY = ("Reserved (GB)", "Device used (GB, NVML)", "Peak reserved (GB)", "Peak device used (GB, NVML)")


def html_columns(rows: list[Record]) -> dict:
    """The detailed table's columns for one table's records (all on one device, see ``tables_of``)."""
    cuda = any(r.device == "cuda" for r in rows)
    hidden = (PEAK_CPU,) if cuda else (PEAK_CUDA, *_CUDA_ONLY)
    return {name: get for name, get in _HTML_COLUMNS.items() if name not in hidden}


def _html_cell(column: str, value, why: str | None = None) -> str:
    """A number in its column's format (the raw value in ``data-value``, to sort by); text escaped.

    ``why``: the figure does not apply here; the cell shows n/a with ``why`` as its tooltip.
    """
    if why is not None:
        return f'<td class="num na" data-value="" title="{html.escape(why)}">n/a</td>'
    if value is None:
        return '<td class="num" data-value=""></td>'
    if isinstance(value, float):
        return f'<td class="num" data-value="{value!r}">{FORMATS[column](value)}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _html_row(r: Record, columns: dict) -> str:
    """A failed or skipped configuration's figures stay blank: its Reason says why."""
    css = {"error": "failed", "skipped": "skipped", "n/a": "not-applicable"}.get(r.status, "suspect" if suspect(r) else "")
    cells = []
    for name, get in columns.items():
        value = get(r)
        why = NOT_APPLICABLE.get(name, "Not measured") if value is None and r.status == "ok" else None
        cells.append(_html_cell(name, value, why))
    return f'<tr class="{css}">{"".join(cells)}</tr>'


def _table(columns: dict, rows: list[Record], css: str) -> str:
    """A table in a box of its own width, so a wide one scrolls there and not the page."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(_html_row(r, columns) for r in rows)
    return (f'<div class="table-wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")  # fmt: skip


def _html_table(rows: list[Record], predicted: dict | None) -> str:
    """The measured configurations (ok), sortable; then, each in a table apart, what this device cannot run
    (n/a) and what a library refused or what failed (skipped, error), with the reason."""
    measured = sorted([r for r in rows if r.status == "ok"], key=lambda r: r.memory_gb if r.memory_gb is not None else 0)
    columns = {}
    for name, get in html_columns(rows).items():
        columns[name] = get
        if name == "Memory (GB)" and predicted is not None:
            columns[PREDICTED] = lambda r: _predicted(r, predicted)
    parts = [_table(columns, measured, "sortable")] if measured else []
    shown = {**{n: _HTML_COLUMNS[n] for n in ("Quantization", "Quantize TE", "Fuse QKV")},
             "Offload": lambda r: r.offload, "Status": lambda r: r.status, "Reason": lambda r: r.error or ""}  # fmt: skip
    for title, statuses in NOT_RUN:
        missing = [r for r in rows if r.status in statuses]
        if missing:
            parts += [f"<h4>{html.escape(title)}: {len(missing)}</h4>", _table(shown, missing, "not-run")]
    return "".join(parts)


def status_counts(rows: list[Record]) -> str:
    """``16 configurations: 10 ok, 2 n/a on this device, 3 skipped, 1 failed`` (the statuses present)."""
    words = {"ok": "ok", "n/a": "n/a on this device", "skipped": "skipped", "error": "failed"}
    counts = [f"{n} {words[s]}" for s in words if (n := sum(r.status == s for r in rows))]
    return f"{len(rows)} configurations: {', '.join(counts)}"


BASELINE = "NONE (Quantize TE No, Fuse QKV No)"


def _summary(sub: list[Record], predicted: dict | None) -> str:
    """How many configurations ran (each status apart), then the recommended ones, their fidelity and what
    each saves against the BASELINE."""
    return f"<p>{html.escape(status_counts(sub))}.</p>" + _recommended_summary(sub, predicted)


def _recommended_summary(sub: list[Record], predicted: dict | None) -> str:
    best = recommended(sub)
    suspects = [r for r in sub if suspect(r)]
    warning = (f'<p class="mixed"><b>Suspect, never recommended</b> (its images are far from its reference\'s: '
               f"not a result): {html.escape('; '.join('{} / TE {} / Fuse {}'.format(*labels(r)) for r in suspects))}"
               "</p>") if suspects else ""  # fmt: skip
    if not best:
        failed = sum(r.status == "error" for r in sub)
        skipped = sum(r.status == "skipped" for r in sub)
        na = sum(r.status == "n/a" for r in sub)
        return warning + (f"<p>Nothing to recommend: {failed} failed, {skipped} skipped, {na} n/a on this device, "
                          f"{len(suspects)} suspect.</p>")
    shown = ("Quantization", "Quantize TE", "Fuse QKV", "PSNR to NONE (dB)", "SSIM to NONE", "Memory (GB)")
    columns = {name: _HTML_COLUMNS[name] for name in shown}
    base = next((r for r in sub if cell_of(r) == Cell("none", False, False, r.batch_size)), None)
    if base is not None and base.status == "ok":
        note = ""
        columns["Memory saved (GB)"] = lambda r: base.memory_gb - r.memory_gb
        columns["Memory saved (%)"] = lambda r: 100 * (1 - r.memory_gb / base.memory_gb)
        columns["Latency change (%)"] = lambda r: 100 * (r.latency_s / base.latency_s - 1)
    elif base is None:
        note = f"<p>No savings shown: {BASELINE} did not run here.</p>"
    else:
        note = f"<p>No savings shown: {BASELINE} {'failed' if base.status == 'error' else 'was skipped'}: " \
               f"{html.escape(base.error or '')}</p>"  # fmt: skip
    if predicted is not None:
        columns[PREDICTED] = lambda r: _predicted(r, predicted)
    return warning + note + _table(columns, best, "summary")


def _embedded_png(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p><em>Not drawn: {html.escape(alt)}.</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _environment_key(r: Record) -> tuple:
    """Where and how a record was measured, whatever its model: records alike share one environment."""
    return (r.device, r.device_name, tuple(sorted(r.versions.items())), r.preset, r.warmup, r.repeats, r.seed,
            tuple(r.prompts))  # fmt: skip


def _environment(label: str, r: Record) -> str:
    versions = ", ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in sorted(r.versions.items()))
    return (
        f'<p class="env" id="environment-{label}"><b>{label}</b>: measured on {html.escape(r.device)} '
        f"({html.escape(r.device_name or 'unknown device')}); {versions or 'library versions unknown'}. "
        f"Preset {html.escape(r.preset)}; warm-up {r.warmup}, repeats {r.repeats}; seed {r.seed}; "
        f"prompts {', '.join('&ldquo;' + html.escape(p) + '&rdquo;' for p in r.prompts)}.</p>"
    )


def _environment_links(labels: list[str]) -> str:
    return ", ".join(f'<a href="#environment-{label}">{label}</a>' for label in labels)


def _protocol(r: Record, labels: list[str]) -> str:
    """A section's own settings, and a link to each environment its records were measured in."""
    return (
        f'<p class="env">Environment {_environment_links(labels)}; '
        f"checkpoint <code>{html.escape(r.checkpoint)}</code>; {r.steps} steps at {r.width}&times;{r.height}, guidance {r.guidance_scale}.</p>"
    )


def _notes(rows: list[Record], sub: list[Record]) -> list[str]:
    """Warnings a section's figures must be read with."""
    mixed = mixed_hardware(sub)
    return [
        f'<p class="env"><b>{html.escape(note)}</b></p>' if (note := preset(rows[0].preset).NOTE) else "",
        f'<p class="mixed"><b>{html.escape(mixed)}</b></p>' if mixed else "",
    ]


FITS_TEXT = (
    "Per section and card, the best configuration predicted to fit the full-size checkpoint (nothing loaded: "
    "<code>python -m helpers fit</code> lists them all, and what misses by how much): its predicted peak "
    "reserved memory plus the CUDA context is at most the card's memory. A card is the GiB its driver reports "
    "(an RTX 4090 reports 23.99, an H100 80GB 79.2), so a column at a card's nominal size overstates it by "
    "that difference. Best: the highest measured SSIM to NONE among full-size records, else the most bits per "
    "weight, then the cheapest offload mode (none, group offloading, model, sequential). A cell reads "
    "<i>configuration, offload mode: GiB needed</i>."
)


def _fits_section(out_dir: str, sections: list[list[Record]], fits: list) -> list[str]:
    """The "What fits" table (one row per section, one column per card) and each section's chart."""
    from .fit import cards_frame

    shown = [(rows, found) for rows, found in zip(sections, fits) if found is not None]
    df = cards_frame([found for _, found in shown], [rows for rows, _ in shown])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>"
                   for values in df.itertuples(index=False))  # fmt: skip
    parts = ['<h2 id="what-fits">What fits</h2>', f"<p>{FITS_TEXT}</p>",
             f'<div class="table-wrap"><table class="fits"><thead><tr>{head}</tr></thead>'
             f"<tbody>{body}</tbody></table></div>"]  # fmt: skip
    for _, found in shown:
        notes = [found.note] if found.note else []
        if not notes and any(row.get("peak_reserved_gb") is not None for row in found.rows):
            fits_chart(found, out_dir)
        parts.append(_embedded_png(fits_path(out_dir, section_of(found)),
                                   f"What fits chart of {found.model} {found.dtype} ({found.backend}): each "
                                   "configuration's predicted peak GPU memory per offload mode, against the card "
                                   "sizes as horizontal lines" + "".join(f" ({n})" for n in notes)))  # fmt: skip
    return parts


def report_html(out_dir: str, sections: list[list[Record]], predictions: list[dict | None] | None = None,
                fits: list | None = None) -> str:  # fmt: skip
    """The summary first (with a table of contents), then what fits, each section in detail, the environments.

    ``predictions``, one per section (or ``None``): ``estimate.predicted_gb`` of its model and dtype.
    ``fits``, one per section (or ``None``): ``fit.predictions`` of its grid, every offload mode.
    """
    predictions = predictions or [None] * len(sections)
    fits = fits if fits and any(f is not None for f in fits) else None
    environments: dict[tuple, tuple[str, Record]] = {}  # key -> (label, a record measured there)
    blocks = []
    for rows, predicted in zip(sections, predictions):
        if not rows:
            continue
        model, dtype, backend, section = rows[0].model, rows[0].dtype, rows[0].backend, section_of(rows[0])
        for bs, gpu, sub in tables_of(rows):
            labels = []
            for r in [r for r in sub if r.status == "ok"] or sub:
                label, _ = environments.setdefault(_environment_key(r), (f"E{len(environments) + 1}", r))
                if label not in labels:
                    labels.append(label)
            name = heading(model, bs, dtype, backend, gpu)
            anchor = f"{section}-bs{bs}" + ("" if gpu is None else "-" + re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-"))
            blocks.append((anchor, name, rows, sub, predicted, section, labels))

    contents = "".join(f'<li><a href="#{anchor}">{html.escape(name)}</a></li>' for anchor, name, *_ in blocks)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Experiment Results</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Experiment Results</h1>",
        "<p>What each quantization choice costs (memory, latency) and what it looks like. "
        "Memory (GB) is what the model holds; peak is the most one inference needed on top; latency is the "
        "median of the timed runs. Fidelity (PSNR, SSIM) compares each image with NONE's at the same Fuse QKV. "
        f"<b>{html.escape(PREDICTED)}</b> is not measured: it is what the same configuration of the "
        "full-size checkpoint will hold, predicted from its architecture (<code>python -m helpers estimate</code>). "
        "A figure shown as n/a does not apply or says nothing here: hover it for why.</p>",
        '<nav class="toc"><b>Contents</b><ul><li><a href="#summary">Summary</a></li>'
        + ('<li><a href="#what-fits">What fits</a></li>' if fits else "")
        + f'{contents}<li><a href="#environments">Environments</a></li></ul></nav>',
        '<h2 id="summary">Summary</h2>',
        "<p>Per section, the recommended configurations: no other uses less memory and less time. "
        f"Savings are against {BASELINE} in the same section; a negative latency change is faster.</p>",
    ]
    for anchor, name, rows, sub, predicted, _, labels in blocks:
        parts += [f'<h3><a href="#{anchor}">{html.escape(name)}</a> '
                  f'<span class="env">(environment {_environment_links(labels)})</span></h3>',
                  *_notes(rows, sub), _summary(sub, predicted)]  # fmt: skip
    if fits:
        parts += _fits_section(out_dir, sections, fits)
    for anchor, name, rows, sub, predicted, section, labels in blocks:
        parts += [
            f'<h2 id="{anchor}">{html.escape(name)}</h2>',
            *_notes(rows, sub),
            _protocol(sub[0], labels),
            "<p>Click a column heading to sort.</p>",
            _html_table(sub, predicted),
            _embedded_png(image_grid_path(out_dir, section),
                          f"Image grid of {name}: the first prompt's image from each configuration, "
                          "titled with its quantization, Quantize TE (qte) and Fuse QKV (fuse)"),  # fmt: skip
            "<h3>Trade-off</h3>",
            _embedded_png(tradeoff_path(out_dir, section),
                          f"Trade-off chart of {name}: memory (GB) against latency (s) of each configuration, "
                          "coloured by SSIM to NONE; the recommended ones are ringed"),  # fmt: skip
            f"<p><b>Recommended</b> (no other configuration uses less memory and less time): "
            f"{html.escape(recommended_text(sub))}</p>",
        ]
    parts += ['<h2 id="environments">Environments</h2>',
              *(_environment(label, r) for label, r in environments.values()),
              f"<script>{_SCRIPT}</script>", "</body></html>"]  # fmt: skip
    return "\n".join(parts)


def write_report_html(out_dir: str, sections: list[list[Record]], predictions: list[dict | None] | None = None,
                      fits: list | None = None) -> Path:  # fmt: skip
    path = Path(out_dir) / "report.html"
    path.write_text(report_html(out_dir, sections, predictions, fits), encoding="utf-8")
    return path
