"""Matplotlib figures: the image grid of a model and dtype.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they
work the same headless and in a notebook, where the returned figure displays.
"""

from __future__ import annotations

from pathlib import Path

from .records import Record


def image_grid_path(out_dir: str, model: str, dtype: str) -> Path:
    return Path(out_dir) / "image_grids" / f"{model}_{dtype}_comparison.png"


def label(r: Record, with_batch: bool = False) -> str:
    text = f"qtype: {r.qtype}, qte: {int(r.quantize_te)}, fuse: {int(r.fuse_qkv)}"
    return text + (f", bs: {r.batch_size}" if with_batch else "")


def image_grid(rows: list[Record], out_dir: str, columns: int = 4):
    """Every configuration's image, labelled, the unquantized ones first; saved as PNG.

    A failed or skipped configuration gets an empty panel naming its status.
    Returns the saved figure.
    """
    from matplotlib.figure import Figure
    from PIL import Image

    if not rows:
        raise ValueError("no records to draw")
    ordered = sorted(rows, key=lambda r: r.qtype != "none")  # stable: grid order otherwise
    with_batch = len({r.batch_size for r in rows}) > 1
    n_rows = -(-len(ordered) // columns)
    fig = Figure(figsize=(3 * columns, 3.3 * n_rows))
    axes = fig.subplots(n_rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, ordered):
        if r.status == "ok" and r.image_path:
            with Image.open(Path(out_dir) / r.image_path) as image:
                ax.imshow(image.copy())
        else:
            ax.text(0.5, 0.5, r.status, ha="center", va="center", fontsize=12)
        ax.set_title(label(r, with_batch), fontsize=9)
    first = rows[0]
    fig.suptitle(f"{first.model} {first.dtype} ({first.preset} preset)", fontsize=11)
    fig.tight_layout()
    path = image_grid_path(out_dir, first.model, first.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return fig
