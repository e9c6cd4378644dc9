"""What fits a GPU: every configuration of a grid, with every offload mode, against a card's memory.

``python -m helpers fit --model flux-dev --gpu-memory 24`` reads the memory estimate (``estimate.predict``:
no weights, no GPU; cached on disk) and the records of ``--out``'s results, and lists first the
configurations predicted to fit, best first, then those that do not, with how much each misses by.

One rule for a card's size: ``gpu_memory`` is GiB (1024**3 bytes) as the driver reports the card's total,
``torch.cuda.get_device_properties(0).total_memory / 1024**3`` (an RTX 4090 reports 23.99, an H100 80GB
79.2). A configuration fits when its predicted peak reserved memory plus the CUDA context
(``estimate.CUDA_CONTEXT_GB``) is at most that, and its host memory at most ``host_memory`` when given. A
card's nominal size (24, 80) is read by the same rule, so it overstates the card by what its driver keeps
back (0.01 GiB on the 4090, 0.8 on the H100): each line gives its spare GiB to judge that by.

Ranking of the configurations that fit:

1. measured ones by their fidelity, the figure the report shows for it: SSIM to NONE, higher first (a
   bit-identical image counts 1.0; the report's chart is coloured by it). Only records of the same preset
   as the prediction count (a tiny pipeline's image says nothing of the full-size one's), and never a
   ``suspect`` one (``records.suspect``: its image is not a result);
2. the others by the transformer's bits per weight (the backend module's ``BITS``), more first;
3. then by offload cost: none < group-block, group-leaf < model < sequential;
4. then the text encoders' bits, more first, and the predicted peak, less first.

A suspect configuration comes after every other that fits, marked so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .backends import PUBLISHED
from .cells import Cell, cell_of
from .params import Params
from .records import Record, qtype_label, section_of, suspect, te_label, yes_no

# The card sizes the report and the notebooks answer for (GiB, by the rule above).
CARDS_GB = (8, 12, 16, 24, 48, 80)
# What each offload mode costs in time, least first (ties share a rank): the third ranking key.
OFFLOAD_COST = {"none": 0, "group-block": 1, "group-leaf": 1, "model": 2, "sequential": 3}
OFFLOAD_MODES = tuple(getattr(registry, "OFFLOAD_MODES", OFFLOAD_COST))  # the parameter's valid modes

GPU_MEMORY_HELP = (
    "the card's memory in GiB (1024**3 bytes) as its driver reports the total: "
    "torch.cuda.get_device_properties(0).total_memory / 1024**3 (an RTX 4090 reports 23.99, an H100 80GB 79.2). "
    "A configuration fits when its predicted peak reserved memory plus the CUDA context is at most this; "
    "a nominal size (24, 80) is taken as that many GiB, which overstates the card by what its driver keeps back"
)


def context_gb() -> float:
    """The CUDA context a process holds besides what the allocator reserves (``estimate.CUDA_CONTEXT_GB``)."""
    from . import estimate

    return float(getattr(estimate, "CUDA_CONTEXT_GB", 0.0))


@dataclass
class Predictions:
    """The estimate's rows of one grid (every offload mode), or why there are none (``note``)."""

    model: str
    dtype: str
    backend: str
    preset: str  # of the prediction: full (the checkpoint) or tiny
    rows: list[dict] = field(default_factory=list)
    note: str | None = None



def offload_grids(params: Params) -> list[Params]:
    """``params`` asking for every offload mode: one grid when ``offload`` is a list parameter (an axis),
    one per mode when it is a single choice, ``params`` itself before the parameter exists (the estimate's
    rows then say their own ``offload``)."""
    from .params import DEFAULTS, validate

    if "offload" not in DEFAULTS:
        return [params]
    if isinstance(DEFAULTS["offload"], (list, tuple)):
        return [validate({**params, "offload": list(OFFLOAD_MODES)})]
    return [validate({**params, "offload": mode}) for mode in OFFLOAD_MODES]


