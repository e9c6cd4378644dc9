# Two commands a newcomer needs: `make report` and `make test`.
# Both create .venv if needed and install what is missing; a stamp file keeps a second run fast.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test report clean chromium

setup: $(STAMP)

# tests/test_report_browser.py opens outputs/report.html in Debian's Chromium (CI: a fresh machine, as root).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# quanto compiles its C++ extension (int4 unpacking) on first use, ~40 s: do it here, not mid-benchmark.
	$(PY) -c "from optimum.quanto.library.extensions import get_extension; get_extension('quanto_cpp').lib"
	# The full-size memory predictions the report shows depend only on the architectures and the library
	# versions: compute them once here (about 40 s; cached on disk under ~/.cache/diffusion-quant-bench).
	$(PY) -m helpers estimate --dtype fp16 bf16 --format json > /dev/null
	$(PY) -m helpers estimate --params params/pixart.torchao.yaml --dtype bf16 --format json > /dev/null
	# The tiny transformers' module names, which an exclude pattern is checked against in well under a second.
	$(PY) -c "from helpers import params as P; [P.transformer_module_names(P.validate({'model': m})) for m in P.MODELS]"
	touch $(STAMP)

# Every Ray cluster the tests start talks over 127.0.0.1 only and reports nothing (tests/conftest.py sets the same).
test: export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER = 0
test: export RAY_USAGE_STATS_ENABLED = 0
test: setup chromium
	$(PY) -m pytest -q --durations=15

# The main job on the tiny default: every model's notebook for fp16 and bf16 (quanto, the published grid),
# then torchao in bf16 beside it; outputs/RESULTS.md and outputs/report.html cover both.
report: setup
	$(PY) -m helpers batch
	$(PY) -m helpers batch --backend torchao --dtypes bf16

clean:
	rm -rf outputs/results outputs/images
