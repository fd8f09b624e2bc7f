#!/usr/bin/env bash
# install_check.sh - installs a built sparrow into a temporary prefix and checks what a user gets:
# the installed files, then a tiny consumer that runs a CSR spmm, built four ways against the
# install alone:
#   1. CMake: find_package(sparrow) + target_link_libraries(app sparrow::sparrow)  (static)
#   2. CMake: sparrow::sparrow_shared
#   3. pkg-config --cflags --libs sparrow                                          (shared)
#   4. pkg-config --static --cflags --libs sparrow with the shared library removed, so that the
#      link must succeed with libsparrow.a and Libs.private alone
# Everything happens in a mktemp directory that is removed on exit.
#
# Usage: tests/install_check.sh [BUILD_DIR]   (default: build; `make test-install` builds it)
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$src/build}
CC=${CC:-cc}
CMAKE=${CMAKE:-cmake}

fail() { echo "install_check: FAIL: $*" >&2; exit 1; }
step() { echo "install_check: $*"; }

[ -f "$build/CMakeCache.txt" ] || fail "$build is not a configured build directory"
for tool in pkg-config objdump "$CC"; do
    command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-deps.sh build)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sparrow-install-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

# ---- install --------------------------------------------------------------------------------
"$CMAKE" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
pc=$(find "$prefix" -name sparrow.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "no pkgconfig/sparrow.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in include/sparrow/sparrow.h include/sparrow/core.h include/sparrow/sparse.h \
         include/sparrow/kernels.h include/sparrow/tensor.h bin/sparrow; do
    [ -e "$prefix/$f" ] || fail "missing $f"
done
for f in libsparrow.a libsparrow.so cmake/sparrow/sparrowConfig.cmake \
         cmake/sparrow/sparrowConfigVersion.cmake cmake/sparrow/sparrowTargets.cmake; do
    [ -e "$libdir/$f" ] || fail "missing ${libdir#"$prefix"/}/$f"
done
step "installed headers, libsparrow.a/.so, bin/sparrow, sparrow.pc and the CMake package"
"$prefix/bin/sparrow" version >/dev/null || fail "installed CLI does not run"

# ---- the consumer: Y = relu(W X + bias) for a 2x3 CSR W and batch 2, checked exactly ---------
app=$tmp/app
mkdir -p "$app"
cat >"$app/app.c" <<'EOF'
#include <stdio.h>

#include <sparrow/sparrow.h>

int main(void) {
    /* W (2 x 3) = [1 0 2; 0 -3 0], X (3, 2) = [1 2; 3 4; 5 6], bias = [0.5, 20] */
    const float dense[6] = {1, 0, 2, 0, -3, 0}, x[6] = {1, 2, 3, 4, 5, 6}, bias[2] = {0.5f, 20};
    const float want[4] = {11.5f, 14.5f, 11.0f, 8.0f}; /* exact in float */
    float y[4] = {0};
    sp_csr *w = NULL;
    if (sp_csr_from_dense(2, 3, dense, 3, NULL, 0, &w) != SP_OK ||
        sp_csr_spmm(w, x, 2, 2, y, 2, bias, SP_ACT_RELU, 1) != SP_OK) {
        fprintf(stderr, "app: %s\n", sp_last_error());
        sp_csr_free(w);
        return 1;
    }
    sp_csr_free(w);
    for (int i = 0; i < 4; i++)
        if (y[i] != want[i]) {
            fprintf(stderr, "app: y[%d] = %g, want %g\n", i, y[i], want[i]);
            return 1;
        }
    printf("sparrow %s csr spmm ok\n", sp_version());
    return 0;
}
EOF
cat >"$app/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(sparrow_install_check C)
find_package(sparrow 0.1 REQUIRED)
string(FIND "${sparrow_DIR}" "${EXPECT_PREFIX}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "found sparrow at ${sparrow_DIR}, not under ${EXPECT_PREFIX}")
endif()
add_executable(app app.c)
target_link_libraries(app sparrow::sparrow)
add_executable(app_shared app.c)
target_link_libraries(app_shared sparrow::sparrow_shared)
EOF

# (grep reads all its input: with pipefail, grep -q could leave objdump to die of SIGPIPE)
needs_libsparrow() { objdump -p "$1" | grep 'NEEDED.*libsparrow' >/dev/null; }

# 1, 2: CMake package
"$CMAKE" -S "$app" -B "$app/build" -DCMAKE_PREFIX_PATH="$prefix" -DEXPECT_PREFIX="$prefix" \
    -DCMAKE_C_COMPILER="$CC" >"$tmp/cmake.log" 2>&1 &&
    "$CMAKE" --build "$app/build" >>"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; fail "consumer did not build with find_package(sparrow)"; }
"$app/build/app" >/dev/null || fail "find_package consumer (sparrow::sparrow) failed to run"
! needs_libsparrow "$app/build/app" || fail "sparrow::sparrow should be the static library"
"$app/build/app_shared" >/dev/null || fail "find_package consumer (sparrow_shared) failed to run"
needs_libsparrow "$app/build/app_shared" || fail "sparrow::sparrow_shared did not link libsparrow.so"
step "find_package(sparrow): sparrow::sparrow (static) and sparrow::sparrow_shared build and run"

# 3: pkg-config, shared
export PKG_CONFIG_PATH="$(dirname "$pc")"
pc_prefix=$(cd "$(pkg-config --variable=prefix sparrow)" && pwd -P)
[ "$pc_prefix" = "$(cd "$prefix" && pwd -P)" ] || fail "sparrow.pc prefix is $pc_prefix, not $prefix"
# shellcheck disable=SC2046  # pkg-config output is meant to be split into words
"$CC" "$app/app.c" -o "$app/app_pc" $(pkg-config --cflags --libs sparrow) ||
    fail "consumer did not build with pkg-config --cflags --libs sparrow"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$app/app_pc" >/dev/null ||
    fail "pkg-config consumer (shared) failed to run"
needs_libsparrow "$app/app_pc" || fail "pkg-config --libs did not link libsparrow.so"
step "pkg-config --cflags --libs: builds and runs against libsparrow.so"

# 4: pkg-config, static: with the shared library gone, -lsparrow can only mean libsparrow.a
rm -f "$libdir"/libsparrow.so*
# shellcheck disable=SC2046
"$CC" "$app/app.c" -o "$app/app_static" $(pkg-config --static --cflags --libs sparrow) ||
    fail "static link with pkg-config --static --libs sparrow failed (Libs.private incomplete?)"
"$app/app_static" >/dev/null || fail "pkg-config consumer (static) failed to run"
! needs_libsparrow "$app/app_static" || fail "static consumer still needs libsparrow.so"
step "pkg-config --static --libs: links libsparrow.a alone and runs"
echo "install_check: all passed"