def predictions(params: Params, preset: str = "full", cached: bool = False) -> Predictions:
    """The estimate's rows for ``params``' grid with every offload mode (``estimate.predict``, cached on
    disk), at ``preset``'s size (full: the checkpoint, as the report's predicted columns).

    ``cached``: the peak figures only where ``fit`` or ``estimate`` computed them before (a notebook and the
    report: at full size they take minutes of fake calls on a CPU); without them a configuration is not
    predicted to fit or miss, and says so."""
    from .estimate import NotPredicted, predict

    out = Predictions(params["model"], params["dtype"], params["backend"], preset)
    try:
        rows = [row for grid in offload_grids(params) for row in predict(grid, preset, "cached" if cached else True)]
    except NotPredicted as e:
        out.note = str(e)
        return out
    if cached and not any("peak_allocated_gb" in row for row in rows):
        out.note = (f"peaks not predicted on this machine yet: `python -m helpers fit --model {params['model']} "
                    f"--dtype {params['dtype']}` predicts them (minutes at full size on a CPU), then run this again")
    seen = set()
    for row in rows:  # one row per configuration and offload mode, in the estimate's order
        key = (cell_of(row), offload_of(row))
        if key not in seen:
            seen.add(key)
            out.rows.append(row)
    return out


def offload_of(item) -> str:
    """A record's or an estimate row's offload mode (``none`` where it has none: made before the field)."""
    value = item.get("offload") if isinstance(item, dict) else getattr(item, "offload", None)
    return value or "none"


def without_offload(config: Cell) -> Cell:
    """``config`` with offload ``none`` (itself where a ``Cell`` has no offload)."""
    import dataclasses

    return dataclasses.replace(config, offload="none") if hasattr(config, "offload") else config


