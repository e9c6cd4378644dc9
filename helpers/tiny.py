"""Tiny random-weight pipelines of the real architectures, built from each model module's ``tiny``.

``build_tiny(model, path)`` instantiates every component of
``helpers/models/<model>.py``'s tiny architecture (the same classes, so the same
code paths, as the hub checkpoints, at tiny widths) with seeded random weights,
builds the tokenizers here from a small built-in word list, and writes the
pipeline with ``save_pretrained`` in safetensors. It loads like a hub checkpoint::

    pipe = DiffusionPipeline.from_pretrained(path, dtype=torch.bfloat16)

Nothing here is per model: tokenizers follow the text encoders' classes (T5 and
UMT5 get the T5 tokenizer, CLIP the CLIP one, Qwen2.5-VL and Qwen3 Qwen2's
byte-level BPE, Mistral 3 Mistral's, each at its encoder's vocabulary size), the
scheduler and the pipeline class come from the model's spec.

Width rule (``check_width``): every ``in_features`` of every ``nn.Linear`` is a
multiple of 16. optimum-quanto runs int8 weights with bf16 activations on the CPU
through ``torch._weight_int8pack_mm``, which crashes the process (a segfault, not
an exception) for other widths (on an AVX-512 CPU with torch 2.13: 8, 24, 40, 56,
72, 100, 136 crash; 16, 48, 80 work). The models use 32 and up wherever the
architecture lets them; AuraFlow's patch projection is 2 x 2 x 4 = 16 at any size.
Every built Linear is checked. quanto's int4 picks its group size from
``in_features``: up to 128 it does not group, above it uses group size 128 and, in
bf16 on the CPU, the packed TinyGemm kernel the real models get, so the 128-wide
attention and the 256-512-wide FFNs exercise both paths.

Call sizes: every VAE has 4 blocks (``vae_scale_factor`` 8), so height and width
are multiples of 16; the calls use 32x32 px and 64 text tokens. A transformer
with a position table limits the side (SD3 tiny: 256 px; AuraFlow tiny: 128 px).
"""

from __future__ import annotations

import os
import pathlib

from .components import Component, instantiate, tiny_components
from .models.spec import CLIP_MAX_LENGTH
from .registry import MODELS, model_spec, pipeline_class

WIDTH_MULTIPLE = 16
T5_MAX_LENGTH = 512  # T5 tokenizer model_max_length (relative positions: any length works)
QWEN_MAX_LENGTH = 131072  # Qwen2 tokenizer model_max_length (Qwen2.5-VL's and Qwen3's tokenizer_config.json)
MISTRAL_MAX_LENGTH = 131072  # Mistral Small 3.x: 128 k tokens of context

# Words the tokenizers know as whole tokens (everything else falls back to
# characters / bytes).  Fixed and ordered so the tokenizers are reproducible.
WORDS = (
    "a an the of and in on with at by for to from is are this that it its "
    "photo picture painting drawing sketch render portrait landscape image art style "
    "cat dog bird horse fish lion tiger bear fox wolf rabbit owl cow sheep duck "
    "man woman person child girl boy people face eyes hair hand hands "
    "red green blue yellow orange purple pink black white gray brown gold silver "
    "big small tall tiny huge little old young new beautiful cute happy sad dark bright "
    "sky sun moon star stars cloud clouds rain snow sea ocean river lake beach mountain "
    "mountains forest tree trees flower flowers garden field grass city street house "
    "castle room window door table chair car train boat ship road bridge night day "
    "morning sunset sunrise light shadow water fire ice stone wood glass metal "
    "detailed realistic cinematic lighting high quality resolution sharp focus digital "
    "oil watercolor anime cartoon 3d 4k 8k hdr studio background foreground close up "
    "wearing holding sitting standing running flying walking looking playing eating "
    "astronaut riding robot dragon space planet food coffee cup book"
).split()



