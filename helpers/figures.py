"""Matplotlib figures: the image grid of a model and dtype.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they
work the same headless and in a notebook. Without pyplot no backend displays a
figure, so each function returns a ``ShownFigure``: a figure whose ``_repr_png_``
is the PNG it saved, which JupyterLab, papermill and nbconvert show as an image.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .records import Record, labels, section_of, suspect


@functools.lru_cache(maxsize=None)
def _shown_figure_class():
    """``ShownFigure``, made on first use: matplotlib is imported only to draw."""
    from matplotlib.figure import Figure

    class ShownFigure(Figure):
        """A figure that a notebook shows as its saved PNG (``image/png``), not as ``<Figure ...>``."""

        png: bytes = b""

        def _repr_png_(self) -> bytes:
            return self.png

    return ShownFigure


def _shown_figure(**kwargs):
    return _shown_figure_class()(**kwargs)


def _save(fig, path: Path, dpi: int) -> None:
    """Render once: the PNG on disk is the one the notebook shows."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    fig.png = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fig.png)


def image_grid_path(out_dir: str, section: str) -> Path:
    return Path(out_dir) / "image_grids" / f"{section}_comparison.png"


def subset_path(path: Path) -> Path:
    """Where a figure of part of a section goes: beside the section's own, never over it."""
    return path.with_name(path.stem + "_subset" + path.suffix)


def _coverage(rows: list[Record], out_dir: str) -> tuple[int, int]:
    """(configurations drawn, configurations the section's results file holds): a notebook run on a
    subset of the grid draws fewer than the report's tables list."""
    from .records import read

    first = rows[0]
    held = {r.identity_key() for r in read(Path(out_dir) / "results" / f"{section_of(first)}.jsonl")}
    drawn = {r.identity_key() for r in rows}
    return len(drawn), len(held | drawn)


def _target(rows: list[Record], out_dir: str, path: Path, shared: bool | None):
    """The path to save to and a note for the title: the section's own figure only when ``rows`` cover every
    configuration of its results file (or ``shared``: the report's own rows); else ``*_subset.png``."""
    drawn, held = _coverage(rows, out_dir) if shared is None else (0, 0)
    if shared or drawn >= held:
        return path, ""
    return subset_path(path), f" - subset: {drawn} of the {held} configurations in results/"


def label(r: Record, with_batch: bool = False) -> str:
    quantization, te, fuse = labels(r)
    text = f"qtype: {quantization.lower()}, qte: {te}, fuse: {fuse}"
    return text + (f", bs: {r.batch_size}" if with_batch else "")