@dataclass
class Candidate:
    """One configuration and offload mode: what the estimate predicts and what a record measured."""

    row: dict
    backend: str
    record: Record | None = None  # the latest record of it, of the prediction's preset
    gpu_memory: float | None = None
    host_memory: float | None = None

    @property
    def config(self) -> Cell:
        return cell_of(self.row)

    @property
    def offload(self) -> str:
        return offload_of(self.row)

    @property
    def base(self) -> Cell:
        """The configuration whatever its offload mode (what a chart's or a table's row stands for)."""
        return without_offload(self.config)

    @property
    def needed_gb(self) -> float | None:
        """What the card must hold (``None``: not predicted): the higher of what loading reserves (a backend
        that quantizes after loading holds the unquantized weights first) and the call's peak reserved,
        plus the CUDA context."""
        peak = self.row.get("peak_reserved_gb")
        if peak is None:
            return None
        return max(peak, self.row.get("loaded_reserved_gb") or 0.0) + context_gb()

    @property
    def needed_in(self) -> str:
        """Where the GPU need peaks: ``load`` (a backend quantizing after loading holds the unquantized weights
        first) or the call's phase."""
        loaded, peak = self.row.get("loaded_reserved_gb") or 0.0, self.row.get("peak_reserved_gb")
        if peak is None:
            return ""
        return "load" if loaded > peak else (self.row.get("peak_phase") or "")

    @property
    def host_gb(self) -> float | None:
        return self.row.get("host_gb")

    @property
    def bits(self) -> float:
        return registry.bits_per_weight(self.backend, self.row["qtype"])

    @property
    def te_bits(self) -> float:
        if not self.row["quantize_te"]:  # False or no encoder named
            return 16
        return registry.bits_per_weight(self.backend, self.row["te_qtype"] or self.row["qtype"])

    @property
    def spare_gb(self) -> float | None:
        """GPU GiB left over (negative: short by that much); ``None`` without a card or a prediction."""
        if self.gpu_memory is None or self.needed_gb is None:
            return None
        return self.gpu_memory - self.needed_gb

    @property
    def host_spare_gb(self) -> float | None:
        if self.host_memory is None or self.host_gb is None:
            return None
        return self.host_memory - self.host_gb

    @property
    def predicted(self) -> bool:
        return self.needed_gb is not None and (self.host_memory is None or self.host_gb is not None)

    @property
    def fits(self) -> bool | None:
        """Whether it fits the card (and the host, when given); ``None`` when not predicted."""
        if not self.predicted or self.gpu_memory is None:
            return None
        host = self.host_spare_gb
        return self.spare_gb >= 0 and (host is None or host >= 0)

    @property
    def suspect(self) -> str | None:
        return suspect(self.record) if self.record is not None else None

    @property
    def fidelity(self) -> float | None:
        """SSIM to NONE (1.0 when bit-identical) of an ``ok``, non-suspect record; else ``None``."""
        r = self.record
        if r is None or r.status != "ok" or suspect(r):
            return None
        return 1.0 if r.identical else r.ssim

    def rank_key(self) -> tuple:
        fidelity = self.fidelity
        return (self.suspect is not None, fidelity is None, -(fidelity or 0.0), -self.bits,
                OFFLOAD_COST.get(self.offload, len(OFFLOAD_COST)), -self.te_bits, self.needed_gb or math.inf)  # fmt: skip

    def labels(self) -> tuple[str, str, str]:
        row = self.row
        return (qtype_label(row["qtype"], row["te_qtype"], row["quantize_te"]),
                te_label(row["model"], row["quantize_te"]), yes_no(row["fuse_qkv"]))  # fmt: skip

    def name(self) -> str:
        """``INT8, TE Yes, fuse No, offload none`` (``bs 2`` when the batch is not 1)."""
        q, te, fuse = self.labels()
        batch = f", bs {self.row['batch_size']}" if self.row["batch_size"] != 1 else ""
        return f"{q}, TE {te}, fuse {fuse}{batch}, offload {self.offload}"

    def short_name(self) -> str:
        """``int8+te+fuse`` as the charts label a point (``int8`` alone: nothing else)."""
        row = self.row
        te = "" if not row["quantize_te"] else "+te" if row["quantize_te"] is True else f"+te{self.labels()[1]}"
        mix = f"/te-{row['te_qtype']}" if row["te_qtype"] and row["quantize_te"] else ""
        batch = f" bs{row['batch_size']}" if row["batch_size"] != 1 else ""
        return f"{row['qtype']}{mix}{te}{'+fuse' if row['fuse_qkv'] else ''}{batch}"

    def measured_text(self) -> str:
        """SSIM and latency as measured, ``suspect``, the record's status, or ``not measured``."""
        r = self.record
        if r is None:
            return "not measured"
        if r.status != "ok":
            return f"{r.status}: {(r.error or '').splitlines()[0][:80] if r.error else ''}".rstrip(": ")
        where = f" on {r.gpu}" if r.gpu else f" on {r.device}"
        latency = f"latency {r.latency_s:.3g} s{where}" if r.latency_s is not None else "latency not measured"
        if self.suspect:
            return f"suspect (not ranked by it), {latency}"
        fidelity = self.fidelity
        return f"{'SSIM n/a' if fidelity is None else f'SSIM {fidelity:.3f}'}, {latency}"

    def as_dict(self) -> dict:
        r = self.record
        return {
            "fits": self.fits, "model": self.row["model"], "dtype": self.row["dtype"], "backend": self.backend,
            "qtype": self.row["qtype"], "quantize_te": self.row["quantize_te"], "te_qtype": self.row["te_qtype"],
            "fuse_qkv": self.row["fuse_qkv"], "batch_size": self.row["batch_size"], "offload": self.offload,
            "bits_per_weight": self.bits, "needed_gb": self.needed_gb,
            "peak_reserved_gb": self.row.get("peak_reserved_gb"), "peak_phase": self.row.get("peak_phase"),
            "host_gb": self.host_gb, "spare_gb": self.spare_gb, "host_spare_gb": self.host_spare_gb,
            "measured": None if r is None else {
                "status": r.status, "ssim": r.ssim, "psnr_db": r.psnr_db, "identical": r.identical,
                "latency_s": r.latency_s, "gpu": r.gpu, "device": r.device, "suspect": self.suspect,
                "timestamp": r.timestamp,
            },
            "note": self.row.get("note"),
        }  # fmt: skip


def measured(records: list[Record], preset: str) -> dict[tuple, Record]:
    """The latest record of each (configuration, offload mode) measured at ``preset``, whatever the GPU."""
    by_preset: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r.timestamp):
        by_preset.setdefault(r.preset, {})[(cell_of(r), offload_of(r))] = r
    return by_preset.get(preset, {})


def candidates(found: Predictions, records: list[Record] = (), gpu_memory: float | None = None,
               host_memory: float | None = None) -> list[Candidate]:  # fmt: skip
    """One ``Candidate`` per row of ``found``, with its record among ``records`` where there is one."""
    by_key = measured(list(records), found.preset)
    return [
        Candidate(row, found.backend, by_key.get((cell_of(row), offload_of(row))), gpu_memory, host_memory)
        for row in found.rows
    ]


