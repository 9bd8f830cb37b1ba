# The two commands a user needs: `make run` (the main job) and `make test` (the suite).
# Both set up .venv on first use; Python 3.11, pip, gcc and make are assumed (npm for the
# handwriting fonts, optional: `make fonts` warns and goes on without it).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.digitlab-installed

# A developer with the shared MNIST folder beside the repo never waits on the internet.
SHARED_MNIST := $(abspath ../shared/data/mnist)
ifneq ($(wildcard $(SHARED_MNIST)/train-images-idx3-ubyte.gz),)
export DIGITLAB_MNIST_MIRROR ?= $(SHARED_MNIST)
endif

.PHONY: setup fonts run test test-fast test-slow lint clean bundle

setup: $(STAMP) fonts

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,tensorboard,sweep,openvino]'
	touch $(STAMP)

# Handwriting fonts of other writers than MNIST's (digitlab.synth.fonts lists them, each pinned)
# from npm's @fontsource packages into .fonts/; a no-op once there. Without npm or the network
# it prints one warning and setup goes on: only the font renderer and its benchmark need them.
fonts: $(STAMP)
	@$(BIN)/python -m digitlab.synth.fonts

ifndef RUN_DIR
RUN_DIR := runs/default-$(shell date +%Y%m%d-%H%M%S)
endif

run: setup
	$(BIN)/digitlab data fetch
	$(BIN)/digitlab data info
	$(BIN)/digitlab train default --out $(RUN_DIR)
	$(BIN)/digitlab evaluate $(RUN_DIR)
	$(BIN)/digitlab report $(RUN_DIR)
	@echo "report: $(RUN_DIR)/report.html"
	@echo "model:  $(RUN_DIR)/model.safetensors (+ model.json)"

# The fast tier (under 2 minutes on 2 cores) runs first; tests marked slow (training runs, the
# browser, number-reading sweeps) follow. The layer contracts are checked before either.
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Regenerate the model shipped inside the package (src/digitlab/assets/model).
BUNDLE_RUN := runs/bundled-$(shell date +%Y%m%d-%H%M%S)
bundle: setup
	$(BIN)/digitlab train bundled --out $(BUNDLE_RUN)
	$(BIN)/digitlab calibrate $(BUNDLE_RUN)
	$(BIN)/digitlab export $(BUNDLE_RUN) --format onnx
	$(BIN)/digitlab train-line $(BUNDLE_RUN)
	mkdir -p src/digitlab/assets/model
	cp $(BUNDLE_RUN)/model.json $(BUNDLE_RUN)/model.safetensors $(BUNDLE_RUN)/model.onnx \
	  $(BUNDLE_RUN)/line.onnx src/digitlab/assets/model/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
