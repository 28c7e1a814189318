# Two commands set up a fresh machine:
#   make demo   -> virtualenv + install + default pretraining on the embedded synthetic world
#   make test   -> virtualenv + install + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# IBL BrainWideBench's scorers (nfm.evaluation.bwb): the package pins torch==2.10 and numpy, scipy and
# scikit-learn exactly, which would downgrade torch, so it is installed with --no-deps after nfm[all] (whose [bwb]
# extra brings its other dependencies, torchmetrics and rich); `pip check` then lists those pins: expected (docs/bwb.md)
BWB_EVAL := ibl-bwb-eval==0.1.0
# CPU torch from this machine's disk unless a GPU is present (avoids multi-GB CUDA wheels)
TORCH  := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]"
	$(BIN)/python -m pip install -q --no-deps "$(BWB_EVAL)"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# recipes/accelerate/single_process.yaml passes every launch setting (no "defaults used" warning);
# -q: a failed run shows the recipe's own message, not also accelerate's traceback of its subprocess
demo: $(STAMP)
	$(BIN)/accelerate launch -q --config_file recipes/accelerate/single_process.yaml recipes/pretrain.py

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

test-fast: $(STAMP)  # the inner loop: everything but the end-to-end runs marked slow
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_binning.py

clean:
	rm -rf $(VENV) outputs
