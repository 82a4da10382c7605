# tvision: two commands on a fresh machine, `make demo` then `make test`.
# torch is pinned through constraints.txt: any other spec pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPOSITORY ?= model_repository
MODEL ?= efficientnet_lite0
TARGET ?= cpu
# The serving image's pins (k8s/image/requirements.txt) constrain the local install too, so
# the embedded server runs the models with the same packages as the cluster.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt \
	-c k8s/image/requirements.txt
INSTALLED := $(VENV)/.installed
# checkov has its own environment: its pinned dependencies (boto3 among them) would fight
# the project's. Only the Kubernetes tests run it.
CHECKOV := $(VENV)/tools/checkov/bin/checkov
CHECKOV_VERSION := 3.3.30
# The AWS CLI runs the model-from-pvc init container's copy script in the tests.
AWSCLI := $(VENV)/tools/awscli/bin/aws
AWSCLI_VERSION := 1.46.3
# NVIDIA's perf_analyzer is the binary inside this tritonclient wheel (PyPI's perf-analyzer
# package is a placeholder); it loads libcudart.so.12 even without a GPU, and libb64.
PERF_ANALYZER := $(VENV)/tools/perf-analyzer/bin/perf_analyzer
PERF_ANALYZER_SPECS := tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79
# DALI, the gpu target's --preprocess dali, is the optional extra tvision[dali] (a 424 MB
# wheel): installed into the project's environment for its CPU twin by `make test` and
# `make fidelity`, never by `make demo`. It works with the project's numpy<2.
DALI := $(VENV)/.dali-installed
DALI_SPEC := nvidia-dali-cuda120==2.4.0

.PHONY: help install export demo serve test lint typecheck bench fidelity loadtest k8s clean \
	system-packages serve-packages perf-analyzer

help:
	@echo "make demo     set up, export, serve, classify the sample photos, stop"
	@echo "make test     run the whole test suite (real Triton server, real model)"
	@echo "make serve    run the server in the foreground until Ctrl-C"
	@echo "make export   export a new version (TARGET=cpu|gpu, REPOSITORY=...)"
	@echo "make bench    benchmark: served ensemble vs limit, client-side, naive; SDK vs tritonclient"
	@echo "make perf-analyzer NVIDIA's perf_analyzer beside tvision bench and the in-process limit"
	@echo "make fidelity each JPEG decode strategy vs the reference preprocessing on ~330 real photos"
	@echo "make loadtest 60 s Locust run with SLO gate against a fresh embedded server"
	@echo "make lint typecheck k8s clean"

INSTALL_LOG := $(VENV)/install.log

# Reinstalls only when the dependency files change; a second `make demo` skips it.
# pip's output goes to a log file, named (with its last lines) only if the install fails.
$(INSTALLED): pyproject.toml client/pyproject.toml loadtest/pyproject.toml constraints.txt \
		k8s/image/requirements.txt
	@echo "==> installing tvision and its dependencies into $(VENV) (2-6 minutes the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@( $(PIP_INSTALL) --upgrade pip && $(PIP_INSTALL) -e ./client -e ./loadtest -e ".[dev]" ) \
		> $(INSTALL_LOG) 2>&1 \
		|| { tail -n 30 $(INSTALL_LOG); echo "install failed; full log: $(INSTALL_LOG)"; exit 1; }
	@touch $@
	@echo "==> installed (log: $(INSTALL_LOG))"

install: $(INSTALLED)

# Exported once; `make export` writes a new version on demand.
$(REPOSITORY)/$(MODEL)/config.pbtxt: | $(INSTALLED)
	@echo "==> exporting $(MODEL) to ONNX and writing the $(TARGET) repository $(REPOSITORY)/"
	@$(BIN)/tvision export --target $(TARGET) --repository $(REPOSITORY)

export: $(INSTALLED)
	$(BIN)/tvision export --target $(TARGET) --repository $(REPOSITORY)

demo: $(REPOSITORY)/$(MODEL)/config.pbtxt serve-packages
	@echo "==> serving $(REPOSITORY)/ and classifying the sample photos"
	@$(BIN)/tvision demo --repository $(REPOSITORY)

serve: $(REPOSITORY)/$(MODEL)/config.pbtxt serve-packages
	$(BIN)/tvision serve --repository $(REPOSITORY)

# A tool in a virtual environment of its own under $(VENV)/tools: $(call tool_venv,NAME,SPEC)
define tool_venv
	@echo "==> installing $(2) into $(VENV)/tools/$(1)"
	@$(BIN)/python -m venv $(VENV)/tools/$(1)
	@$(VENV)/tools/$(1)/bin/python -m pip install -q --disable-pip-version-check $(2) \
		> $(VENV)/$(1)-install.log 2>&1 || { tail -n 30 $(VENV)/$(1)-install.log; exit 1; }
