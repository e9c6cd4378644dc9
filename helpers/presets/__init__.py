"""One module per preset, as for models and backends: where the weights come from, the call's defaults, the
executor, and what the estimate predicts. A new preset is its module and one line here.

Every preset module has the same small interface, data the rest of the package reads (no ``preset ==``
outside this package):

- ``NAME``;
- ``WEIGHTS``: where they come from: ``built`` (built on this machine once, saved, and loaded through
  ``from_pretrained`` like a checkpoint: helpers/pipelines.py), ``hub`` (the ``checkpoint`` parameter, else
  the model's hub id) or ``memory`` (built in memory with random weights: helpers/random_full.py; no
  checkpoint allowed);
- ``SIZE``: the architectures it has, ``tiny`` or ``full`` (the model modules' ``tiny`` / ``full``), which is
  also the size the estimate predicts for it;
- ``EXECUTOR``: the executor when ``executor`` is unset; ``TIMEOUT_S``: ``timeout_s`` when unset (under Ray);
- ``NOTE``: a sentence every table of its records carries, or ``None``;
- ``call_defaults(spec)``: steps, size and guidance of a call where the parameters leave them unset.

These modules import nothing from the package (helpers/registry.py imports them).
"""

from . import full, random_full, tiny

PRESETS = {p.NAME: p for p in (tiny, full, random_full)}


def architecture(preset, spec) -> dict:
    """The components ``spec`` (a model module's spec) has at this preset's size."""
    return spec.tiny if preset.SIZE == "tiny" else spec.full