@dataclass
class Answer:
    """``fit``'s answer for one card: what fits (best first), what misses (closest first), what is not predicted."""

    found: Predictions
    gpu_memory: float
    host_memory: float | None
    fits: list[Candidate]
    misses: list[Candidate]
    unknown: list[Candidate]

    @property
    def best(self) -> Candidate | None:
        return self.fits[0] if self.fits else None


def rank(cands: list[Candidate]) -> list[Candidate]:
    """The configurations that fit, best first (the module's ranking)."""
    return sorted(cands, key=Candidate.rank_key)


def answer(found: Predictions, records: list[Record], gpu_memory: float, host_memory: float | None = None) -> Answer:
    cands = candidates(found, records, gpu_memory, host_memory)
    fits = rank([c for c in cands if c.fits])
    misses = sorted((c for c in cands if c.fits is False), key=lambda c: (_shortfall(c), c.rank_key()))
    unknown = [c for c in cands if c.fits is None]
    return Answer(found, gpu_memory, host_memory, fits, misses, unknown)


def _shortfall(c: Candidate) -> float:
    """How many GiB a configuration misses by: the larger of the GPU's and the host's."""
    gpu = -c.spare_gb if c.spare_gb is not None else 0.0
    host = -c.host_spare_gb if c.host_spare_gb is not None else 0.0
    return max(gpu, host)


def records_of(params: Params, out_dir: str | Path) -> list[Record]:
    """Every record of ``params``' section in ``out_dir``'s results (none when there is no file)."""
    from .records import latest, read

    path = Path(out_dir) / "results" / f"{section_of(params)}.jsonl"
    return latest(read(path))


def fit(params: Params, gpu_memory: float, host_memory: float | None = None, out_dir: str | Path = "outputs",
        preset: str = "full") -> Answer:  # fmt: skip
    """What of ``params``' grid, with every offload mode, fits a card of ``gpu_memory`` GiB (module docstring)."""
    if not gpu_memory > 0:
        raise ValueError(f"gpu memory {gpu_memory!r} GiB; valid values: more than 0")
    if host_memory is not None and not host_memory > 0:
        raise ValueError(f"host memory {host_memory!r} GiB; valid values: more than 0")
    return answer(predictions(params, preset), records_of(params, out_dir), gpu_memory, host_memory)


# ---------------------------------------------------------------- text


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _first_line(a: Answer) -> str:
    f = a.found
    where = f"a {a.gpu_memory:g} GiB card" + ("" if a.host_memory is None else f" with {a.host_memory:g} GiB of host memory")
    if a.best is None:
        why = f" ({f.note})" if f.note else ""
        if not why and a.unknown and not a.misses:
            why = f" (the estimate gives no peak memory for {'any' if len(a.unknown) > 1 else 'its'} configuration)"
        closest = f"; closest: {a.misses[0].name()}, short by {_shortfall(a.misses[0]):.2f} GiB" if a.misses else ""
        return f"Nothing of {f.model} {f.dtype} ({f.backend}) is predicted to fit {where}{why}{closest}."
    b = a.best
    host = "" if b.host_gb is None else f", host {b.host_gb:.2f} GiB"
    return (f"Best fit on {where}: {f.model} {f.dtype} ({f.backend}) {b.name()}: needs {b.needed_gb:.2f} GiB "
            f"({b.spare_gb:.2f} spare){host}; {b.measured_text()}")  # fmt: skip


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *rows]]


def _cells(c: Candidate, last: str) -> list[str]:
    q, te, fuse = c.labels()
    return [q, te, fuse, str(c.row["batch_size"]), c.offload, f"{c.bits:g}", _gib(c.needed_gb),
            c.needed_in, _gib(c.host_gb), last, c.measured_text()]  # fmt: skip


def _why_unknown(c: Candidate) -> str:
    """Why a configuration has no verdict: the estimate's note, and the allocated peak where it gave one."""
    allocated = c.row.get("peak_allocated_gb")
    also = "" if allocated is None else f" (peak allocated {allocated + context_gb():.2f} GiB with the context)"
    if c.needed_gb is None:
        return (c.row.get("note") or "the estimate gives no peak reserved memory for it") + also
    return "the estimate gives no host memory for it"