endef

$(CHECKOV): | $(INSTALLED)
	$(call tool_venv,checkov,checkov==$(CHECKOV_VERSION))

$(AWSCLI): | $(INSTALLED)
	$(call tool_venv,awscli,awscli==$(AWSCLI_VERSION))

$(PERF_ANALYZER): | $(INSTALLED)
	$(call tool_venv,perf-analyzer,$(PERF_ANALYZER_SPECS))

$(DALI): $(INSTALLED)
	@echo "==> installing tvision[dali] (NVIDIA DALI) into $(VENV) for its CPU twin"
	@$(PIP_INSTALL) -q "$(DALI_SPEC)" > $(VENV)/dali-install.log 2>&1 \
		|| { tail -n 30 $(VENV)/dali-install.log; exit 1; }
	@touch $@

# Debian packages run for real. nginx is the edge in front of Triton (tvision/edge.py):
# every server the launcher starts needs it, so `make demo` and `make serve` install it too.
# The tests also run Prometheus (and promtool) for the autoscaling metric, Chromium for the
# load-test report, nft for the network-fault rows, and libb64 for perf_analyzer. Installed
# when missing and this is root (CI); otherwise the command says what to install.
SERVE_PACKAGES := nginx
PERF_ANALYZER_PACKAGES := libb64-0d
SYSTEM_PACKAGES := $(SERVE_PACKAGES) $(PERF_ANALYZER_PACKAGES) prometheus chromium nftables curl
define debian_packages
	@missing=""; for pkg in $(1); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || \
		missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "==> installing Debian packages:$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && \
			  apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
		else echo "note: not root; install these Debian packages:$$missing"; fi; \
	fi
endef

system-packages:
	$(call debian_packages,$(SYSTEM_PACKAGES))

serve-packages:
	$(call debian_packages,$(SERVE_PACKAGES))

# The Debian packages, the tool environments and DALI install side by side (most of it is
# waiting on the registries): on a fresh machine this is about 2 minutes of the run.
test: $(INSTALLED)
	@$(MAKE) -s --no-print-directory -j5 system-packages $(CHECKOV) $(AWSCLI) $(PERF_ANALYZER) \
		$(DALI)
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy --strict client/src/tvision_client

bench: $(INSTALLED) serve-packages
	mkdir -p bench-results
	$(BIN)/tvision bench --json bench-results/bench.json --plot bench-results/bench.png
	$(BIN)/tvision bench-sdk --json bench-results/bench-sdk.json
	$(BIN)/tvision bench-preprocess

FIDELITY_PHOTOS ?= fidelity-photos
OPENCV_PHOTOS := /usr/share/doc/opencv-doc/examples/data

# The broad photo set adds Debian's opencv-doc example photos to the wheels' own; without
# root (or the package), it is measured on the wheels' photos only, and says so.
fidelity: $(REPOSITORY)/$(MODEL)/config.pbtxt $(DALI)
	@test -d $(OPENCV_PHOTOS) || { test "$$(id -u)" = 0 && \
		{ apt-get install -y -q --no-install-recommends opencv-doc >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && \
		    apt-get install -y -q --no-install-recommends opencv-doc >/dev/null; }; }; } || \
		echo "note: opencv-doc is not installed; measuring on the wheels' photos only"
	$(BIN)/tvision fidelity --build --photos $(FIDELITY_PHOTOS) --repository $(REPOSITORY) \
		--json $(FIDELITY_PHOTOS).json

# The release gate make loadtest applies; override on the command line.
LOADTEST_GATE ?= --slo-p99-ms 2000 --slo-max-failure-ratio 0
loadtest: $(REPOSITORY)/$(MODEL)/config.pbtxt serve-packages
	$(BIN)/python -m tvision.loadtest_run --repository $(REPOSITORY) -- $(LOADTEST_GATE)

# perf_analyzer against the exported defaults, beside tvision bench's served path and the limit.
perf-analyzer: $(INSTALLED) $(PERF_ANALYZER) serve-packages
	$(call debian_packages,$(PERF_ANALYZER_PACKAGES))
	$(BIN)/tvision bench --perf-analyzer

# Quiet (@): the output is YAML for `make k8s | kubectl apply -f -`.
k8s: $(INSTALLED)
	@$(BIN)/kubectl kustomize k8s/overlays/$(or $(OVERLAY),prod)

clean:
	rm -rf $(REPOSITORY)/*/ .pytest_cache .mypy_cache .ruff_cache
