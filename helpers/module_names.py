"""The transformer's module names, what an ``exclude`` pattern is checked against (``params.validate``),
built once on the meta device and cached, so a cached check imports no torch."""

from __future__ import annotations

import json
from pathlib import Path

from .cache import key_hash, write_atomic
from .paths import cache_dir
from .presets import architecture
from .registry import model_spec, preset


def transformer_module_names(p: dict) -> list[str]:
    """The transformer's module names, fused ones included: those of the preset's own
    architecture or a local checkpoint's config (see ``transformer_modules``)."""
    return transformer_modules(p)["names"]


# What the module-name cache holds; a new format gets new file names, so an older file is never read.
_MODULES_FORMAT = "module-names/2: names, linear, fused_linear"


def transformer_modules(p: dict) -> dict[str, list[str]]:
    """``names``: every module name of the transformer, fused ones included; ``linear``: the names of its
    ``nn.Linear`` modules, and ``fused_linear`` those after ``fuse_qkv_projections`` (what a configuration with
    ``fuse_qkv`` quantizes; the same as ``linear`` where nothing fuses). Built once on the meta device (nothing
    loads) and kept under the cache folder by architecture and diffusers version, so the check costs no
    import of torch."""
    from importlib.metadata import version

    folder = Path(p["checkpoint"]).expanduser() if p["checkpoint"] else None
    if folder is not None and folder.is_dir():
        config = json.loads((folder / "transformer" / "config.json").read_text())
        component = ("diffusers", config["_class_name"], config)
    else:
        spec = model_spec(p["model"])
        component = architecture(preset(p["preset"]), spec)["transformer"]
    path = cache_dir() / "module-names" / (key_hash([_MODULES_FORMAT, component, version("diffusers")], 24) + ".json")
    if path.is_file():  # a file of another format (a list of names, before) is built again
        table = json.loads(path.read_text())
        if isinstance(table, dict) and table.get("format") == _MODULES_FORMAT:
            return table
    table = {"format": _MODULES_FORMAT, **_modules_on_meta(component)}
    write_atomic(path, json.dumps(table))
    return table


def _modules_on_meta(component: tuple) -> dict[str, list[str]]:
    import torch

    from .components import Component, instantiate

    with torch.device("meta"):
        module = instantiate(Component(*component))
    names = [name for name, _ in module.named_modules() if name]
    linear = [name for name, m in module.named_modules() if name and isinstance(m, torch.nn.Linear)]
    fused_linear = linear
    if hasattr(module, "fuse_qkv_projections"):
        module.fuse_qkv_projections()
        names += [name for name, _ in module.named_modules() if name and name not in set(names)]
        fused_linear = [name for name, m in module.named_modules() if name and isinstance(m, torch.nn.Linear)]
    return {"names": names, "linear": linear, "fused_linear": fused_linear}
