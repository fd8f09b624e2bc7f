# sparrow - the commands a user types. CMake is the canonical build; this wraps it.
#
#   make            build build/sparrow (CLI), build/libsparrow.a and build/libsparrow.so
#   make test       the suite: plain, with SPARROW_ISA=scalar, and under ASan+UBSan
#   make bench      the kernel sweep, training throughput, sparse training (time against
#                   nnz, 98% against dense) and mixture of experts (char-LM training against
#                   PyTorch, inference cost against the number of experts), with their peers
#                   (OpenBLAS, PyTorch, SciPy); writes docs/BENCHMARKS.md
#                   (BENCH_QUICK=1 make bench: a small grid, a few minutes)
#   make bench-million  one epoch of a 784-333334-333334-333334-10 MLP trained sparse with
#                   SET (a million hidden neurons; about 17 minutes); writes its section of
#                   docs/BENCHMARKS.md
#   make run        the main job end to end: train LeNet-300-100 on Fashion-MNIST, evaluate it
#   make install    PREFIX=/usr/local: headers, libraries, CLI, pkg-config, CMake package
#   make test-arm   cross-compile for aarch64; under qemu-user: the suite with NEON, with
#                   SPARROW_ISA=scalar, and under ASan+UBSan
#   make test-noblas  build without BLAS, threads or zlib (libc + libm only) and run the suite
#   make test-install install into a temporary prefix; build and run a consumer through
#                   find_package(sparrow) and pkg-config (shared and static)
#   make fuzz       build the libFuzzer targets (clang, ASan+UBSan) and run each for
#                   FUZZ_SECONDS (default 30) from its seed corpus fuzz/corpus/<name>/

PREFIX ?= /usr/local
JOBS ?= 2
CMAKE ?= cmake
DEPS := scripts/install-deps.sh
export MAKEFLAGS += --no-print-directory

.PHONY: all deps build test test-plain test-scalar test-asan test-noblas test-arm test-install \
        bench bench-million run install clean fuzz

all: build

deps:
	@$(DEPS) build

build: deps
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory test-plain test-scalar test-asan

test-plain: build
	@$(DEPS) data test
	@echo "== suite (isa: best available)"
	@./build/sparrow_tests
	@echo "== the command-line tool end to end (tests/cli_check.sh)"
	@tests/cli_check.sh build
	@echo "== export-c on the host and a Cortex-M4F under qemu (tests/mcu_check.sh)" && tests/mcu_check.sh build

test-scalar: build
	@echo "== suite with SPARROW_ISA=scalar"
	@SPARROW_ISA=scalar ./build/sparrow_tests

