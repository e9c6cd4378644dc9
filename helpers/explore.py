"""An ipywidgets explorer for JupyterLab: one configuration beside the unquantized one.

It opens on the lowest-memory quantized configuration; each pane gives memory, peak (as the report labels
it), latency and, for a quantized one, PSNR and SSIM to NONE. Given the full-size predictions
(``fit.predictions``), a GPU-memory slider marks which configurations, with which offload mode, fit a card
of that size (the rule of ``helpers/fit.py``)."""

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


FITS_STYLE = {True: "background:#e3f4e3", False: "background:#fde8e8", None: "color:#888"}


def fits_html(found, records: list[Record], gpu_memory: float, chosen=None) -> str:
    """Every configuration of ``found`` (``fit.Predictions``) against a card of ``gpu_memory`` GiB: one row per
    configuration, one column per offload mode, each cell the GiB it needs, green where it fits, red where not;
    ``chosen`` (a ``params.Cell``) in bold."""
    from .fit import OFFLOAD_COST, candidates, context_gb, without_offload

    cands = candidates(found, records, gpu_memory)
    if not any(c.needed_gb is not None for c in cands):
        return f"<p>Nothing predicted: {html.escape(found.note or 'the estimate gives no peak here')}</p>"
    modes = sorted(dict.fromkeys(c.offload for c in cands), key=lambda m: OFFLOAD_COST.get(m, len(OFFLOAD_COST)))
    by_config: dict = {}
    for c in cands:
        by_config.setdefault(c.base, {})[c.offload] = c
    count = sum(bool(c.fits) for c in cands)
    head = "".join(f"<th>offload {html.escape(m)}</th>" for m in modes)
    body = []
    for config, by_mode in by_config.items():
        first = next(iter(by_mode.values()))
        name = html.escape(first.short_name())
        name = f"<b>{name}</b>" if chosen is not None and config == without_offload(chosen) else name
        cells = []
        for m in modes:
            c = by_mode.get(m)
            fits = None if c is None else c.fits
            text = "" if c is None or c.needed_gb is None else f"{'&#10003;' if fits else '&#10007;'} {c.needed_gb:.1f}"
            cells.append(f'<td style="{FITS_STYLE[fits]};padding:0 .5em;text-align:right">{text}</td>')
        body.append(f"<tr><td>{name}</td>{''.join(cells)}</tr>")
    return (f"<p><b>{count}</b> of {len(cands)} predicted to fit {gpu_memory:g} GiB ({found.preset} size; GiB "
            f"needed = peak reserved + {context_gb():.2f} CUDA context, &#10003; fits):</p>"
            f"<table><thead><tr><th>configuration</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def explorer(rows: list[Record], out_dir: str, fits=None):
    """Pick qtype / quantize TE / fuse QKV (/ batch size); see that configuration's image and
    figures side by side with the unquantized one of the same fuse setting and batch size.
    ``fits`` (``fit.predictions``): a GPU-memory slider and which configurations fit that card."""
    import ipywidgets as w

    if not rows:
        raise ValueError("no records to explore")
    from .fit import offload_of

    # by the tables' labels: "INT8 / TE FP8" is a qtype of its own here, "1+3" a text-encoder choice
    by_config = {(labels(r)[0], labels(r)[1], r.fuse_qkv, r.batch_size, offload_of(r)): r for r in rows}

    def options(get):  # distinct values in grid order
        return list(dict.fromkeys(get(r) for r in rows))

    first = _first_choice(rows)
    qtype = w.Dropdown(options=options(lambda r: labels(r)[0]), value=labels(first)[0], description="qtype")
    qte = w.ToggleButtons(options=[(f"TE quantized: {t}", t) for t in options(lambda r: labels(r)[1])],
                          value=labels(first)[1])  # fmt: skip
    fuse = w.ToggleButtons(options=[("QKV fused", True), ("not fused", False)], value=first.fuse_qkv)
    bs = w.Dropdown(options=options(lambda r: r.batch_size), value=first.batch_size, description="batch size")
    # shown only when the records hold more than one offload mode; NONE is always the one not offloaded
    offload = w.Dropdown(options=options(offload_of), value=offload_of(first), description="offload")
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
        key = (qtype.value, qte.value, fuse.value, bs.value, offload.value)
        chosen = by_config.get(key)
        base = by_config.get(("NONE", "No", fuse.value, bs.value, "none"))
        where = "" if offload.value == "none" else f", offload {offload.value}"
        panes[0].children = pane(f"{qtype.value}, TE {qte.value}, fuse {int(fuse.value)}{where}", chosen)
        panes[1].children = pane(f"none (unquantized), fuse {int(fuse.value)}", base)

    controls, extra = [qtype, qte, fuse, bs, offload], []
    if fits is not None:  # a card size, and what fits it (the chosen configuration in bold)
        from .fit import CARDS_GB
        from .cells import cell_of

        gpu = w.FloatSlider(value=24, min=2, max=max(CARDS_GB) + 16, step=0.5, description="GPU memory (GiB)",
                            continuous_update=False, style={"description_width": "initial"},
                            layout=w.Layout(width="480px"))  # fmt: skip
        table = w.HTML()
        controls.append(gpu)
        extra = [gpu, table]

    def update_all(_=None):
        update()
        if fits is not None:
            chosen = by_config.get((qtype.value, qte.value, fuse.value, bs.value, offload.value))
            table.value = fits_html(fits, rows, gpu.value, None if chosen is None else cell_of(chosen))

    for control in controls:
        control.observe(update_all, names="value")
    update_all()
    top = [qtype, bs, offload] if len(offload.options) > 1 else [qtype, bs]
    return w.VBox([w.HBox(top), qte, fuse, w.HBox(panes), *extra])
