"""An ipywidgets explorer for JupyterLab: one configuration beside the unquantized one.

It opens on the lowest-memory quantized configuration; each pane gives memory, peak (as the report labels
it), latency and, for a quantized one, PSNR and SSIM to NONE."""

from __future__ import annotations

import html

from .outputs import image_bytes, image_problem
from .records import Record, labels, peak_label, suspect


SUSPECT_TITLE = "Suspect: not a result"


def _fidelity(r: Record) -> str:
    """PSNR and SSIM to NONE as the report gives them (n/a without a reference)."""
    if r.qtype == "none" and not r.quantize_te:
        return "the reference"
    if r.identical:
        return "to NONE: <b>identical</b>"
    if r.ssim is None:
        return "to NONE: n/a (its NONE reference did not run)"
    psnr = "n/a" if r.psnr_db is None else f"{r.psnr_db:.1f} dB"
    return f"to NONE: PSNR <b>{psnr}</b>, SSIM <b>{r.ssim:.3f}</b>"


def _summary(r: Record | None) -> str:
    from .report import NOT_APPLICABLE, PEAK_CPU, shown_peak

    if r is None:
        return "<p>not in the grid</p>"
    if r.status != "ok":
        return f"<p><b>{html.escape(r.status)}</b>: {html.escape(r.error or '')}</p>"
    value = shown_peak(r)  # as the report shows it: n/a where it says nothing
    peak = (f'<span title="{html.escape(NOT_APPLICABLE[PEAK_CPU])}">n/a</span>' if value is None
            else f"{value:.3f} GB")  # fmt: skip
    warning = f"<p><b>{html.escape(SUSPECT_TITLE)}</b>: {html.escape(suspect(r))}</p>" if suspect(r) else ""
    return warning + (
        f"<p>memory <b>{r.memory_gb:.3f} GB</b> ({peak_label(r)}: {peak})<br>"
        f"latency <b>{r.latency_s:.3f} s</b> (min {r.latency_min_s:.3f}, max {r.latency_max_s:.3f}, "
        f"{r.repeats} runs)<br>{_fidelity(r)}</p>"
    )


def _first_choice(rows: list[Record]) -> Record:
    """Where the explorer opens: the lowest-memory measured quantized configuration (else the first)."""
    quantized = [r for r in rows if r.status == "ok" and labels(r)[0] != "NONE"]
    return min(quantized, key=lambda r: (r.memory_gb, r.latency_s)) if quantized else rows[0]


def explorer(rows: list[Record], out_dir: str):
    """Pick qtype / quantize TE / fuse QKV (/ batch size); see that configuration's image and
    figures side by side with the unquantized one of the same fuse setting and batch size."""
    import ipywidgets as w

    if not rows:
        raise ValueError("no records to explore")
    # by the tables' labels: "INT8 / TE FP8" is a qtype of its own here, "1+3" a text-encoder choice
    by_config = {(labels(r)[0], labels(r)[1], r.fuse_qkv, r.batch_size): r for r in rows}

    def options(get):  # distinct values in grid order
        return list(dict.fromkeys(get(r) for r in rows))

    first = _first_choice(rows)
    qtype = w.Dropdown(options=options(lambda r: labels(r)[0]), value=labels(first)[0], description="qtype")
    qte = w.ToggleButtons(options=[(f"TE quantized: {t}", t) for t in options(lambda r: labels(r)[1])],
                          value=labels(first)[1])  # fmt: skip
    fuse = w.ToggleButtons(options=[("QKV fused", True), ("not fused", False)], value=first.fuse_qkv)
    bs = w.Dropdown(options=options(lambda r: r.batch_size), value=first.batch_size, description="batch size")
    # the two panes side by side, apart: a 32 px gap between them, each half of the rest
    panes = [w.VBox(layout=w.Layout(flex="1 1 0%", margin="0 32px 0 0")), w.VBox(layout=w.Layout(flex="1 1 0%"))]

    def pane(title: str, r: Record | None):
        items = [w.HTML(f"<h4>{html.escape(title)}</h4>"), w.HTML(_summary(r))]
        if r is not None and r.status == "ok":
            problem = image_problem(out_dir, r)
            items.insert(1, w.HTML(f"<p><b>No image</b>: {html.escape(problem)}</p>") if problem else
                         w.Image(value=image_bytes(out_dir, r), format="png", width=256))  # fmt: skip
        return items

    def update(_=None):
        key = (qtype.value, qte.value, fuse.value, bs.value)
        chosen = by_config.get(key)
        base = by_config.get(("NONE", "No", fuse.value, bs.value))
        panes[0].children = pane(f"{qtype.value}, TE {qte.value}, fuse {int(fuse.value)}", chosen)
        panes[1].children = pane(f"none (unquantized), fuse {int(fuse.value)}", base)

    for control in (qtype, qte, fuse, bs):
        control.observe(update, names="value")
    update()
    return w.VBox([w.HBox([qtype, bs]), qte, fuse, w.HBox(panes)])
