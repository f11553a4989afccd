# make          build the tool at build/lingua (installs Debian packages first when missing)
# make test     build, then run the whole test suite through ctest
# make demo     build, train the demo model on the bundled corpus, print samples
# make fuzz     the long fuzz run: FUZZ_RUNS inputs per target (default 1000000), see README "Fuzzing"
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

FUZZ_RUNS ?= 1000000

.PHONY: all setup configure build test demo fuzz clean
all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/build.ninja:
	@$(MAKE) --no-print-directory setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: $(BUILD)/build.ninja

build: setup configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

demo: build
	bash scripts/demo.sh $(BUILD)/lingua

fuzz: setup
	FUZZ_BUILD_DIR=$(abspath $(BUILD))/fuzz bash scripts/fuzz.sh run $(FUZZ_RUNS)

clean:
	rm -rf $(BUILD)
