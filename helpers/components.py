"""Components as numbers, and the modules they become: one place that builds them.

A component is ``(library, class name, config kwargs)``: what ``model_index.json``
and a component's ``config.json`` tell ``from_pretrained``. ``build_on_meta``
makes the module ``from_pretrained`` would give, with meta tensors of the right
shapes and dtypes (the memory estimate); ``materialize`` gives its parameters
real, seeded storage (the random-full preset).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .registry import model_spec, torch_dtype


@dataclass
class Component:
    library: str  # "diffusers" | "transformers"
    class_name: str
    config: dict


def components_from_folder(path: str | Path) -> dict[str, Component]:
    """The torch components of a saved pipeline, from its model_index.json and config files."""
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    out = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] not in ("diffusers", "transformers"):
            continue
        config_file = path / name / "config.json"
        if not config_file.is_file():  # tokenizers and schedulers have no config.json
            continue
        config = json.loads(config_file.read_text())
        out[name] = Component(entry[0], entry[1], config)
    return out


def full_components(model: str) -> dict[str, Component]:
    return {name: Component(*spec) for name, spec in model_spec(model).full.items()}


def tiny_components(model: str) -> dict[str, Component]:
    return {name: Component(*spec) for name, spec in model_spec(model).tiny.items()}


def instantiate(component: Component):
    """The module of a component, initialised by its class (under the caller's device context and seed).

    The class gets a deep copy of the numbers: a config class may write into the dicts it is given
    (transformers' Qwen2.5-VL config adds ``rope_theta`` to its ``rope_scaling``), and the model module's own
    numbers, which name the tiny pipeline (``pipelines.ensure_tiny``), must not change with use."""
    import copy

    import diffusers
    import transformers

    numbers = copy.deepcopy(component.config)
    if component.library == "diffusers":
        cls = getattr(diffusers, component.class_name)
        return cls.from_config({k: v for k, v in numbers.items() if not k.startswith("_")})
    cls = getattr(transformers, component.class_name)
    config = cls.config_class.from_dict({k: v for k, v in numbers.items() if k not in ("torch_dtype", "dtype")})
    return cls(config)


def _fp32_modules(module, dtype) -> set[str]:
    names = set(getattr(module, "_keep_in_fp32_modules_strict", None) or [])
    if dtype == torch.float16:
        names |= set(getattr(module, "_keep_in_fp32_modules", None) or [])
    return names


def build_on_meta(component: Component, dtype: str, buffers_on_meta: bool = True):
    """The module ``from_pretrained`` would give, with meta tensors of the right shapes and dtypes.

    ``buffers_on_meta=False`` (the random-full preset) computes the buffers for real,
    on the CPU, as the model's ``__init__`` does; only the parameters stay on meta.
    """
    from accelerate import init_empty_weights

    target = torch_dtype(dtype)
    with torch.device("meta") if buffers_on_meta else init_empty_weights(include_buffers=False):
        module = instantiate(component)
    if component.library == "transformers":
        # from_pretrained ties shared weights (T5's embed_tokens to shared). Under accelerate's
        # init_empty_weights each registration makes a new meta parameter, so tie again outside it.
        module.tie_weights()
    keep = _fp32_modules(module, target)
    for name, sub in module.named_modules():
        keep_this = any(part in keep for part in name.split("."))
        for pname, p in list(sub.named_parameters(recurse=False)):
            if p.is_floating_point():
                p.data = p.data.to(torch.float32 if keep_this else target)
        for bname, b in list(sub.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point() and bname not in sub._non_persistent_buffers_set:
                sub._buffers[bname] = b.to(torch.float32 if keep_this else target)
    module.eval()
    return module


INIT_STD = 0.02  # every float parameter ~ N(0, 0.02); integers would be zeros (none here)
# Drawing 5-12 billion normal numbers took most of a build on the CPU (52 s for T5-XXL alone on 2 cores).
# Instead each dtype gets one seeded block of N(0, INIT_STD) values, and every parameter is that block
# tiled, starting at its own seeded offset: memory-bound copies, the same bytes for the same seed.
BLOCK = 1 << 22


def _fill(flat: torch.Tensor, block: torch.Tensor, generator: torch.Generator) -> None:
    offset = int(torch.randint(0, BLOCK, (1,), generator=generator, device=block.device))
    source = torch.cat([block[offset:], block[:offset]])
    whole, rest = divmod(flat.numel(), BLOCK)
    if whole:
        flat[: whole * BLOCK].view(whole, BLOCK).copy_(source.expand(whole, BLOCK))
    if rest:
        flat[whole * BLOCK :].copy_(source[:rest])


def materialize(module: torch.nn.Module, device: str, generator: torch.Generator) -> None:
    """Give every meta parameter real, seeded storage on ``device``; a shared parameter stays shared."""
    blocks: dict[torch.dtype, torch.Tensor] = {}

    def seeded(p: torch.Tensor) -> torch.Tensor:
        data = torch.empty(p.shape, dtype=p.dtype, device=device)
        if data.is_floating_point():
            if p.dtype not in blocks:
                block = torch.empty(BLOCK, dtype=torch.float32, device=device)
                blocks[p.dtype] = block.normal_(0.0, INIT_STD, generator=generator).to(p.dtype)
            _fill(data.view(-1), blocks[p.dtype], generator)
        else:
            data.zero_()
        return data

    _replace_tensors(module, seeded, lambda b: b.to(device))


def _replace_tensors(module: torch.nn.Module, parameter, buffer) -> None:
    """Every parameter becomes ``parameter(p)`` (once per tensor: a shared parameter stays shared; not
    trainable) and every buffer ``buffer(b)``, or stays where that gives ``None``."""
    done: dict[int, torch.nn.Parameter] = {}
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is None:
                continue
            if id(p) not in done:
                done[id(p)] = torch.nn.Parameter(parameter(p), requires_grad=False)
            sub._parameters[name] = done[id(p)]
        for name, b in list(sub._buffers.items()):
            if b is not None:
                new = buffer(b)
                if new is not None:
                    sub._buffers[name] = new


def _fake(t: torch.Tensor, mode, device: torch.device) -> torch.Tensor:
    """A fake tensor on ``device`` with ``t``'s shape, dtype and strides (a meta tensor); a quantized
    subclass is rebuilt around fake inner tensors (``__tensor_flatten__`` / ``__tensor_unflatten__``)."""
    from torch._subclasses.fake_tensor import FakeTensorConverter

    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, context = t.__tensor_flatten__()
        inner = {name: _fake(getattr(t, name), mode, device) for name in names}
        return type(t).__tensor_unflatten__(inner, context, t.size(), t.stride())
    return FakeTensorConverter().from_meta_and_device(mode, t, device)


def to_fake(module: torch.nn.Module, mode, device: str = "cpu") -> torch.nn.Module:
    """Make a module built on the meta device (and quantized there) runnable: every meta parameter and buffer
    becomes a fake tensor (``torch._subclasses.FakeTensorMode``) on ``device``, which operations accept and
    give shapes, dtypes and storages for, with no memory behind them. A shared parameter stays shared."""
    target = torch.device(device)
    _replace_tensors(module, lambda p: _fake(p.data if type(p) is torch.nn.Parameter else p, mode, target),
                     lambda b: _fake(b, mode, target) if b.device.type == "meta" else None)  # fmt: skip
    # Tensors a module keeps as plain attributes, neither parameters nor buffers (a rotary table built in
    # __init__ that the call copies to its device): the module's __init__ made them on meta too, and they stay
    # where from_pretrained leaves them (the CPU), as a real load's do.
    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                setattr(sub, name, _fake(value, mode, torch.device("cpu")))
    return module


def stored_elements(module: torch.nn.Module) -> int:
    """What a checkpoint of ``module`` stores, in elements: parameters and persistent buffers, a shared tensor
    once (what publishers and safetensors indexes count)."""
    tensors = {id(p): p for p in module.parameters()}
    for sub in module.modules():
        for name, b in sub._buffers.items():
            if b is not None and name not in sub._non_persistent_buffers_set:
                tensors[id(b)] = b
    return sum(t.numel() for t in tensors.values())


def sizes_markdown() -> str:
    """The README's model table: each model's full-size components, their sizes as built here
    (``stored_elements`` on the meta device) and, in brackets, as their publishers state them (each model
    module's ``published_sizes``, which also says where)."""
    from .registry import MODELS

    def size(n: int) -> str:
        return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"

    lines = ["| model | transformer | text encoders | VAE |", "|---|---|---|---|"]
    for key, spec in MODELS.items():
        cells: dict[str, str] = {}
        modules = {name: build_on_meta(c, "bf16") for name, c in full_components(key).items()}
        for name, module in modules.items():
            text = size(stored_elements(module))
            for component, submodule, billions, _, _ in spec.published_sizes:
                if component == name and submodule:
                    part = submodule.rsplit(".", 1)[-1].replace("_", " ")
                    text += f"; {part} {size(stored_elements(module.get_submodule(submodule)))} [{billions:g} B]"
                elif component == name and f"[{billions:g} B]" not in text:
                    text += f" [{billions:g} B]"
            cells[name] = text
        encoders = ", ".join(f"{n}: {cells[n]}" if len(spec.text_encoders) > 1 else cells[n] for n in spec.text_encoders)
        lines.append(f"| `{key}` | {cells['transformer']} | {encoders} | {cells['vae']} |")
    return "\n".join(lines)
