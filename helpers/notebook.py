"""The one template every notebook in ``notebooks/`` is generated from (``python -m helpers notebook``).

A notebook is its title, the tagged ``parameters`` cell (every parameter of
``params.DEFAULTS``, with its type and help in lines that fit the cell), then
one helpers call per step and the display. Only the title and the model differ between models,
so editing a notebook by hand is editing this file; ``tests/test_notebooks.py``
checks that the committed notebooks are exactly what it gives.
"""

from __future__ import annotations

import json
from pathlib import Path

from .params import DEFAULTS
from .registry import BACKEND_QTYPES, MODELS, OFFLOAD_MODES, model_spec

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# name -> (annotation, help); the order is DEFAULTS'.
_HELP = {
    "model": ("str", f"pipeline: {' | '.join(MODELS)}"),
    "checkpoint": ("str", "a local pipeline folder or hub id; None: the preset's own"),
    "preset": ("str", "tiny: random-weight pipeline, offline | full: the hub checkpoint | random-full"),
    "device": ("str", "auto (CUDA if present) | cpu | cuda"),
    "dtype": ("str", "compute dtype: fp16 | bf16"),
    "backend": ("str", f"{' | '.join(BACKEND_QTYPES)} (quanto: the published grid)"),
    "qtypes": ("list", "the backend's weight types; None: all of them ("
               + "; ".join(f"{b}: {' '.join(q)}" for b, q in BACKEND_QTYPES.items()) + ")"),
    "quantize_te": ("list", "quantize text encoders? each: False | True (all) | a list of names, e.g. ['text_encoder']"),
    "te_qtypes": ("list", "the text encoders' qtypes (a grid axis); None: the transformer's qtype"),
    "fuse_qkv": ("list", "fuse the transformer's QKV projections first?"),
    "batch_sizes": ("list", "images per prompt"),
    "offload": ("list", f"a grid axis, CUDA only (skipped on the CPU): {' | '.join(OFFLOAD_MODES)} (where weights "
                        "wait between uses)"),
    "exclude": ("list", "transformer module-name patterns left unquantized"),
    "steps": ("int", "denoising steps; None: the preset's default"),
    "height": ("int", "image height (px); None: the preset's default"),
    "width": ("int", "image width (px); None: the preset's default"),
    "guidance_scale": ("float", "None: the pipeline's default"),
    "max_sequence_length": ("int", "text tokens the encoders see; None: the preset's default"),
    "prompts": ("list", "the first (published) is timed; fidelity uses all"),
    "quality_metrics": ("list", 'optional: ["clip_score"] (needs the hub)'),
    "seed": ("int", "seed of every pipeline call"),
    "warmup": ("int", "untimed calls first (the first int4 call compiles a kernel)"),
    "repeats": ("int", "timed calls; latency is their median"),
    "compile": ("bool", 'False | "default" | "max-autotune": torch.compile the transformer'),
    "threads": ("int", "CPU threads torch may use; None: every core (batch sets it when notebooks run side by side)"),
    "out_dir": ("str", "records, images and grids (relative to this notebook)"),
    "executor": ("str", "inline: in this kernel | ray: each configuration in a fresh Ray worker; None: inline for tiny, else ray"),
    "ray_address": ("str", 'None: an embedded local cluster for this run | "auto" | "host:port" of a running cluster'),
    "ray_resources": ("dict", "what each configuration's Ray task asks for; None: 1 GPU on CUDA, all of a node's CPUs on the CPU"),
    "timeout_s": ("int", "ray: seconds one configuration may take, then cancelled and recorded as an error; None: none for tiny, 3600 for full sizes"),
}  # fmt: skip
assert list(_HELP) == list(DEFAULTS), "every parameter has its line in the notebooks, in DEFAULTS' order"

