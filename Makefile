# flowlens: the two set-up commands are `make run` and `make test`.
# Both install what they need (Debian packages, a .venv with the agent).
VENV := .venv
PY := $(VENV)/bin/python
# prometheus: promtool and the server the e2e tier scrapes with; debootstrap: the image test's roots
APT_PKGS := clang llvm libbpf-dev libbpf1 bpftool iproute2 nftables prometheus debootstrap
LISTEN ?= 127.0.0.1:9464

# $(call apt_install,PACKAGES): install the missing ones when root with apt-get, else assume them
define apt_install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(1); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	  done; \
	  if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root or no apt-get: assuming $(1) are installed"; fi
endef

.PHONY: all deps build venv run doctor test lint unit bpf-test e2e clean chart-schema dashboards bench

all: build venv

deps: .deps.stamp
.deps.stamp:
	$(call apt_install,$(APT_PKGS))
	@touch $@

build: deps
	$(MAKE) -C bpf OUT=$(CURDIR)/build

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

run: build venv
	$(VENV)/bin/flowlens run --listen $(LISTEN) $(ARGS)

doctor: build venv
	$(VENV)/bin/flowlens doctor

lint: venv
	$(VENV)/bin/ruff check agent tests bench deploy
	$(VENV)/bin/mypy agent tests bench deploy/helm/schema.py
	$(VENV)/bin/mypy deploy/grafana

unit: venv build
	$(PY) -m pytest -q tests/unit

# BPF and e2e tiers need root; with CI=true a skipped test fails the run.
bpf-test: venv build
	$(PY) -m pytest -q tests/bpf tests/e2e

test: build venv lint
	$(PY) -m pytest -q -rs tests

# Cost benchmarks (root; not part of `make test`: tests do not time things, the bench does).
# Writes bench/results/README.md (every budget with PASS/FAIL) and bench/results/raw.json; ~10 min.
BENCH_PKGS := nginx-light wrk tcpdump curl
bench: build venv
	$(call apt_install,$(BENCH_PKGS))
	$(PY) -m bench $(ARGS)

# values.schema.json's `config` comes from the agent's Settings model (tests check it is current)
chart-schema: venv
	$(PY) deploy/helm/schema.py > deploy/helm/flowlens/values.schema.json

# deploy/grafana/*.json come from deploy/grafana/make.py (tests check they are current)
dashboards: venv
	$(PY) deploy/grafana/make.py

clean:
	rm -rf build $(VENV) .deps.stamp