def format_table(a: Answer) -> str:
    """The answer as text: its first line is the best configuration that fits (or says none does)."""
    head = ["Quantization", "Quantize TE", "Fuse QKV", "Batch", "Offload", "Bits", "GPU (GiB)", "Peak in",
            "Host (GiB)"]  # fmt: skip
    context = context_gb()
    if not a.found.rows:  # the estimate does not cover this backend: the first line says so
        return _first_line(a)
    lines = [
        _first_line(a),
        "",
        f"{len(a.fits)} of {len(a.fits) + len(a.misses) + len(a.unknown)} configurations fit, best first "
        f"(GPU = the higher of loading's and the call's predicted peak reserved + {context:.2f} GiB CUDA context, "
        f"not predicted; GiB = 1024**3 bytes; ranked by "
        "measured SSIM to NONE, else bits per weight, then offload cost):",
    ]
    if a.fits:
        lines += _table([*head, "Spare (GiB)", "Measured"], [_cells(c, _gib(c.spare_gb)) for c in a.fits])
    if a.misses:
        lines += ["", f"{len(a.misses)} do not fit, the closest first:"]
        lines += _table([*head, "Short by (GiB)", "Measured"],
                        [_cells(c, f"{_shortfall(c):.2f}" + (" (host)" if (c.host_spare_gb or 0) < 0 and
                                                             (c.spare_gb or 0) >= 0 else ""))
                         for c in a.misses])  # fmt: skip
    if a.unknown:
        lines += ["", f"{len(a.unknown)} not predicted:"]
        lines += [f"  {c.name()}: {_why_unknown(c)}" for c in a.unknown]
    return "\n".join(lines)


def format_json(a: Answer) -> str:
    """Every configuration as an object, in the table's order (fits best first, then misses, then the rest)."""
    return json.dumps({
        "gpu_memory_gib": a.gpu_memory, "host_memory_gib": a.host_memory, "cuda_context_gib": context_gb(),
        "model": a.found.model, "dtype": a.found.dtype, "backend": a.found.backend, "preset": a.found.preset,
        "note": a.found.note,
        "configurations": [c.as_dict() for c in (*a.fits, *a.misses, *a.unknown)],
    }, indent=1)  # fmt: skip


# ---------------------------------------------------------------- cards: the report and the notebooks


def best_per_card(found: Predictions, records: list[Record] = (), cards=CARDS_GB) -> dict[float, Candidate | None]:
    """The best configuration predicted to fit each card (``None``: nothing does)."""
    return {card: answer(found, list(records), card).best for card in cards}


def card_cell(c: Candidate | None, found: Predictions) -> str:
    """One cell of the "What fits" table: the configuration, its offload mode and what it needs."""
    if c is None:
        return "not predicted" if found.note or not any(x.get("peak_reserved_gb") is not None for x in found.rows) \
            else "nothing fits"  # fmt: skip
    measured = ", suspect" if c.suspect else "" if c.fidelity is None else f", SSIM {c.fidelity:.3f}"
    return f"{c.short_name()}, offload {c.offload}: {c.needed_gb:.1f} GiB{measured}"


def cards_frame(found_list: list[Predictions | None], records_list: list[list[Record]] | None = None,
                cards=CARDS_GB):  # fmt: skip
    """The "What fits" table: one row per section (model, dtype, backend), one column per card."""
    import pandas as pd

    records_list = records_list or [[] for _ in found_list]
    data = []
    for found, records in zip(found_list, records_list):
        if found is None:
            continue
        best = best_per_card(found, records, cards)
        data.append({"Section": f"{found.model} {found.dtype}" + ("" if found.backend == PUBLISHED else f" {found.backend}"),
                     **{f"{card:g} GiB": card_cell(best[card], found) for card in cards}})  # fmt: skip
    return pd.DataFrame(data, columns=["Section", *(f"{card:g} GiB" for card in cards)])


def cards_table(found: Predictions, rows: list[Record] = (), cards=CARDS_GB):
    """A notebook's "What fits" table (a pandas Styler): the best configuration per card, and why none."""
    df = cards_frame([found], [list(rows)], cards)
    caption = (f"Predicted at {found.preset} size: per card (GiB the driver reports), the best configuration whose "
               f"peak reserved memory + {context_gb():.2f} GiB CUDA context fits"
               + (f". Not predicted: {found.note}" if found.note else ""))  # fmt: skip
    return df.style.set_caption(caption).hide(axis="index")
