# sparrow - the commands a user types. CMake is the canonical build; this wraps it.
#
#   make            build build/sparrow (CLI), build/libsparrow.a and build/libsparrow.so
#   make test       the suite: plain, with SPARROW_ISA=scalar, and under ASan+UBSan
#   make bench      the kernel benchmark sweep with its peers; writes docs/BENCHMARKS.md
#                   (BENCH_QUICK=1 make bench: a small grid, a few minutes)
#   make run        the main job end to end (for now: the kernel benchmark summary)
#   make install    PREFIX=/usr/local: headers, libraries, CLI, pkg-config, CMake package
#   make test-arm   cross-compile for aarch64 and run the suite under qemu-user
#   make test-noblas  build without BLAS or OpenMP (libc + libm only) and run the suite

PREFIX ?= /usr/local
JOBS ?= 2
CMAKE ?= cmake
DEPS := scripts/install-deps.sh
export MAKEFLAGS += --no-print-directory

.PHONY: all deps build test test-plain test-scalar test-asan test-noblas test-arm bench run \
        install clean

all: build

deps:
	@$(DEPS) build

build: deps
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory test-plain test-scalar test-asan

test-plain: build
	@echo "== suite (isa: best available)"
	@./build/sparrow_tests

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

test-noblas: deps
	@$(CMAKE) -S . -B build-noblas -DSPARROW_BLAS=OFF -DSPARROW_OPENMP=OFF >/dev/null
	@$(CMAKE) --build build-noblas -j $(JOBS)
	@./build-noblas/sparrow_tests

test-arm:
	@$(DEPS) arm
	@$(CMAKE) -S . -B build-arm -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
	    -DSPARROW_BLAS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build-arm -j $(JOBS)
	@echo "== suite on aarch64 under qemu-user"
	@QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 ./build-arm/sparrow_tests

bench: build
	@$(DEPS) bench
	@bench/run.sh

run: build
	@bench/run.sh --summary

install: build
	@$(CMAKE) --install build --prefix $(PREFIX)

clean:
	rm -rf build build-asan build-noblas build-arm
