"""What a fresh process per configuration costs: one grid inline, then on Ray (``python -m helpers bench-executor``).

Both runs write into folders of their own under a temporary directory, so
neither resumes from the other. For each it prints the wall time, the sum of
the configurations' own times (``wall_s``: load, prepare, every call, images,
in the process that ran it) and the parallel efficiency: that sum over the
wall time times the configurations the executor runs at once (1 inline).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from . import measure
from .params import Params, validate
from .grid import run_grid


def _line(name: str, rows, wall_s: float, slots: int) -> str:
    busy = sum(r.wall_s or 0.0 for r in rows)
    ok = sum(r.status == "ok" for r in rows)
    efficiency = busy / (wall_s * slots) if wall_s else float("nan")
    return (f"{name:<8} {len(rows):>3} ({ok} ok)  wall {wall_s:8.1f} s  sum of configurations {busy:8.1f} s  "
            f"slots {slots:>2}  parallel efficiency {efficiency:6.1%}")  # fmt: skip


def compare_executors(params: Params, address: str | None = None) -> str:
    """Run ``params``' grid inline and on Ray; return the report (a few lines of text)."""
    import ray

    from .cluster import Session, start_local

    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        inline = validate({**params, "executor": "inline", "ray_address": None, "ray_resources": None, "timeout_s": None,
                           "out_dir": str(Path(tmp) / "inline")})
        inline_rows, inline_s = measure.timed(lambda: run_grid(inline, progress=False))

        on_ray = validate({**params, "executor": "ray", "ray_address": address, "out_dir": str(Path(tmp) / "ray")})
        if address is None:
            _, start_s = measure.timed(start_local)
        else:
            _, start_s = measure.timed(lambda: ray.init(address=address))
        try:
            with Session(on_ray) as session:
                slots = session.slots(session.device(on_ray["device"]))
            ray_rows, ray_s = measure.timed(lambda: run_grid(on_ray, progress=False))
        finally:
            ray.shutdown()

    per_inline = statistics.fmean(r.wall_s for r in inline_rows if r.wall_s is not None)
    per_ray = statistics.fmean(r.wall_s for r in ray_rows if r.wall_s is not None)
    started = [r.worker_start_s for r in ray_rows if r.worker_start_s is not None]
    lines = [
        f"{params['model']} {params['dtype']}, preset {params['preset']}, {len(inline_rows)} configurations "
        f"on {ray_rows[0].device_name if ray_rows else '?'}",
        _line("inline", inline_rows, inline_s, 1),
        _line("ray", ray_rows, ray_s, slots),
        f"ray cluster start {start_s:.1f} s ({'joined ' + address if address else 'local, not in the wall time'})",
        f"per configuration: inline {per_inline:.2f} s, ray {per_ray:.2f} s in the task "
        f"+ {statistics.fmean(started) if started else float('nan'):.2f} s from worker start to task start",
        f"fresh process cost per configuration: {(ray_s - inline_s) / max(len(ray_rows), 1) * slots:.2f} s of wall "
        f"time per slot",
    ]
    return "\n".join(lines)
