"""Every parameter is declared once (helpers/parameters.py); each list derived from it agrees with it."""

import ast
import dataclasses
from pathlib import Path

import pytest

from helpers.cells import Cell
from helpers import params as P, records
from helpers.parameters import BY_NAME, PARAMETERS, markdown_table, with_table

ROOT = Path(__file__).resolve().parents[1]
NAMES = [p.name for p in PARAMETERS]


def test_defaults_and_params_are_the_declaration():
    assert P.DEFAULTS == {p.name: p.default for p in PARAMETERS} and list(P.DEFAULTS) == NAMES
    assert [f.name for f in dataclasses.fields(P.Params)] == NAMES
    assert list(P.validate({})) == NAMES


def test_the_notebook_cell_is_the_declaration():
    from helpers.notebook import parameters_source

    source = parameters_source("sd3")
    cell = [n for n in ast.parse(source).body]
    assert [n.target.id for n in cell] == NAMES
    assert [n.annotation.id for n in cell] == [p.annotation for p in PARAMETERS]
    for p in PARAMETERS:  # each help, wrapped over the cell's comment lines, is all there
        assert " ".join(p.help.split()[:4]) in " ".join(line.strip("# ") for line in source.splitlines()), p.name


def test_a_records_identity_is_the_declared_fields_plus_the_hardware():
    declared = [p.record for p in PARAMETERS if p.record]
    assert records.IDENTITY_FIELDS == tuple(declared) + records.HARDWARE_FIELDS
    fields = {f.name for f in dataclasses.fields(records.Record)}
    assert set(records.IDENTITY_FIELDS) <= fields, set(records.IDENTITY_FIELDS) - fields
    # the grid cell carries the per-configuration ones
    cell = {f.name for f in dataclasses.fields(Cell)}
    per_configuration = {p.record for p in PARAMETERS if p.record and p.record != p.name} | {"quantize_te", "fuse_qkv"}
    assert per_configuration <= cell


def test_the_readme_table_is_the_declaration():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert with_table(readme) == readme, "run: python -m helpers parameters --write"
    for p in PARAMETERS:
        assert f"| `{p.name}` |" in markdown_table()


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.choices], ids=lambda p: p.name)
def test_validation_refuses_what_the_declaration_does_not_list(parameter):
    bad = "nonesuch"
    value = [bad] if isinstance(parameter.default, list) else bad
    with pytest.raises(ValueError, match=rf"parameter '{parameter.name}'.*valid choices: "):
        P.validate({parameter.name: value})


@pytest.mark.parametrize("parameter", PARAMETERS, ids=lambda p: p.name)
def test_validation_refuses_a_wrong_type_with_the_declared_kind(parameter):
    wrong = {"a": object()}  # no parameter takes a mapping of objects
    with pytest.raises(ValueError, match=rf"parameter '{parameter.name}' must be {parameter.kind}"):
        P.validate({parameter.name: wrong})


def test_each_name_is_declared_once():
    assert len(BY_NAME) == len(PARAMETERS) == len(set(NAMES))
