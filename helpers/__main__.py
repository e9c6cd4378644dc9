"""Command line: ``python -m helpers COMMAND --help``."""

from __future__ import annotations

import argparse
import sys

from . import params as P
from .backends import PUBLISHED
from .registry import BACKENDS, DTYPES, EXECUTORS, MODELS, PRESETS


def _grid(args) -> int:
    overrides = P.load_params_file(args.params) if args.params else {}
    for key in ("model", "dtype", "preset", "out_dir", "device", "executor", "ray_address"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    params = P.validate(overrides)
    P.ensure_out_dir(params.out_dir)
    from .grid import results_path, run_grid

    try:
        rows = run_grid(params)
    except KeyboardInterrupt:
        print(f"interrupted: the finished records are in {results_path(params)}; the same command resumes",
              file=sys.stderr)  # fmt: skip
        return 130
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "n/a", "skipped", "error")}
    print(f"{len(rows)} records ({', '.join(f'{n} {s}' for s, n in counts.items())}) in {results_path(params)}")
    return 0 if counts["error"] == 0 else 1


def _batch(args) -> int:
    from .batch import run_batch

    P.ensure_out_dir(args.out_dir)
    if args.ray_address is not None:  # before any notebook starts: each would wait for it in turn
        from .cluster import check_address

        check_address(args.ray_address)
    failed = run_batch(
        models=args.models, dtypes=args.dtypes, preset=args.preset, out_dir=args.out_dir, backend=args.backend,
        overrides={"device": args.device} if args.device else None, executor=args.executor, address=args.ray_address,
        jobs=args.jobs,
    )
    return 1 if failed else 0


def _estimate(args) -> int:
    import json

    from .estimate import format_table, predict_many

    overrides = P.load_params_file(args.params) if args.params else {}
    jobs = [P.validate({**overrides, "model": m, "dtype": d}) for m in args.model for d in args.dtype]
    outputs = predict_many(jobs, preset=args.preset, phases=True)
    if args.format == "json":
        print(json.dumps([row for rows in outputs for row in rows], indent=1))
    else:
        print("\n\n".join(format_table(rows) for rows in outputs))
    return 0


def _fit(args) -> int:
    from .fit import fit, format_json, format_table

    overrides = P.load_params_file(args.params) if args.params else {}
    params = P.validate({**overrides, "model": args.model, "dtype": args.dtype})
    answer = fit(params, args.gpu_memory, args.host_memory, args.out_dir, args.preset)
    print(format_json(answer) if args.format == "json" else format_table(answer))
    return 0


def _prepare(args) -> int:
    from .batch import prepare

    prepare(models=args.models, dtypes=args.dtypes, preset=args.preset, backend=args.backend)
    return 0


def _notebook(args) -> int:
    from .notebook import write

    for model in args.model:
        print(f"wrote {write(model)}")
    return 0


def _above(cast, what: str, minimum: float, strict: bool):
    """An argparse type: a number of ``what`` (``cast`` reads it) at least ``minimum`` (above it: ``strict``);
    argparse then exits 2 with the option's name and this one line."""
    valid = f"valid values: more than {minimum}" if strict else f"valid values: {minimum} or more"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}; {valid}") from None
        if value < minimum or (strict and value == minimum) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} {what}; {valid}")
        return value

    return parse


_positive_int = _above(int, "notebooks side by side", 1, strict=False)
_gib = _above(float, "GiB", 0, strict=True)


def _ray_arguments(parser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS, help="inline (tiny default) or ray (full-size default)")
    parser.add_argument("--address", dest="ray_address",
                        help="a running Ray cluster: auto or host:port (default with ray: a local one for this run)")  # fmt: skip


def _bench_executor(args) -> int:
    from .bench import compare_executors

    overrides = P.load_params_file(args.params) if args.params else {}
    params = P.validate({**overrides, "model": args.model, "dtype": args.dtype, "executor": "inline"})
    if args.ray_address is not None:
        from .cluster import check_address

        check_address(args.ray_address)
    print(compare_executors(params, args.ray_address))
    return 0


def _readme_table(write: bool, name: str, table: str) -> int:
    """Print a generated README table, or (``write``) replace the one between README.md's ``name`` markers."""
    from pathlib import Path

    from .parameters import with_table

    if not write:
        print(table)
        return 0
    readme = Path(__file__).resolve().parents[1] / "README.md"
    readme.write_text(with_table(readme.read_text(encoding="utf-8"), name, table), encoding="utf-8")
    print(f"wrote the {name} table into {readme}")
    return 0


def _models(args) -> int:
    from .components import sizes_markdown

    return _readme_table(args.write, "models", sizes_markdown())


def _backends(args) -> int:
    from .backends import markdown_table

    return _readme_table(args.write, "backends", markdown_table())


