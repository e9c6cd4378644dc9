"""Every parameter, declared once: its name, default, type check, valid choices and help.

Everything else is derived from ``PARAMETERS``: ``params.DEFAULTS``, ``params.Params`` and validation's type
and choice checks; the notebooks' parameters cell (and so papermill's ``--help-notebook``); the identity
fields of a record (``records.IDENTITY_FIELDS``); and the parameter table of the README
(``python -m helpers parameters``). ``tests/test_parameters.py`` checks each of them against this list.
Adding a parameter is one entry here, plus the code that uses it.

Checks that involve several parameters, torch or the network (the text encoders a model has, the executor
and its address, sizes, the checkpoint) stay in ``params.validate``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .registry import BACKEND_QTYPES, BACKENDS, COMPILE_MODES, DEVICES, DTYPES, MODELS, OFFLOAD_MODES, PRESETS

DEFAULT_PROMPT = "ghibli style, a fantasy landscape with castles"
QUALITY_METRICS = ("clip_score",)


@dataclass(frozen=True)
class Parameter:
    name: str
    default: object
    kind: str  # what the value must be, as validation's error says it
    check: Callable[[object], bool]  # the type check
    annotation: str  # the notebook's annotation
    help: str  # one line: the notebook's comment and the README's table
    choices: tuple = ()  # the valid values (of each item, for a list); empty where another rule decides
    record: str | None = None  # the record field that carries it in a configuration's identity, if any


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _opt(check):
    return lambda v: v is None or check(v)


_OPT_INT = dict(kind="int or null", check=_opt(_is_int), annotation="int")
_STR_LIST = dict(kind="list of str", check=_str_list, annotation="list")

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("model", next(iter(MODELS)), "str", lambda v: isinstance(v, str), "str",
              f"pipeline: {' | '.join(MODELS)}", choices=tuple(MODELS), record="model"),
    Parameter("checkpoint", None, "str or null", _opt(lambda v: isinstance(v, str)), "str",
              "a local pipeline folder or hub id; None: the preset's own", record="checkpoint"),
    Parameter("preset", "tiny", "str", lambda v: isinstance(v, str), "str",
              "tiny: random-weight pipeline, offline | full: the hub checkpoint | random-full", choices=PRESETS,
              record="preset"),
    Parameter("device", "auto", "str", lambda v: isinstance(v, str), "str", "auto (CUDA if present) | cpu | cuda",
              choices=DEVICES, record="device"),
    Parameter("dtype", "bf16", "str", lambda v: isinstance(v, str), "str", "compute dtype: fp16 | bf16",
              choices=DTYPES, record="dtype"),
    Parameter("backend", "quanto", "str", lambda v: isinstance(v, str), "str",
              f"{' | '.join(BACKEND_QTYPES)} (quanto: the published grid)", choices=BACKENDS, record="backend"),
    Parameter("qtypes", None, "list of str or null", _opt(_str_list), "list",
              "the backend's weight types; None: all of them ("
              + "; ".join(f"{b}: {' '.join(q)}" for b, q in BACKEND_QTYPES.items()) + ")", record="qtype"),
    Parameter("quantize_te", [False, True], "list of false, true or lists of text-encoder names",
              lambda v: isinstance(v, list) and all(isinstance(x, bool) or _str_list(x) for x in v), "list",
              "quantize text encoders? each: False | True (all) | a list of names, e.g. ['text_encoder']",
              record="quantize_te"),
    Parameter("te_qtypes", None, "list of str or null", _opt(_str_list), "list",
              "the text encoders' qtypes (a grid axis); None: the transformer's qtype", record="te_qtype"),
    Parameter("fuse_qkv", [False, True], "list of bool",
              lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v), "list",
              "fuse the transformer's QKV projections first?", record="fuse_qkv"),
    Parameter("batch_sizes", [1], "list of int", lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "list",
              "images per prompt", record="batch_size"),
    Parameter("offload", ["none"], **_STR_LIST,
              help=f"a grid axis, CUDA only (n/a on the CPU): {' | '.join(OFFLOAD_MODES)} (where weights wait "
                   "between uses)", choices=OFFLOAD_MODES, record="offload"),
    Parameter("exclude", [], **_STR_LIST, help="transformer module-name patterns left unquantized", record="exclude"),
    Parameter("gguf_file", None, "str or null", _opt(lambda v: isinstance(v, str)), "str",
              "backend gguf, preset full: a prequantized transformer file (a local path, a URL or owner/repo/file."
              "gguf on the hub) that configurations at its qtype load; None: the project writes its own",
              record="gguf_file"),
    Parameter("steps", None, **_OPT_INT, help="denoising steps; None: the preset's default", record="steps"),
    Parameter("height", None, **_OPT_INT, help="image height (px); None: the preset's default", record="height"),
    Parameter("width", None, **_OPT_INT, help="image width (px); None: the preset's default", record="width"),
    Parameter("guidance_scale", None, "number or null", _opt(_is_number), "float", "None: the pipeline's default",
              record="guidance_scale"),
    Parameter("max_sequence_length", None, **_OPT_INT,
              help="text tokens the encoders see; None: the preset's default", record="max_sequence_length"),
    Parameter("prompts", [DEFAULT_PROMPT], **_STR_LIST, help="the first (published) is timed; fidelity uses all",
              record="prompts"),
    Parameter("quality_metrics", [], **_STR_LIST, help='optional: ["clip_score"] (needs the hub)',
              choices=QUALITY_METRICS, record="quality_metrics"),
    Parameter("seed", 0, "int", _is_int, "int", "seed of every pipeline call", record="seed"),
    Parameter("warmup", 1, "int", _is_int, "int", "untimed calls first (the first int4 call compiles a kernel)",
              record="warmup"),
    Parameter("repeats", 3, "int", _is_int, "int", "timed calls; latency is their median", record="repeats"),
    Parameter("compile", False, "false or str", lambda v: v is False or isinstance(v, str), "bool",
              'False | "default" | "max-autotune": torch.compile the transformer', choices=(False, *COMPILE_MODES),
              record="compile"),
    Parameter("threads", None, **_OPT_INT,
              help="CPU threads torch may use; None: every core (batch sets it when notebooks run side by side)",
              record="threads"),
    Parameter("out_dir", "outputs", "str", lambda v: isinstance(v, (str, os.PathLike)), "str",
              "records, images and grids (relative to this notebook)"),
    Parameter("executor", None, "str or null", _opt(lambda v: isinstance(v, str)), "str",
              "inline: in this kernel | ray: each configuration in a fresh Ray worker; None: inline for tiny, else ray"),
    Parameter("ray_address", None, "str or null", _opt(lambda v: isinstance(v, str)), "str",
              'None: an embedded local cluster for this run | "auto" | "host:port" of a running cluster'),
    Parameter("ray_resources", None, "mapping of num_cpus / num_gpus to numbers, or null",
              _opt(lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items())),
              "dict", "what each configuration's Ray task asks for; None: 1 GPU on CUDA, all of a node's CPUs on the CPU"),
    Parameter("timeout_s", None, **_OPT_INT,
              help="ray: seconds one configuration may take, then cancelled and recorded as an error; None: none "
                   "for tiny, 3600 for full sizes"),
)  # fmt: skip

BY_NAME = {p.name: p for p in PARAMETERS}
assert len(BY_NAME) == len(PARAMETERS), "a parameter declared twice"


def markdown_table() -> str:
    """The README's parameter table: every parameter, its default and what it means."""
    import json

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| parameter | default | what it is |", "|---|---|---|"]
    for p in PARAMETERS:
        default = "null" if p.default is None else json.dumps(p.default)
        lines.append(f"| `{p.name}` | `{cell(default)}` | {cell(p.help)} |")
    return "\n".join(lines)


def with_table(readme: str, name: str = "parameters", table: str | None = None) -> str:
    """``readme`` with the table between its ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers
    replaced by ``table`` (default: ``markdown_table()``, the parameters)."""
    begin_marker, end_marker = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    head, begin, rest = readme.partition(begin_marker)
    _, end, tail = rest.partition(end_marker)
    if not begin or not end:
        raise ValueError(f"README.md has no {begin_marker} ... {end_marker} block for the {name} table")
    return f"{head}{begin_marker}\n{markdown_table() if table is None else table}\n{end_marker}{tail}"
