# Two commands do everything on a fresh Debian/Ubuntu machine:
#   make run    the lab (a window where there is a display; headless flows where there is none)
#   make test   the test suite, headless
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test serve bench fuzz setup clean

run: $(STAMP)
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then scripts/system-libs.sh window; fi
	$(VENV)/bin/iwlab $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check --select F --quiet app backends widgets tests bench
	scripts/typecheck.sh
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest $(ARGS)

serve: $(STAMP)
	$(VENV)/bin/iwlab serve $(ARGS)

bench: $(STAMP)
	@scripts/system-libs.sh bench || echo "bench: Kannel could not be installed; its rows will be skipped" >&2
	$(VENV)/bin/python bench/end_to_end.py $(ARGS)

fuzz: $(STAMP)     # the socket mutation run, 5,000 inputs per protocol (make test runs 150)
	QT_QPA_PLATFORM=offscreen IWLAB_FUZZ_INPUTS=$${IWLAB_FUZZ_INPUTS:-5000} $(VENV)/bin/python -m pytest -q -s \
		-p no:cacheprovider -o timeout=1800 tests/flows/test_mutation_fuzz.py

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/system-libs.sh
	scripts/system-libs.sh offscreen
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
