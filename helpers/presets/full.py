"""``full``: the model's checkpoint (the ``checkpoint`` parameter, else its hub id), at full size, each
configuration in a fresh Ray worker."""

NAME = "full"
WEIGHTS = "hub"
SIZE = "full"
EXECUTOR = "ray"
# Counted from when a configuration's task starts in its worker. An hour, several times what one configuration
# needs, so only a hung one is cut: a FLUX.1-dev configuration loads 24-31 GB and makes about six calls of the
# 28-step pipeline (warm-up, three timed repeats, the other prompts), about 60 s each for int4 on an H100 in the
# published table, some ten minutes in all with the load; a first compiled call or a slower GPU can take
# several times that.
TIMEOUT_S = 3600
NOTE = None


def call_defaults(spec) -> dict:
    """The published call: the model's own steps, size and guidance."""
    return dict(height=spec.height, width=spec.width, num_inference_steps=spec.steps,
                guidance_scale=spec.guidance_scale, extra_call_kwargs={})  # fmt: skip