_STEPS = [
    ("markdown", "# {title}: what each quantization choice costs and buys\n\nValidate the parameters, run the grid "
                 "(each configuration is loaded, quantized and measured on its own), then the two published tables, "
                 "the image grid and an explorer."),
    ("code", "import helpers.estimate, helpers.explore, helpers.figures, helpers.fit, helpers.grid, helpers.params, "
             "helpers.report\n\nparams = helpers.params.from_namespace(globals())"),
    ("code", "rows = helpers.grid.run_grid(params)"),
    ("markdown", "## Memory and latency\n\nMeasured here; the last column is *predicted* for the full-size checkpoint "
                 "from its architecture (no weights loaded)."),
    ("code", "predicted = helpers.estimate.predicted_gb(params)"),
    ("code", "display(*helpers.report.styled_tables(rows, predicted))"),
    ("markdown", "## What each configuration looks like"),
    ("code", 'helpers.figures.image_grid(rows, params["out_dir"])'),
    ("markdown", "## The trade-off\n\nMemory against latency, coloured by fidelity to the unquantized run (SSIM); "
                 "ringed: no other configuration uses less memory *and* less time."),
    ("code", 'helpers.figures.tradeoff_chart(rows, params["out_dir"])'),
    ("markdown", "## What fits which GPU\n\n*Predicted* for the full-size checkpoint, every configuration with every "
                 "offload mode (no weights loaded): per card, the best configuration whose peak reserved memory plus "
                 "the CUDA context fits (`python -m helpers fit` lists them all). A card is the GiB its driver reports."),
    ("code", "fits = helpers.fit.predictions(params, cached=True)"),
    ("code", "display(helpers.fit.cards_table(fits, rows))"),
    ("code", 'helpers.figures.fits_chart(fits, params["out_dir"])'),
    ("markdown", "## Explore (JupyterLab)\n\nPick a configuration to see it beside the unquantized one; move the GPU "
                 "memory slider to see which configurations fit that card."),
    ("code:interactive", 'helpers.explore.explorer(rows, params["out_dir"], fits)'),
]  # fmt: skip


# What JupyterLab 4.6 with ipykernel 7.4 writes into a notebook when its kernel starts: committed as such, a
# notebook opened in JupyterLab is not marked modified (the version is the project's Python, 3.11).
METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": "3.11.7",
    },
}


def _literal(value) -> str:
    """Python source for a parameter's default, strings in double quotes as papermill writes them."""
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


# The parameters cell's lines fit a notebook cell without a sideways scrollbar.
WIDTH = 79


def _parameter_lines(assignment: str, text: str) -> list[str]:
    """``name: type = value  # help``, the help wrapped under its own ``#`` (papermill's ``--help-notebook``
    reads the first line's); a long assignment gets its help on the lines above it."""
    import textwrap

    indent = len(assignment) + 2
    if indent + 2 + 24 > WIDTH:
        return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2)] + [assignment]
    first, *rest = textwrap.wrap(text, WIDTH - indent - 2)
    return [f"{assignment}  # {first}"] + [" " * indent + f"# {line}" for line in rest]


def parameters_source(model: str) -> str:
    values = {**DEFAULTS, "model": model, "out_dir": "../outputs"}
    return "\n".join(line for name, (kind, text) in _HELP.items()
                     for line in _parameter_lines(f"{name}: {kind} = {_literal(values[name])}", text))  # fmt: skip


def _cell(kind: str, source: str, index: int, tags=()) -> dict:
    lines = source.split("\n")
    cell = {"cell_type": kind, "id": f"cell-{index:02d}", "metadata": {"tags": list(tags)} if tags else {},
            "source": [line + "\n" for line in lines[:-1]] + [lines[-1]]}  # fmt: skip
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return dict(sorted(cell.items()))


def notebook_text(model: str) -> str:
    """The ``.ipynb`` text of ``model``'s notebook."""
    title = model_spec(model).title
    steps = [(kind, source.format(title=title)) for kind, source in _STEPS]
    steps.insert(1, ("code:parameters", parameters_source(model)))  # after the title
    cells = []
    for i, (kind, source) in enumerate(steps):
        kind, _, tag = kind.partition(":")
        cells.append(_cell(kind, source, i, tags=[tag] if tag else ()))
    nb = {"cells": cells, "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write(model: str, folder: str | Path = NOTEBOOKS) -> Path:
    path = Path(folder) / f"{model}.ipynb"
    path.write_text(notebook_text(model), encoding="utf-8")
    return path