def image_grid(rows: list[Record], out_dir: str, columns: int = 4, shared: bool | None = None):
    """Every configuration's image, labelled, the unquantized ones first; saved as PNG.

    A failed or skipped configuration gets an empty panel naming its status. Saved as the section's
    ``image_grid_path`` only when ``rows`` cover every configuration of its results file (``shared=True``:
    always, the report's own rows); a notebook run on part of the grid saves beside it (``subset_path``),
    so the report's grid keeps matching its tables. Returns the saved figure.
    """
    import io
    import textwrap

    from PIL import Image

    from .outputs import image_bytes, image_problem

    if not rows:
        raise ValueError("no records to draw")
    ordered = sorted(rows, key=lambda r: r.qtype != "none")  # stable: grid order otherwise
    with_batch = len({r.batch_size for r in rows}) > 1
    n_rows = -(-len(ordered) // columns)
    fig = _shown_figure(figsize=(3 * columns, 3.3 * n_rows))
    axes = fig.subplots(n_rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, ordered):
        problem = image_problem(out_dir, r) if r.status == "ok" else r.status
        if problem is None:
            with Image.open(io.BytesIO(image_bytes(out_dir, r))) as image:
                ax.imshow(image.copy())
        else:  # failed, skipped, or its file is not the one it measured
            ax.text(0.5, 0.5, textwrap.fill(problem, 30), ha="center", va="center", fontsize=8 if r.status == "ok" else 12)
        ax.set_title(label(r, with_batch), fontsize=9)
    first = rows[0]
    path, note = _target(rows, out_dir, image_grid_path(out_dir, section_of(first)), shared)
    fig.suptitle(f"{first.model} {first.dtype}, {first.backend} ({first.preset} preset){note}", fontsize=11)
    fig.tight_layout()
    _save(fig, path, dpi=80)
    return fig


def tradeoff_path(out_dir: str, section: str) -> Path:
    return Path(out_dir) / "charts" / f"{section}_tradeoff.png"


def recommended(rows: list[Record]) -> list[Record]:
    """The ``ok`` configurations no other beats on both memory and latency, by memory; a ``suspect`` one
    (its images are not a result) is never recommended."""
    from .pareto import pareto_front

    ok = [r for r in rows if r.status == "ok" and not suspect(r)]
    front = pareto_front([(r.memory_gb, r.latency_s) for r in ok])
    return sorted((ok[i] for i in front), key=lambda r: (r.memory_gb, r.latency_s))


# Where a point's label may go, nearest first: (dx, dy) in points from the point.
_LABEL_OFFSETS = [(sx * 5, sy * d) for d in (5, 13, 21, 29) for sx in (1, -1) for sy in (1, -1)]


def _move(label, dx: float, dy: float) -> None:
    label.set(position=(dx, dy), ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top")


def _place_labels(ax, points: list[tuple[float, float]], texts: list[str]) -> None:
    """Label each point at the first offset where its label stays inside the axes and covers no marker
    and no earlier label; where none is free, at the nearest offset. Call once the layout is final."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    half = 4 * ax.figure.dpi / 72  # a marker's half width (s=60 is about 8 points across)
    taken = [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in ax.transData.transform(points)]
    for point, text in zip(points, texts):
        label = ax.annotate(text, point, xytext=_LABEL_OFFSETS[0], textcoords="offset points", fontsize=7)
        for dx, dy in _LABEL_OFFSETS:
            _move(label, dx, dy)
            box = label.get_window_extent(renderer)
            fits = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
            if fits and box.count_overlaps(taken) == 0:
                break
        else:
            _move(label, *_LABEL_OFFSETS[0])
            box = label.get_window_extent(renderer)
        taken.append(box)


def _point_label(r: Record) -> str:
    """A chart point's name: ``int8+te+fuse``, ``int8 / te fp8+te1+3``."""
    te = "" if not r.quantize_te else "+te" if r.quantize_te is True else f"+te{labels(r)[1]}"
    return f"{labels(r)[0].lower()}{te}{'+fuse' if r.fuse_qkv else ''}"


def tradeoff_chart(rows: list[Record], out_dir: str, shared: bool | None = None):
    """Memory against latency, one point per configuration, coloured by SSIM to the unquantized run;
    the recommended ones ringed and listed under the axes. Saved as PNG (where: as ``image_grid``);
    returns the figure."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        raise ValueError("no measured configuration to chart")
    best = recommended(ok)
    fig = _shown_figure(figsize=(7.5, 5.2), dpi=90)
    FigureCanvasAgg(fig)  # a renderer, to measure where the point labels fall
    ax = fig.subplots()
    norm, cmap = Normalize(vmin=min(min(r.ssim for r in ok if r.ssim is not None), 0.9), vmax=1.0), colormaps["viridis"]
    for r in ok:
        colour = "lightgrey" if r.ssim is None else cmap(norm(r.ssim))
        ax.scatter(r.memory_gb, r.latency_s, s=60, color=colour, edgecolors="black" if r in best else "none",
                   linewidths=2, zorder=3)  # fmt: skip
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="SSIM to NONE (1 = identical)")
    first = ok[0]
    path, note = _target(rows, out_dir, tradeoff_path(out_dir, section_of(first)), shared)
    ax.set_xlabel("Memory (GB)")
    ax.set_ylabel("Latency (s)")
    ax.set_title(f"{first.model} {first.dtype}, {first.backend}: memory vs latency ({first.preset} preset)"
                 + note.replace(" - ", "\n"), fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    names = ", ".join("{} (TE {}, fuse {})".format(*labels(r)) for r in best)
    fig.text(0.01, 0.01, f"Recommended (ringed; nothing beats them on both): {names}", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _place_labels(ax, [(r.memory_gb, r.latency_s) for r in ok],
                  [_point_label(r) for r in ok])  # fmt: skip
    _save(fig, path, dpi=90)
    return fig


def fits_path(out_dir: str, section: str) -> Path:
    return Path(out_dir) / "charts" / f"{section}_fits.png"


# One marker and colour per offload mode, in the order of their cost (fit.OFFLOAD_COST).
_OFFLOAD_STYLE = {"none": ("o", "tab:blue"), "group-block": ("s", "tab:green"), "group-leaf": ("D", "tab:olive"),
                  "model": ("^", "tab:orange"), "sequential": ("v", "tab:red")}  # fmt: skip


def fits_chart(found, out_dir: str, cards=None):
    """Each configuration's predicted peak GPU memory (peak reserved + the CUDA context), one marker per
    offload mode, against the card sizes drawn as horizontal lines (``found``: ``fit.Predictions``).
    Saved as ``charts/<section>_fits.png``; returns the figure, or ``None`` with a line saying why when
    nothing is predicted (a notebook goes on)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    from .fit import CARDS_GB, Candidate, context_gb, offload_of

    cards = CARDS_GB if cards is None else cards
    cands = [Candidate(row, found.backend) for row in found.rows]
    cands = [c for c in cands if c.needed_gb is not None]
    if not cands:
        print(f"No chart of what fits: {found.note or 'the estimate gives no peak for these configurations'}")
        return None
    names = list(dict.fromkeys(c.short_name() for c in cands))
    fig = _shown_figure(figsize=(max(7.5, 0.45 * len(names) + 2.5), 5.2), dpi=90)
    ax = fig.subplots()
    modes = list(dict.fromkeys(offload_of(c.row) for c in cands))
    for mode in modes:
        marker, colour = _OFFLOAD_STYLE.get(mode, ("x", "black"))
        points = [(names.index(c.short_name()), c.needed_gb) for c in cands if c.offload == mode]
        ax.scatter([x for x, _ in points], [y for _, y in points], marker=marker, color=colour, s=36, zorder=3,
                   label=f"offload {mode}")  # fmt: skip
    low = min(min(c.needed_gb for c in cands), min(cards)) / 1.3
    high = max(max(c.needed_gb for c in cands), max(cards)) * 1.3
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    for card in cards:
        ax.axhline(card, color="grey", linestyle="--", linewidth=0.8, zorder=1)
        ax.text(len(names) - 0.5, card, f" {card:g} GiB", va="center", ha="left", fontsize=8, color="dimgrey",
                clip_on=False)  # fmt: skip
    ax.yaxis.set_major_locator(FixedLocator(list(cards)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticklabels([f"{card:g}" for card in cards])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(f"Predicted peak GPU memory (GiB, + {context_gb():.2f} CUDA context)")
    ax.set_title(f"{found.model} {found.dtype}, {found.backend}: what fits which card ({found.preset} size, predicted)",
                 fontsize=10)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1), borderaxespad=0)
    fig.tight_layout()
    _save(fig, fits_path(out_dir, section_of(found)), dpi=90)
    return fig
