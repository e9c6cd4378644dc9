"""The model modules: the sizes their publishers state, and that a model lives in its module alone."""

import subprocess
from pathlib import Path

import pytest

from helpers.components import build_on_meta, full_components, sizes_markdown, stored_elements
from helpers.models import SPECS
from helpers.parameters import with_table

ROOT = Path(__file__).resolve().parents[1]
# The models the rest of the code base may name (the published study's three and AuraFlow: defaults,
# fixtures, published tables). Any other model is its module, its params files, its notebook and the README.
NAMED_ELSEWHERE = {"pixart", "flux-dev", "sd3", "auraflow"}
ITS_OWN = ("helpers/models/", "params/", "notebooks/", "README.md")


SIZES = [pytest.param(spec.key, *entry, id=f"{spec.key}-{entry[0]}-{entry[2]:g}")
         for spec in SPECS.values() for entry in spec.published_sizes]  # fmt: skip


@pytest.mark.parametrize("model, component, submodule, billions, within, source", SIZES)
def test_full_size_components_have_their_published_sizes(model, component, submodule, billions, within, source):
    """Built from the module's full-size numbers on the meta device, each component counts what its publisher
    says, within the publisher's rounding (a "20 B" is 19.5-20.5 B; an exact count, exactly)."""
    module = build_on_meta(full_components(model)[component], "bf16")
    if submodule:
        module = module.get_submodule(submodule)
    count = stored_elements(module)
    assert abs(count - round(billions * 1e9)) <= within * 1e9, (count, source)


def test_every_model_states_its_transformers_size_and_the_readme_shows_them_all():
    assert all("transformer" in {c for c, *_ in spec.published_sizes} for spec in SPECS.values())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert with_table(readme, "models", sizes_markdown()) == readme, "run: python -m helpers models --write"


def test_a_model_is_named_only_in_its_module_params_notebook_and_the_readme():
    """Adding a model is its module in helpers/models/, one line in helpers/models/__init__.py, its params
    files, its generated notebook and the README: no other tracked file names it (its key, title or hub id)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = {spec.key: {spec.key, spec.title, spec.hub_id} for spec in SPECS.values() if spec.key not in NAMED_ELSEWHERE}
    found = []
    for f in files:
        path = ROOT / f
        if f.startswith(ITS_OWN) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a picture
            continue
        found += [(f, key, n) for key, ns in names.items() for n in ns if n in text]
    assert not found


def test_building_a_component_leaves_the_model_modules_numbers_as_they_were():
    """They name the tiny pipeline (its cache key) and the records' checkpoint: a config class that writes into
    the dicts it is given (transformers' Qwen2.5-VL adds rope_theta to rope_scaling) must get a copy."""
    import json

    import torch

    from helpers.components import instantiate, tiny_components

    for spec in SPECS.values():
        before = json.dumps(spec.tiny, sort_keys=True, default=str)
        with torch.device("meta"):
            for component in tiny_components(spec.key).values():
                instantiate(component)
        assert json.dumps(spec.tiny, sort_keys=True, default=str) == before, spec.key
