# Two commands a newcomer needs: `make report` and `make test`.
# Both create .venv if needed and install what is missing; a stamp file keeps a second run fast.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PREPARED := $(VENV)/.prepared
# The sections make report runs: quanto (the published grid) in every dtype, torchao in bf16.
REPORT_BACKENDS := quanto torchao:bf16

.PHONY: setup test test-fast report clean chromium ccache gpu-check

setup: $(STAMP)

# tests/test_report_browser.py opens outputs/report.html in Debian's Chromium (CI: a fresh machine, as root).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Packages go in with uv, not pip: 33 s instead of 164 s here, the same versions (pip resolves the same
# requirements.txt to the same set). --compile-bytecode as pip does: every import would compile otherwise.
# uv reads no pip configuration, so it is handed pip's find-links: where a machine keeps a local build of
# torch (the CPU build here), which pip would take over PyPI's.
UV_VERSION := 0.13.9
FIND_LINKS = $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV := $(VENV)/bin/uv pip install --quiet --python $(PY)

# quanto's C++ extension compiles through ccache (Debian's package, installed here if missing): a fresh clone
# on a machine that compiled it before takes a second or two instead of ~45 s. torch's cpp_extension puts
# ccache in front of the compiler by itself when it is on PATH (_wrap_compiler), at set-up and at run time
# alike, so the build a test finds is the one it would make (a compiler given here instead made every
# clone's first int4 configuration rebuild it: the command differed). CCACHE_BASEDIR turns this clone's
# absolute paths (its .venv) into relative ones, so another clone's compile is the same compile.
ccache:
	command -v ccache >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ccache) || true

$(STAMP): requirements.txt pyproject.toml | ccache
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) --compile-bytecode $(foreach d,$(FIND_LINKS),--find-links $(d)) -r requirements.txt
	$(UV) --no-deps -e .
	# quanto compiles its C++ extension (int4 unpacking) on first use, ~50 s: do it here, not mid-benchmark.
	CCACHE_BASEDIR=$(CURDIR) $(PY) -c "from optimum.quanto.library.extensions import get_extension; get_extension('quanto_cpp').lib"
	touch $(STAMP)

# What make report reads and computes once per machine (cached under ~/.cache/diffusion-quant-bench; a
# code change that touches a backend recomputes what it affects): the tiny pipelines, the full-size memory
# predictions of every section and the tiny transformers' module names, which an exclude pattern is
# checked against (62 s here). The tests keep a cache of their own, so make test does not wait for this.
$(PREPARED): $(STAMP)
	$(PY) -m helpers prepare --backend $(REPORT_BACKENDS)
	touch $(PREPARED)

# Every Ray cluster the tests start talks over 127.0.0.1 only and reports nothing (tests/conftest.py sets the same).
test: export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER = 0
test: export RAY_USAGE_STATS_ENABLED = 0
test: setup chromium
	$(PY) -m pytest -q --durations=15

# The inner loop, under 90 s here: every test not marked slow (pyproject.toml); make test, CI's, runs them all.
test-fast: export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER = 0
test-fast: export RAY_USAGE_STATS_ENABLED = 0
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The main job on the tiny default: every model's notebook for fp16 and bf16 (quanto, the published grid),
# and torchao in bf16 beside it, in one batch (12 notebooks); outputs/RESULTS.md and outputs/report.html cover both.
report: $(PREPARED)
	$(PY) -m helpers batch --backend $(REPORT_BACKENDS)

# On a GPU machine: PixArt-Sigma bf16 at full size with random weights (none, int8 and int4 with the text
# encoder), each in a fresh Ray worker, against the estimate and the published H100 figures; about three
# minutes on an H100 (docs/gpu-check.md). Exits 2 at once where there is no CUDA device.
gpu-check: setup
	$(PY) -m helpers.gpu_check

clean:
	rm -rf outputs/results outputs/images
