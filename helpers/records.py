"""One record per measured configuration, one JSON line per record.

A record carries its full configuration, the environment it was measured in
and its metrics (units in the field names). Strings and numbers only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("ok", "error", "skipped")

# Fields that say which configuration a record measured; two records with the
# same values measured the same thing.
CONFIG_FIELDS = (
    "model", "checkpoint", "preset", "device", "dtype", "qtype", "quantize_te", "fuse_qkv",
    "exclude", "batch_size", "steps", "height", "width", "guidance_scale", "prompt", "seed",
    "warmup", "repeats",
)  # fmt: skip


@dataclass
class Record:
    # configuration
    model: str
    checkpoint: str
    preset: str
    device: str
    dtype: str
    qtype: str
    quantize_te: bool
    fuse_qkv: bool
    exclude: list[str]
    batch_size: int
    steps: int
    height: int
    width: int
    guidance_scale: float
    prompt: str
    seed: int
    warmup: int
    repeats: int
    # outcome
    status: str = "ok"
    error: str | None = None
    # metrics
    memory_bytes: int | None = None
    memory_gb: float | None = None
    peak_memory_gb: float | None = None
    latency_s: float | None = None
    latency_min_s: float | None = None
    latency_max_s: float | None = None
    image_path: str | None = None  # relative to the results' out_dir
    # environment
    device_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    timestamp: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; valid choices: {', '.join(STATUSES)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Record":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown record field {unknown[0]!r}")
        return cls(**data)

    def config_key(self) -> str:
        return config_key({name: getattr(self, name) for name in CONFIG_FIELDS})


def config_key(config: dict) -> str:
    return json.dumps({name: config[name] for name in CONFIG_FIELDS}, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _versions() -> tuple:
    from importlib.metadata import version

    return tuple((name, version(name)) for name in ("torch", "diffusers", "transformers", "optimum-quanto"))


def library_versions() -> dict[str, str]:
    return dict(_versions())


def append(path: str | os.PathLike, record: Record) -> None:
    """Append one line and flush it to disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path: str | os.PathLike) -> list[Record]:
    """Every record in a results file, in the order written (missing file: none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [Record.from_dict(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def latest(records: list[Record]) -> list[Record]:
    """The last record of each configuration, in the order those were written."""
    by_key: dict[str, Record] = {}
    for r in records:
        by_key.pop(r.config_key(), None)
        by_key[r.config_key()] = r
    return list(by_key.values())
