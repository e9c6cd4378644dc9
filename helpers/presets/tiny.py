"""``tiny``, the default: each architecture's random-weight twin, a few layers a few channels wide (the model
modules' ``tiny``), built on this machine once (helpers/tiny.py) and loaded through the same
``from_pretrained`` call a hub checkpoint takes. Offline; every test runs on it."""

NAME = "tiny"
WEIGHTS = "built"
SIZE = "tiny"
EXECUTOR = "inline"  # a configuration takes seconds, most of them what a fresh Ray worker would spend importing
TIMEOUT_S = None
NOTE = None


def call_defaults(spec) -> dict:
    return dict(spec.tiny_call)
