# The front door. On a fresh Debian 12 machine, `make test` installs what is missing (apt packages,
# a pinned Python virtualenv, JS tooling), builds, and runs every test; `make run` starts the main job.
.PHONY: all deps build test test-native test-python check-js test-browser fuzz run bench soak clean lint format

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
	$(PY) tools/write_js_states.py

test: build
	@echo "== native tests (ctest) =="
	ctest --test-dir $(BUILD) --output-on-failure -j 2 --timeout 900
	@echo "== python tests (pytest) =="
	$(PY) -m pytest tests/python -q
	@$(MAKE) --no-print-directory test-wheel
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory check-js
	@$(MAKE) --no-print-directory test-browser
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30

# The wire decoder under libFuzzer (clang, with ASan/UBSan) for a bounded time; longer runs by hand:
#   make fuzz FUZZ_SECONDS=3600
FUZZ_SECONDS ?= 60
fuzz: deps
	@echo "== fuzzing the protocol decoder for $(FUZZ_SECONDS) s =="
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOMFYMQ_BUILD_FUZZ=ON > /dev/null
	cmake --build build-fuzz --target protocol_fuzz
	mkdir -p build-fuzz/corpus
	build-fuzz/protocol_fuzz -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 \
	  build-fuzz/corpus tests/fuzz/corpus 2>&1 | grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|Done" || true
	@test ! -e crash-* || (echo "fuzzer found a crash: see crash-*" && exit 1)

test-native: build
	ctest --test-dir $(BUILD) --output-on-failure -j 2 --timeout 900

test-python: build
	$(PY) -m pytest tests/python -q

# The wheel pip installs, made self-contained by auditwheel (tools/build-wheel.sh; CMake build in build-wheel/):
# dist/comfymq-<version>-cp311-cp311-manylinux_2_35_x86_64.whl on Debian 12.
.PHONY: wheel test-wheel
wheel: deps
	@tools/build-wheel.sh

# That wheel in a fresh virtualenv: auditwheel and ldd, the module's Python tests run against the installed
# package, install.py taking the module from it (tests/python/test_wheel.py, which skips without the variable).
test-wheel: wheel
	@echo "== the wheel, installed into a fresh virtualenv (pytest -m wheel) =="
	COMFYMQ_TEST_WHEEL=dist $(PY) -m pytest tests/python/test_wheel.py -q -m wheel

# Formatting and lint: C++ against .clang-format, Python with ruff (ruff.toml); both pinned in
# tests/requirements.txt. `make format` applies what `make lint` checks.
CXX_SOURCES = $(shell git ls-files 'native/*.cc' 'native/*.h' 'tests/native/*.cc' 'tests/native/*.h' \
                'tests/fuzz/*.cc' 'bench/*.cc' 'bench/*.h' 2>/dev/null)
lint: deps
	@echo "== lint (clang-format, ruff) =="
	$(abspath $(VENV))/bin/clang-format --dry-run --Werror --style=file:.clang-format $(CXX_SOURCES)
	$(abspath $(VENV))/bin/ruff check .
	$(abspath $(VENV))/bin/ruff format --check .
	@echo "lint: clean"

format: deps
	$(abspath $(VENV))/bin/clang-format -i --style=file:.clang-format $(CXX_SOURCES)
	$(abspath $(VENV))/bin/ruff check --fix .
	$(abspath $(VENV))/bin/ruff format .

# The ComfyUI panel (js/): type-checked against @comfyorg/comfyui-frontend-types (pinned in package.json).
check-js: deps
	@echo "== type-checking js/ (tsc --checkJs) =="
	node_modules/.bin/tsc -p tsconfig.json
	@echo "check-js: no type errors"

# The panel in headless Chromium on the real ComfyUI frontend (pinned and newest), served by the stand-in
# ComfyUI with this repository loaded as a plugin; screenshots in tests/browser/artifacts/.
test-browser: build
	@echo "== browser tests (node --test, playwright-core, Chromium) =="
	PYTHON=$(PY) node --test --test-concurrency=1 tests/browser/

# The main job: a standalone host (embedded store + HTTP API), no ComfyUI needed.
run: build
	$(PY) -m comfy_nodes host

bench: build
	$(BUILD)/comfymq_bench
	$(PY) bench/input_latency.py
	$(PY) bench/api_v2.py
	$(PY) bench/front_door.py
	$(PY) bench/panel_scale.py

# The long crash tests: 10,000+ simulated power cuts and 1,000+ SIGKILLs, with their counts.
soak: build
	COMFYMQ_POWERLOSS_TRIALS=10000 $(BUILD)/comfymq_tests --gtest_filter='PowerLoss.*'
	COMFYMQ_SIGKILL_TRIALS=1000 $(BUILD)/comfymq_tests --gtest_filter='SigKill.*'
	COMFYMQ_SIGKILL_TRIALS=300 $(PY) -m pytest tests/python/test_crash.py -q -s

clean:
	rm -rf $(BUILD) build-fuzz build-wheel dist comfy_nodes/_native*.so
