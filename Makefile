# SolarSeg: `make run` starts QGIS with the plugin, `make test` runs the whole suite.
# Both install what is missing first (scripts/setup.sh: Debian packages + .venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PLUGIN := solar_seg_plugin
PROFILE_DIR := .qgis-profile
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup test run demo lint format package install clean screenshots

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

# Real QGIS desktop, plugin linked into a project-local profile; under Xvfb when
# there is no display (then it runs until stopped, as a headless QGIS would).
run: setup
	@env -u QT_QPA_PLATFORM bash scripts/run_qgis.sh

# The engine alone on the real data: dataset statistics, then a short training.
demo: setup
	$(PY) -m core stats ../shared/data/solafune-s2-pv --bands 4,3,2,8

lint: setup
	$(VENV)/bin/ruff check core solar_seg_plugin tests bench scripts
	$(VENV)/bin/ruff format --check core solar_seg_plugin tests bench scripts

format: setup
	$(VENV)/bin/ruff format core solar_seg_plugin tests bench scripts
	$(VENV)/bin/ruff check --fix core solar_seg_plugin tests bench scripts

# A zip with one top folder (engine and resources inside) for "Install from ZIP".
package:
	@bash scripts/package.sh

# Link the plugin into a QGIS profile (default: the user's default profile).
install:
	@bash scripts/install_plugin.sh "$${QGIS_PROFILE_DIR:-$$HOME/.local/share/QGIS/QGIS3/profiles/default}"

screenshots: setup
	@env -u QT_QPA_PLATFORM bash scripts/screenshots.sh

clean:
	rm -rf build dist $(PROFILE_DIR)