# --------------------------------------------------------------------------- widths
def check_width(name: str, value: int) -> None:
    """Raise ValueError if ``value`` (a Linear ``in_features`` width) is not a multiple of 16."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: width must be an int, got {value!r}")
    if value <= 0 or value % WIDTH_MULTIPLE != 0:
        raise ValueError(f"{name}={value} is not a positive multiple of {WIDTH_MULTIPLE}")


def _check_modules(model: str, component: str, module) -> None:
    import torch

    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            check_width(f"{model}.{component}.{name}.in_features", m.in_features)


# ----------------------------------------------------------------------- tokenizers
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _learn_bpe_merges(words, max_merges: int, byte_level: bool = False) -> list[tuple[str, str]]:
    """Deterministic tiny BPE learner. CLIP style (the last symbol carries '</w>'), or GPT-2's byte-level
    style (``byte_level``: the space before a word is a symbol of its own, 'Ġ')."""
    if byte_level:
        seqs = [["\u0120"] + list(w) for w in words]
    else:
        seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        a, b = best
        new_seqs = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new_seqs.append(out)
        seqs = new_seqs
    return merges


def _clip_tokenizer(vocab_size: int | None = None):
    """Byte-level BPE CLIP tokenizer: 256 bytes, 256 bytes+'</w>', merges, then the two specials.

    ``vocab_size`` (the random-full preset: CLIP's real 49408) pads the vocabulary
    with filler tokens before the specials, so ids span the real embedding table.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = _learn_bpe_merges([w for w in WORDS if w.isascii()], max_merges=400)
    for a, b in merges:
        vocab_list.append(a + b)
    vocab_list = list(dict.fromkeys(vocab_list))
    if vocab_size is not None:
        vocab_list += [f"<|filler{i}|>" for i in range(vocab_size - 2 - len(vocab_list))]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        model_max_length=CLIP_MAX_LENGTH,
    )
    return tok


def _t5_tokenizer(vocab_size: int | None = None):
    """Unigram T5 tokenizer: <pad>=0, </s>=1, <unk>=2, then pieces (no sentinel extra ids).

    ``vocab_size`` (the random-full preset: T5's real 32128) pads with filler pieces.
    """
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for i, w in enumerate(WORDS):
        pieces.append(("▁" + w, -3.0 - 0.001 * i))
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()[]/&+*#%@_=<>"
    for c in alphabet:
        pieces.append(("▁" + c, -9.0))
    for c in alphabet:
        pieces.append((c, -10.0))
    seen: set[str] = set()
    uniq = []
    for p, s in pieces:
        if p not in seen:
            seen.add(p)
            uniq.append((p, s))
    if vocab_size is not None:
        uniq += [(f"<filler{i}>", -20.0) for i in range(vocab_size - len(uniq))]
    return T5Tokenizer(vocab=uniq, extra_ids=0, model_max_length=T5_MAX_LENGTH)


# Chat templates: what the pipelines' ``apply_chat_template`` calls need of the real ones (roles and turns; the
# pipelines pass a plain string as content, or a list of {"type": "text", "text": ...} parts).
_QWEN_CHAT = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # fmt: skip
_MISTRAL_CHAT = ("{{ bos_token }}{% for m in messages %}"
                 "{% set text = m.content if m.content is string else m.content | map(attribute='text') | join('') %}"
                 "{% if m.role == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
                 "{% elif m.role == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}"
                 "{% endfor %}")  # fmt: skip