test-asan: deps
	@echo "== suite under ASan+UBSan"
	@$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARROW_SANITIZE=ON \
	    -DSPARROW_BUILD_CLI=OFF >/dev/null
	@$(CMAKE) --build build-asan -j $(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ./build-asan/sparrow_tests

# The build itself fails if a binary needs more than libc and libm (cmake/check_deps.cmake);
# ldd shows the whole closure once more for the log.
NOBLAS_BINS := build-noblas/sparrow_tests build-noblas/sparrow build-noblas/libsparrow.so

test-noblas: deps
	@$(CMAKE) -S . -B build-noblas -DSPARROW_BLAS=OFF -DSPARROW_THREADS=OFF -DSPARROW_ZLIB=OFF \
	    >/dev/null
	@$(CMAKE) --build build-noblas -j $(JOBS)
	@echo "== libraries of the libc + libm build"
	@ldd $(NOBLAS_BINS)
	@if ldd $(NOBLAS_BINS) | grep -Ei '^[[:space:]]+[^[:space:]]*(blas|lapack|gomp|libomp|iomp)'; \
	then echo "test-noblas: OpenBLAS or an OpenMP runtime is linked" >&2; exit 1; fi
	@echo "== suite without BLAS, threads and zlib"
	@./build-noblas/sparrow_tests

# qemu-user runs the aarch64 binaries; the cross libc and libgomp live under the prefix.
QEMU_ARM := QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64
# The toolchain file counts only when build-arm is first configured (CMake warns otherwise).
ARM_TOOLCHAIN := $(if $(wildcard build-arm/CMakeCache.txt),,\
                   -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake)
ARM_ASAN_TOOLCHAIN := $(if $(wildcard build-arm-asan/CMakeCache.txt),,\
                        -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake)

test-arm:
	@$(DEPS) arm data
	@$(CMAKE) -S . -B build-arm $(ARM_TOOLCHAIN) -DSPARROW_BLAS=OFF -DSPARROW_ZLIB=OFF -DCMAKE_BUILD_TYPE=Release \
	    >/dev/null
	@$(CMAKE) --build build-arm -j $(JOBS)
	@$(QEMU_ARM) ./build-arm/sparrow info
	@echo "== suite on aarch64 under qemu-user (isa: neon)"
	@t0=$$(date +%s); $(QEMU_ARM) ./build-arm/sparrow_tests && \
	    echo "   ($$(( $$(date +%s) - t0 )) s under qemu)"
	@echo "== quantized kernels on a core without the dot-product extension (QEMU_CPU=cortex-a57)"
	@QEMU_CPU=cortex-a57 $(QEMU_ARM) ./build-arm/sparrow_tests qcsr
	@echo "== suite on aarch64 under qemu-user with SPARROW_ISA=scalar"
	@t0=$$(date +%s); SPARROW_ISA=scalar $(QEMU_ARM) ./build-arm/sparrow_tests && \
	    echo "   ($$(( $$(date +%s) - t0 )) s under qemu)"
	@$(CMAKE) -S . -B build-arm-asan $(ARM_ASAN_TOOLCHAIN) -DSPARROW_BLAS=OFF -DSPARROW_ZLIB=OFF \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARROW_SANITIZE=ON -DSPARROW_BUILD_CLI=OFF >/dev/null
	@$(CMAKE) --build build-arm-asan -j $(JOBS)
	@echo "== suite on aarch64 under qemu-user with ASan+UBSan (no LeakSanitizer under qemu)"
	@t0=$$(date +%s); ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1 $(QEMU_ARM) ./build-arm-asan/sparrow_tests && \
	    echo "   ($$(( $$(date +%s) - t0 )) s under qemu)"

test-install: build
	@echo "== install into a temporary prefix, then consumers through CMake and pkg-config"
	@tests/install_check.sh build

bench: build
	@$(DEPS) bench data
	@bench/run.sh
	@bench/train.sh
	@bench/sparse_train.sh
	@bench/moe.sh

bench-million: build
	@$(DEPS) data
	@bench/million.sh

run: build
	@$(DEPS) data
	@bash scripts/run.sh build

install: build
	@$(CMAKE) --install build --prefix $(PREFIX)

clean:
	rm -rf build build-asan build-noblas build-arm build-arm-asan build-fuzz

# libFuzzer targets: fuzz/fuzz_<name>.c runs from the committed seeds in fuzz/corpus/<name>/ and
# keeps what it finds in build-fuzz/corpus/<name>/; a crash leaves its input in build-fuzz/ and
# fails the target. clang is chosen when build-fuzz is first configured.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_CC := $(if $(wildcard build-fuzz/CMakeCache.txt),,CC=clang)

fuzz:
	@$(DEPS) fuzz
	@$(FUZZ_CC) $(CMAKE) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARROW_SANITIZE=ON \
	    -DSPARROW_BLAS=OFF -DSPARROW_THREADS=OFF -DSPARROW_ZLIB=OFF -DSPARROW_BUILD_CLI=OFF \
	    -DSPARROW_BUILD_TESTS=OFF -DSPARROW_BUILD_FUZZ=ON >/dev/null
	@$(CMAKE) --build build-fuzz -j $(JOBS) --target fuzz_targets
	@for t in $(FUZZ_TARGETS); do \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS) s (log: build-fuzz/fuzz_$$t.log)"; \
	    mkdir -p build-fuzz/corpus/$$t; \
	    if ! ./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	        -print_final_stats=1 -artifact_prefix=build-fuzz/ \
	        build-fuzz/corpus/$$t fuzz/corpus/$$t >build-fuzz/fuzz_$$t.log 2>&1; then \
	        tail -n 60 build-fuzz/fuzz_$$t.log; echo "fuzz_$$t: FAILED" >&2; exit 1; \
	    fi; \
	    grep -E '^(#[0-9]+[[:space:]]+DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb)' \
	        build-fuzz/fuzz_$$t.log; \
	done