def _parameters(args) -> int:
    from .parameters import markdown_table

    return _readme_table(args.write, "parameters", markdown_table())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grid", help="run one model's grid in-process and append its records")
    g.add_argument("--model", choices=tuple(MODELS), required=True)
    g.add_argument("--dtype", choices=DTYPES, required=True)
    g.add_argument("--preset", choices=PRESETS, help="tiny (default, offline) or full (hub checkpoint)")
    g.add_argument("--device", help="auto (default), cpu or cuda")
    g.add_argument("--params", help="YAML file of parameters that differ from the defaults")
    g.add_argument("--out", dest="out_dir", help="output folder (default: outputs)")
    _ray_arguments(g)
    g.set_defaults(func=_grid)

    b = sub.add_parser("batch", help="execute each model's notebook per dtype with papermill, then the results document")
    b.add_argument("--models", nargs="+", default=list(MODELS), help=f"default: {' '.join(MODELS)}")
    b.add_argument("--dtypes", nargs="+", default=list(DTYPES), help=f"default: {' '.join(DTYPES)}")
    b.add_argument("--preset", choices=PRESETS, default="tiny")
    b.add_argument("--out", dest="out_dir", default="outputs", help="output folder (default: outputs)")
    b.add_argument("--device", help="auto (default), cpu or cuda")
    b.add_argument("--backend", nargs="+", default=[PUBLISHED], metavar="BACKEND[:DTYPE,...]",
                   help=f"{', '.join(BACKENDS)} (default: {PUBLISHED}); params/<model>.<backend>.yaml; several in one "
                        "batch, each with its own dtypes after a colon: --backend quanto torchao:bf16")
    b.add_argument("--jobs", type=_positive_int, help="notebooks side by side, each with cores/jobs threads "
                                             "(default: one per core on the CPU, else 1)")
    _ray_arguments(b)
    b.set_defaults(func=_batch)

    r = sub.add_parser("prepare", help="fill the caches a batch with the same arguments reads (make report does this once)")
    r.add_argument("--models", nargs="+", default=list(MODELS), help=f"default: {' '.join(MODELS)}")
    r.add_argument("--dtypes", nargs="+", default=list(DTYPES), help=f"default: {' '.join(DTYPES)}")
    r.add_argument("--preset", choices=PRESETS, default="tiny")
    r.add_argument("--backend", nargs="+", default=[PUBLISHED], metavar="BACKEND[:DTYPE,...]", help="as for batch")
    r.set_defaults(func=_prepare)

    x = sub.add_parser("bench-executor", help="run one grid inline and on Ray; print wall time and parallel efficiency")
    x.add_argument("--model", choices=tuple(MODELS), required=True)
    x.add_argument("--dtype", choices=DTYPES, required=True)
    x.add_argument("--params", help="YAML file of parameters that differ from the defaults")
    x.add_argument("--address", dest="ray_address", help="join this Ray cluster (default: start a local one)")
    x.set_defaults(func=_bench_executor)

    e = sub.add_parser("estimate", help="predict every configuration's memory without weights or a GPU")
    e.add_argument("--model", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    e.add_argument("--dtype", nargs="+", choices=DTYPES, default=[P.DEFAULTS["dtype"]], help="default: bf16")
    e.add_argument("--preset", choices=("full", "tiny"), default="full")
    e.add_argument("--params", help="YAML file: the grid (qtypes, quantize_te, fuse_qkv, batch_sizes, exclude, "
                   "offload) and the call its peaks are predicted for (height, width, steps, guidance_scale, "
                   "max_sequence_length)")  # fmt: skip
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.set_defaults(func=_estimate)

    from .fit import GPU_MEMORY_HELP

    f = sub.add_parser("fit", help="which configurations (and offload modes) are predicted to fit a GPU, best first")
    f.add_argument("--model", choices=tuple(MODELS), required=True)
    f.add_argument("--gpu-memory", type=_gib, required=True, metavar="GIB", help=GPU_MEMORY_HELP)
    f.add_argument("--host-memory", type=_gib, metavar="GIB",
                   help="host memory in GiB; given, a configuration must also fit it (offloading holds weights there)")
    f.add_argument("--dtype", choices=DTYPES, default=P.DEFAULTS["dtype"], help="default: bf16")
    f.add_argument("--params", help="YAML file: the grid (backend, qtypes, quantize_te, fuse_qkv, batch_sizes, exclude)")
    f.add_argument("--out", dest="out_dir", default="outputs",
                   help="where measured records are read (its results/; default: outputs)")
    f.add_argument("--preset", choices=("full", "tiny"), default="full",
                   help="the size predicted, and the records that count as measured (default: full)")
    f.add_argument("--format", choices=("table", "json"), default="table")
    f.set_defaults(func=_fit)

    t = sub.add_parser("parameters", help="print the parameter table (helpers/parameters.py), or --write it into README.md")
    t.add_argument("--write", action="store_true", help="replace the table between README.md's parameters markers")
    t.set_defaults(func=_parameters)
    m = sub.add_parser("models", help="print the model table (full-size sizes, built and published), or --write it "
                                      "into README.md")
    m.add_argument("--write", action="store_true", help="replace the table between README.md's models markers")
    m.set_defaults(func=_models)
    k = sub.add_parser("backends", help="print the backend table (bits, devices, matmul, predicted per qtype), or "
                                        "--write it into README.md")
    k.add_argument("--write", action="store_true", help="replace the table between README.md's backends markers")
    k.set_defaults(func=_backends)

    n = sub.add_parser("notebook", help="write notebooks/<model>.ipynb from the one template (helpers/notebook.py)")
    n.add_argument("--model", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    n.set_defaults(func=_notebook)

    args = parser.parse_args(argv)
    from .records import Busy

    try:
        return args.func(args)
    except (ValueError, Busy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
