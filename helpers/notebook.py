"""The one template every notebook in ``notebooks/`` is generated from (``python -m helpers notebook``).

A notebook is its title, the tagged ``parameters`` cell (every parameter of
``parameters.PARAMETERS``, with its type and help in lines that fit the cell), then
one helpers call per step and the display. Only the title and the model differ between models,
so editing a notebook by hand is editing this file; ``tests/test_notebooks.py``
checks that the committed notebooks are exactly what it gives.
"""

from __future__ import annotations

import json
from pathlib import Path

from .parameters import PARAMETERS
from .registry import model_spec

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

_STEPS = [
    ("markdown", "# {title}: what each quantization choice costs and buys\n\nValidate the parameters, run the grid "
                 "(each configuration is loaded, quantized and measured on its own), then the two published tables, "
                 "the image grid and an explorer."),
    ("code", "import helpers.estimate, helpers.explore, helpers.figures, helpers.fit, helpers.grid, helpers.params, "
             "helpers.pipelines, helpers.report\n\nparams = helpers.params.from_namespace(globals())\n"
             "helpers.pipelines.import_libraries(params[\"model\"])"),
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
    """The parameters cell: every parameter (helpers/parameters.py) with its annotation, default and help."""
    values = {"model": model, "out_dir": "../outputs"}
    return "\n".join(line for p in PARAMETERS
                     for line in _parameter_lines(f"{p.name}: {p.annotation} = {_literal(values.get(p.name, p.default))}",
                                                  p.help))  # fmt: skip


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
