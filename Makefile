# Two commands on a fresh machine (Python 3.10+ with pip): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# A real sweep end to end on the CPU: Table 2's grid (5 placements x ResNet-110/164 configs) at depth 20,
# 2 seeds, a few iterations on synthetic CIFAR-format data; then the paper-shaped table.
demo: setup
	$(BIN)/resnet-ablate sweep table2 model.depth=20 data=synthetic budget=demo 'seed=range(2)' launcher.jobs_per_gpu=2 store.root=results/demo
	$(BIN)/resnet-ablate table table2 data=synthetic budget=demo store.root=results/demo

test: setup
	$(BIN)/ruff check resnet_ablate hydra_plugins tests benchmarks/faults.py benchmarks/attacks.py benchmarks/plan.py benchmarks/fidelity_cpu.py benchmarks/scale.py
	$(BIN)/python -m pytest -q --durations=30

# The daily loop (about 7 minutes on 2 cores): everything but the end-to-end runs of real processes (`slow`).
test-fast: setup
	$(BIN)/ruff check resnet_ablate hydra_plugins tests benchmarks/faults.py benchmarks/attacks.py benchmarks/plan.py benchmarks/fidelity_cpu.py benchmarks/scale.py
	$(BIN)/python -m pytest -q -m "not slow"
