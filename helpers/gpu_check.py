"""``make gpu-check``: the project's first run on a GPU, about three minutes on one H100.

It runs the project's own grid (``grid.run_grid``, preset ``random-full``, executor ``ray``) on
PixArt-Sigma in bf16 at the published call (1024 x 1024, the pipeline's 20 steps, guidance 4.5, 300 text
tokens) for three configurations: nothing quantized, int8 with the text encoder quantized, and int4
with the text encoder quantized (quanto, QKV unfused, batch size 1; one warm-up and two timed calls each).
It then prints the hardware the records name and, per configuration, the measured memory against the
estimate's prediction, the peak, and the latency beside the published H100 figure. Exit status: 0 when
all three ran ``ok``, 1 otherwise, 2 when this machine has no CUDA device (checked before anything but
torch is imported). See docs/gpu-check.md.
"""

from __future__ import annotations

import signal
import sys
import time

import torch

# (qtype, quantize_te) of the three configurations, in the order they run: the unquantized reference first.
CONFIGS = [("none", False), ("int8", True), ("int4", True)]

# Published figures for PixArt-Sigma, bf16, batch size 1, QKV unfused, on an H100 (CUDA 12.2, PyTorch 2.4.0):
# (Memory (GB), Latency (s)). Source: the Hugging Face blog post "Memory-efficient Diffusion Transformers
# with Quanto and Diffusers" (July 2024), https://huggingface.co/blog/quanto-diffusers (huggingface/blog,
# quanto-diffusers.md): INT8 from its table "bfloat16 is usually better on H100" (BF16, INT8, Quantize TE
# True), INT4 from its table "How about INT4?" (Quantize TE Yes). The post gives no bf16 figure with
# nothing quantized (its NONE rows are fp16), so `none` has none here. Reference figures to compare
# against, never results: nothing here is written into a record.
PUBLISHED = {
    ("int8", True): (5.364, 1.454),
    ("int4", True): (3.058, 7.604),
}

LIMIT_S = 420  # the grid is stopped (and what finished is reported) after 7 minutes: make gpu-check has 8


def grid_params(out_dir: str) -> list[dict]:
    """Two grids into one results file: ``none`` without the text encoder, then int8 and int4 with it."""
    common = dict(
        model="pixart", dtype="bf16", preset="random-full", device="cuda", backend="quanto",
        fuse_qkv=[False], batch_sizes=[1], max_sequence_length=300,  # steps, size, guidance: the preset's (published)
        warmup=1, repeats=2, executor="ray", out_dir=out_dir,
    )  # fmt: skip
    return [dict(common, qtypes=["none"], quantize_te=[False]),
            dict(common, qtypes=["int8", "int4"], quantize_te=[True])]


def _gb(x) -> str:
    return "n/a" if x is None else f"{x:.3f} GB"


def _s(x) -> str:
    return "n/a" if x is None else f"{x:.3f} s"


def identity(records: list) -> str:
    """The hardware and software the first record that says names (every record of a run names the same)."""
    r = next((r for r in records if getattr(r, "gpu", None) or r.device_name), None)
    if r is None:
        return "hardware: no record names it (no configuration reached its worker)"
    versions = getattr(r, "versions", None) or {}
    names = ("torch", "triton", "diffusers", "transformers", "optimum-quanto", "ray")
    return "\n".join([
        f"hardware: {getattr(r, 'gpu', None) or r.device_name}, compute capability "
        f"{getattr(r, 'compute_capability', None) or 'n/a'}, CUDA runtime {getattr(r, 'cuda_runtime', None) or 'n/a'}, "
        f"driver {getattr(r, 'cuda_driver', None) or 'n/a'} (host {r.host or 'n/a'})",
        "versions: " + ", ".join(f"{n} {versions.get(n, 'n/a')}" for n in names),
    ])  # fmt: skip


def _record(records: list, qtype: str, te: bool):
    """The last record of that configuration, or ``None``."""
    return next((r for r in reversed(records) if r.qtype == qtype and r.quantize_te == te), None)


