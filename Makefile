# pve-hooks: build, test, demo. Everything a fresh Debian 13 or 12 machine
# (Proxmox VE 9 or 8) needs is installed by these targets (apt packages
# included; run as root).

PYTHON ?= python3
DEBIAN_PYTHON ?= /usr/bin/python3
VENV ?= .venv
DEBIAN_VENV ?= .venv-debian
PYTEST_ARGS ?=
# Debian packages the test environments need (Debian's own Python libraries
# for the Debian-versions run; headers for systemd-python from PyPI;
# prometheus for promtool, which lints the metrics output; on a machine
# running systemd it also enables a Prometheus server on :9090).
APT_TEST_PACKAGES = python3-venv python3-click python3-yaml python3-requests python3-urllib3 \
	python3-prometheus-client python3-systemd libsystemd-dev pkg-config gcc python3-dev systemd \
	util-linux logrotate prometheus python3-hypothesis

.PHONY: help apt-deps venv venv-debian test test-current test-debian demo docs check-docs soak bench clean deb deb-check \
	deb-check-chroot deb-upgrade-check

help:
	@echo "make demo   - scripted scenario on a simulated node (see README)"
	@echo "make test   - the whole test suite, on current PyPI libraries and on this Debian release's"
	@echo "make docs   - regenerate docs/configuration.md from the schema"
	@echo "make soak   - full-size fault-injection suite"
	@echo "make bench  - benchmarks (figures go in docs/performance.md)"
	@echo "make deb    - build the Debian packages into dist/ (docs/packaging.md)"
	@echo "make deb-check - build, lintian, install, test the installed package, purge (CI)"
	@echo "make deb-check-chroot - the same .debs checked in a chroot of the other release (Debian 12 <-> 13) (CI)"
	@echo "make deb-upgrade-check - a Debian 12 chroot with the .deb and a full outbox, dist-upgraded to 13 (CI)"

apt-deps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.done: setup.cfg pyproject.toml requirements-test.txt | apt-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[journal]' -r requirements-test.txt
	touch $@

venv: apt-deps $(VENV)/.done

# This machine's Debian interpreter (Python 3.11 on Debian 12, 3.13 on 13) and
# Debian's own click/yaml/requests/urllib3/systemd; only the test tools come
# from PyPI. The other release's are tested by deb-check-chroot.
$(DEBIAN_VENV)/.done: setup.cfg pyproject.toml requirements-test.txt | apt-deps
	$(DEBIAN_PYTHON) -m venv --system-site-packages $(DEBIAN_VENV)
	$(DEBIAN_VENV)/bin/pip install -q --no-deps -e .
	$(DEBIAN_VENV)/bin/pip install -q -r requirements-test.txt
	# Debian's own prometheus_client (python3-prometheus-client), never PyPI's: a test tool that pulled it in is undone.
	$(DEBIAN_VENV)/bin/pip uninstall -q -y prometheus_client 2>/dev/null || true
	$(DEBIAN_VENV)/bin/python -c "import click, requests, urllib3, yaml; print('debian env: click', click.__version__, 'requests', requests.__version__, 'urllib3', urllib3.__version__, 'PyYAML', yaml.__version__); import prometheus_client, importlib.metadata; print('prometheus_client', importlib.metadata.version('prometheus_client'), prometheus_client.__file__)"
	touch $@

venv-debian: apt-deps $(DEBIAN_VENV)/.done

test: test-current test-debian

test-current: venv
	$(VENV)/bin/python -m pytest -q -m "not soak" $(PYTEST_ARGS)

test-debian: venv-debian
	$(DEBIAN_VENV)/bin/python -m pytest -q -m "not soak" $(PYTEST_ARGS) tests/unit tests/integration

docs: venv
	$(VENV)/bin/python -m pve_hooks.config.sample markdown > docs/configuration.md

check-docs: venv
	$(VENV)/bin/python -m pve_hooks.config.sample markdown | diff -u docs/configuration.md - \
	  || (echo "docs/configuration.md is out of date: run make docs" >&2; exit 1)

# Everything it writes goes to .scratch/demo/; it stops every process it started.
demo: venv
	$(VENV)/bin/python demo/run.py

soak: venv
	PVE_HOOKS_SOAK=1 $(VENV)/bin/python -m pytest -q -m soak tests/end_to_end

bench: venv
	@for b in benchmarks/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

# The Debian packages (pve-hooks, pve-hooks-dev-accountdb), built from a copy
# of the tree with Debian's python3 (packaging/build-deb.sh); deb-check is the
# packaging check CI runs on this machine, deb-check-chroot the same check of
# the same .debs in a chroot of the other release (trixie on Debian 12,
# bookworm on Debian 13): one _all.deb for Proxmox VE 8 and 9; deb-upgrade-check
# the PVE 8 -> 9 upgrade of a node with it installed (a Debian 12 chroot
# dist-upgraded to 13).
deb:
	packaging/build-deb.sh

deb-check:
	packaging/deb-check.sh

deb-check-chroot:
	packaging/deb-check-chroot.sh

deb-upgrade-check:
	packaging/deb-upgrade-check.sh

clean:
	rm -rf $(VENV) $(DEBIAN_VENV) .scratch build *.egg-info dist
