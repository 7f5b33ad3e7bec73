# The front door. On a fresh Debian 12 machine, `make test` installs what is missing (apt packages,
# a pinned Python virtualenv, JS tooling), builds, and runs every test; `make run` starts the main job.
.PHONY: all deps build test test-native test-python run bench soak clean

VENV   := .venv
PY     := $(abspath $(VENV))/bin/python
BUILD  := build
NPROC  := $(shell nproc)

all: build

deps:
	@tools/setup-debian.sh

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython_EXECUTABLE=$(PY) -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(NPROC)

test: build
	@echo "== native tests (ctest) =="
	ctest --test-dir $(BUILD) --output-on-failure -j 2 --timeout 900
	@echo "== python tests (pytest) =="
	$(PY) -m pytest tests/python -q

test-native: build
	ctest --test-dir $(BUILD) --output-on-failure -j 2 --timeout 900

test-python: build
	$(PY) -m pytest tests/python -q

# The main job: a standalone host (embedded store + HTTP API), no ComfyUI needed.
run: build
	$(PY) -m comfy_nodes host

bench: build
	$(BUILD)/comfymq_bench

# The long crash tests: 10,000+ simulated power cuts and 1,000+ SIGKILLs, with their counts.
soak: build
	COMFYMQ_POWERLOSS_TRIALS=10000 $(BUILD)/comfymq_tests --gtest_filter='PowerLoss.*'
	COMFYMQ_SIGKILL_TRIALS=1000 $(BUILD)/comfymq_tests --gtest_filter='SigKill.*'
	COMFYMQ_SIGKILL_TRIALS=300 $(PY) -m pytest tests/python/test_crash.py -q -s

clean:
	rm -rf $(BUILD) comfy_nodes/_native*.so
