"""An ipywidgets explorer for JupyterLab: one configuration beside the unquantized one."""

from __future__ import annotations

import html

from .outputs import image_bytes, image_problem
from .records import Record, labels, peak_label, suspect


SUSPECT_TITLE = "Suspect: not a result"


def _summary(r: Record | None) -> str:
    if r is None:
        return "<p>not in the grid</p>"
    if r.status != "ok":
        return f"<p><b>{html.escape(r.status)}</b>: {html.escape(r.error or '')}</p>"
    peak = "n/a" if r.peak_memory_gb is None else f"{r.peak_memory_gb:.3f} GB"
    warning = f"<p><b>{html.escape(SUSPECT_TITLE)}</b>: {html.escape(suspect(r))}</p>" if suspect(r) else ""
    return warning + (
        f"<p>memory <b>{r.memory_gb:.3f} GB</b> ({peak_label(r)} {peak})<br>"
        f"latency <b>{r.latency_s:.3f} s</b> (min {r.latency_min_s:.3f}, max {r.latency_max_s:.3f}, "
        f"{r.repeats} runs)</p>"
    )


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

    qtype = w.Dropdown(options=options(lambda r: labels(r)[0]), description="qtype")
    qte = w.ToggleButtons(options=[(f"TE quantized: {t}", t) for t in options(lambda r: labels(r)[1])],
                          value=labels(rows[0])[1])  # fmt: skip
    fuse = w.ToggleButtons(options=[("QKV fused", True), ("not fused", False)], value=rows[0].fuse_qkv)
    bs = w.Dropdown(options=options(lambda r: r.batch_size), description="batch size")
    panes = [w.VBox(), w.VBox()]

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
