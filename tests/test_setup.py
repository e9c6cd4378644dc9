"""The pins live in requirements.txt; environment.yml must mirror them exactly."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_requirement_is_pinned_exactly():
    reqs = _requirements()
    assert reqs, "requirements.txt is empty"
    for req in reqs:
        assert "==" in req, f"{req!r} is not pinned to an exact version"


def test_environment_yml_mirrors_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = [p for p in pip_section if not p.startswith("-e")]
    assert pins == _requirements()


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