def report(records: list, predicted: dict) -> str:
    """One block per configuration of ``CONFIGS``: status, memory against the prediction
    (``predicted``: (qtype, quantize_te) -> GB), peak, latency beside the published figure, where the time went."""
    lines = []
    for qtype, te in CONFIGS:
        r = _record(records, qtype, te)
        title = f"{qtype.upper()}, text encoder {'quantized' if te else 'not quantized'}"
        if r is None:
            lines += [f"{title}: not run", ""]
            continue
        lines.append(f"{title}: {r.status}" + (f"  ({r.error.splitlines()[0][:300]})" if r.error else ""))
        published = PUBLISHED.get((qtype, te))
        want = predicted.get((qtype, te))
        versus = f"published H100 {_gb(published[0])}" if published else "published: not found"
        if r.memory_gb is not None and want:
            d = r.memory_gb - want
            lines.append(f"  memory   {_gb(r.memory_gb)}  predicted {_gb(want)}, difference {d:+.3f} GB "
                         f"({d / want * 100:+.2f} %)  {versus}")  # fmt: skip
        else:
            lines.append(f"  memory   {_gb(r.memory_gb)}  predicted {_gb(want)}  {versus}")
        reserved = getattr(r, "peak_reserved_gb", None)
        lines.append(f"  peak     {_gb(r.peak_memory_gb)} allocated, {_gb(reserved)} reserved")
        versus = f"published H100 {_s(published[1])}" if published else "published: not found"
        if r.latency_s is not None and published:
            versus += f", measured / published {r.latency_s / published[1]:.2f}"
        spread = f" (min {_s(r.latency_min_s)}, max {_s(r.latency_max_s)}, {r.repeats} timed)" if r.latency_s else ""
        lines.append(f"  latency  {_s(r.latency_s)}{spread}  {versus}")
        if r.latent_rel_error is not None:  # the first figures at full size for the suspect limit (docs/full-size.md)
            from .records import SUSPECT_LATENT_REL_ERROR, suspect

            lines.append(f"  fidelity latent rel. error {r.latent_rel_error:.4f}, SSIM {r.ssim:.3f} to none"
                         f"{'  SUSPECT' if suspect(r) else ''} (suspect above {SUSPECT_LATENT_REL_ERROR})")  # fmt: skip
        if r.wall_s is not None:
            lines.append(f"  time     {r.wall_s:.0f} s in its worker: build {r.init_s or 0:.0f} s, load + quantize "
                         f"{r.load_s or 0:.0f} s; worker start {r.worker_start_s or 0:.0f} s")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def passed(records: list) -> bool:
    """Every configuration of ``CONFIGS`` has an ``ok`` record."""
    return all((r := _record(records, q, te)) is not None and r.status == "ok" for q, te in CONFIGS)


def _stop(signum, frame):
    print(f"gpu-check: time limit ({LIMIT_S} s) reached; stopping the grid", flush=True)
    raise KeyboardInterrupt(f"gpu-check's time limit ({LIMIT_S} s)")  # the Ray driver cancels its tasks on it


def main() -> int:
    started = time.perf_counter()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine")
        return 2
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone

    from . import records as records_module
    from .cluster import start_local
    from .estimate import predicted_gb
    from .grid import results_path, run_grid
    from .params import validate

    out_dir = f"outputs/gpu-check/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    grids = [validate(p) for p in grid_params(out_dir)]
    print("gpu-check: PixArt-Sigma bf16, random-full, 1024 px, 20 steps: none, int8 + text encoder, "
          f"int4 + text encoder, each in a fresh Ray worker, into {out_dir}", flush=True)

    def estimate() -> dict:  # on the meta device, beside the grid (about 12 s on a cold cache)
        return {(c.qtype, c.quantize_te): gb for p in grids for c, gb in (predicted_gb(p) or {}).items()}

    with ThreadPoolExecutor(1) as pool:
        prediction = pool.submit(estimate)
        signal.signal(signal.SIGALRM, _stop)
        signal.alarm(max(1, LIMIT_S - int(time.perf_counter() - started)))
        try:
            start_local()  # one embedded Ray cluster for both grids (each would start its own); Ray stops it at exit
            for p in grids:
                run_grid(p)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - report what finished, then fail
            print(f"gpu-check: the grid stopped: {type(e).__name__}: {e}", flush=True)
        finally:
            signal.alarm(0)
        try:
            predicted = prediction.result()
        except Exception as e:  # noqa: BLE001
            print(f"gpu-check: no prediction: {type(e).__name__}: {e}")
            predicted = {}

    path = results_path(grids[0])  # both grids write this one fresh file
    found = records_module.latest(records_module.read(path))
    print()
    print(identity(found))
    print()
    print(report(found, predicted))
    ok = passed(found)
    elapsed = time.perf_counter() - started
    print(f"gpu-check: {'all three ok' if ok else 'FAILED'} in {elapsed:.0f} s; records: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