def _byte_bpe_vocab(vocab_size: int | None, specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2-style byte-level BPE: the 256 byte symbols, merges learned from WORDS, fillers up to
    ``vocab_size`` (the real one, for random-full), then the special tokens (last, as in Qwen's and Mistral's)."""
    merges = _learn_bpe_merges([w for w in WORDS if w.isascii()], max_merges=400, byte_level=True)
    vocab_list = list(_bytes_to_unicode().values()) + [a + b for a, b in merges]
    vocab_list = list(dict.fromkeys(vocab_list))
    if vocab_size is not None:
        vocab_list += [f"<|filler{i}|>" for i in range(vocab_size - len(specials) - len(vocab_list))]
    vocab_list += specials
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def _qwen_tokenizer(vocab_size: int | None = None):
    """Qwen2's tokenizer class (Qwen2.5-VL and Qwen3 use it), byte-level BPE, with its chat markers."""
    from transformers import Qwen2Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab, merges = _byte_bpe_vocab(vocab_size, specials)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace",
                         unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         model_max_length=QWEN_MAX_LENGTH, chat_template=_QWEN_CHAT)  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    return tok


def _mistral_tokenizer(vocab_size: int | None = None):
    """Mistral's byte-level BPE tokenizer (Tekken) with its instruction markers, as a fast tokenizer.

    A hub checkpoint with a Mistral 3 text encoder saves a ``PixtralProcessor``: this tokenizer, plus an image processor that
    needs torchvision (not installed; it would have to match the project's CPU build of torch). For text
    alone the processor hands its text to this tokenizer, so the tiny pipeline saves the tokenizer alone.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    vocab, merges = _byte_bpe_vocab(vocab_size, specials)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", model_max_length=MISTRAL_MAX_LENGTH,
                                  chat_template=_MISTRAL_CHAT)  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": specials[4:]})
    return tok


# --------------------------------------------------------------------------- pipelines
_TOKENIZER_OF = {"T5EncoderModel": _t5_tokenizer, "UMT5EncoderModel": _t5_tokenizer,
                 "CLIPTextModel": _clip_tokenizer, "CLIPTextModelWithProjection": _clip_tokenizer,
                 "Qwen2_5_VLForConditionalGeneration": _qwen_tokenizer, "Qwen3Model": _qwen_tokenizer,
                 "Mistral3ForConditionalGeneration": _mistral_tokenizer}  # fmt: skip


def _vocab_size(config: dict) -> int:
    """A text encoder's vocabulary: its own, or its language model's (a vision-language model's text_config)."""
    return config["vocab_size"] if "vocab_size" in config else config["text_config"]["vocab_size"]


def tokenizers(components: dict[str, Component]) -> dict:
    """``tokenizer``, ``tokenizer_2``, ... for ``text_encoder``, ``text_encoder_2``, ...: each encoder's kind,
    at its vocabulary size (the tiny one, or the real one for random-full)."""
    out = {}
    for name, c in components.items():
        if name.startswith("text_encoder"):
            if c.class_name not in _TOKENIZER_OF:
                raise ValueError(f"no local tokenizer for {c.class_name}; valid choices: {', '.join(_TOKENIZER_OF)}")
            out[name.replace("text_encoder", "tokenizer")] = _TOKENIZER_OF[c.class_name](_vocab_size(c.config))
    return out


def scheduler(model: str):
    """The checkpoint's own scheduler (its scheduler_config.json values, from the model's spec)."""
    import diffusers

    name, kwargs = model_spec(model).scheduler
    return getattr(diffusers, name)(**kwargs)


def _build_pipeline(model: str, seed: int):
    import torch

    components = tiny_components(model)
    modules = {}
    with torch.random.fork_rng(devices=[]):
        for name, component in components.items():
            torch.manual_seed(seed)  # each component from the same seed, whatever was built before it
            modules[name] = instantiate(component).eval()
            _check_modules(model, name, modules[name])
    return pipeline_class(model)(**modules, **tokenizers(components), scheduler=scheduler(model))


def build_tiny(model: str, path: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build the tiny random-weight pipeline of ``model``, ``save_pretrained`` it to ``path``, return ``path``.

    The weights are float32 safetensors; every component is built right after
    ``torch.manual_seed(seed)`` (the global RNG state is restored afterwards), so
    two builds with the same seed write identical files.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid choices: {', '.join(MODELS)}")
    pipe = _build_pipeline(model, seed)
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out
