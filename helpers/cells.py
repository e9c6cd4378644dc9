"""The grid's cell: one configuration (a qtype, which text encoders, fused QKV or not, a batch size, the
encoders' qtype, an offload mode), the grid of a parameter set in the order it runs, and the reference each
cell's fidelity is measured against.

A low-level module: it imports nothing from the package at import time. "Config" is left to the libraries'
objects (diffusers' and transformers' quantization configs).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One cell of the grid, a configuration. ``quantize_te``: ``False``, ``True`` (every text encoder) or a tuple of
    text-encoder names; ``te_qtype``: the encoders' qtype, ``None`` when they follow ``qtype`` (or none is
    quantized); ``offload``: one of ``registry.OFFLOAD_MODES`` (``none``: every weight on the device)."""

    qtype: str
    quantize_te: bool | tuple[str, ...]
    fuse_qkv: bool
    batch_size: int
    te_qtype: str | None = None
    offload: str = "none"

    @property
    def slug(self) -> str:
        """The configuration in file names; ``offload`` only when not ``none``, so every name written before
        the axis stays what it was."""
        te = f"qte{int(self.quantize_te)}" if isinstance(self.quantize_te, bool) else "qte-" + "-".join(self.quantize_te)
        mix = f"_te{self.te_qtype}" if self.te_qtype else ""
        off = f"_offload-{self.offload}" if self.offload != "none" else ""
        return f"{self.qtype}_{te}{mix}_fuse{int(self.fuse_qkv)}_bs{self.batch_size}{off}"

    def encoders(self, model: str) -> list[str]:
        """The text encoders this configuration quantizes (their qtype: ``encoder_qtype``)."""
        from .registry import model_spec

        if self.quantize_te is True:
            return list(model_spec(model).text_encoders)
        return list(self.quantize_te or [])

    @property
    def encoder_qtype(self) -> str:
        return self.te_qtype or self.qtype

    def as_given(self):
        """``quantize_te`` as parameters, records and JSON write it: a bool or a list of names."""
        return self.quantize_te if isinstance(self.quantize_te, bool) else list(self.quantize_te)


def cell_of(row) -> Cell:
    """The ``Cell`` of a record or an estimate row (an object with those attributes, or a dict). One
    without ``offload`` (written before the axis, or an estimate row) is ``none``."""
    get = row.get if isinstance(row, Mapping) else lambda name, default=None: getattr(row, name, default)
    te = get("quantize_te")
    return Cell(get("qtype"), te if isinstance(te, bool) else tuple(te), get("fuse_qkv"), get("batch_size"),
                  get("te_qtype"), get("offload", None) or "none")  # fmt: skip


def cells(params) -> list[Cell]:
    """The grid in the order it runs (the parameters' order: ``none`` first by default). A configuration
    that quantizes no encoder has no ``te_qtype``, so it appears once whatever ``te_qtypes`` holds. ``offload``
    is the innermost axis: a configuration's offload modes follow it."""
    out = {}
    for bs, q, te, te_q, fuse, offload in itertools.product(
        params["batch_sizes"], params["qtypes"], params["quantize_te"], params["te_qtypes"] or [None],
        params["fuse_qkv"], params["offload"],
    ):  # fmt: skip
        te = te if isinstance(te, bool) else tuple(te)
        c = Cell(q, te, fuse, bs, te_q if te is not False else None, offload)
        out.setdefault(c, None)
    return list(out)


def reference_of(config: Cell) -> Cell:
    """The configuration a configuration's fidelity is measured against: unquantized and not offloaded, with
    the same fuse and batch size. Offloading moves weights, not arithmetic, so an offloaded configuration is
    compared with the run that had every weight on the device: its fidelity then holds what quantization and
    offloading together change (for an unquantized offloaded run, offloading alone: expected identical), on
    the same scale as every other row of its section."""
    return Cell("none", False, config.fuse_qkv, config.batch_size, None, "none")


