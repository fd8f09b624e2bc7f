# shellcheck shell=bash disable=SC2034
# The benchmark grid, sourced by bench/run.sh and bench/sweep.sh so that sparrow and its peers
# sweep the same cases. BENCH_QUICK=1 selects a small grid (a few minutes) that still covers
# every "Issue targets" case; BENCH_SHAPES, BENCH_SPARSITIES, BENCH_BATCHES, BENCH_THREADS and
# BENCH_MIN_TIME override single axes.
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  _shapes="100x300 3072x768 768x3072 4096x4096"
  _sparsities="0.5 0.8 0.9 0.99"
  _batches="1 64"
  _min_time=0.05
  _retry_budget=60
else
  _shapes="300x784 100x300 3072x768 768x3072 4096x4096"
  _sparsities="0.5 0.7 0.8 0.9 0.95 0.99"
  _batches="1 16 64 256"
  _min_time=0.15
  _retry_budget=300
fi
SHAPES=${BENCH_SHAPES:-$_shapes}
SPARSITIES=${BENCH_SPARSITIES:-$_sparsities}
BATCHES=${BENCH_BATCHES:-$_batches}
THREADS=${BENCH_THREADS:-"1 2"}
MIN_TIME=${BENCH_MIN_TIME:-$_min_time}
RETRY_BUDGET=$_retry_budget # seconds of retries of contended cases in one run (bench/run.sh)
unset _shapes _sparsities _batches _min_time _retry_budget

# Batches for one shape: the transformer FFN shapes also run at 16 and 128 (the issue's targets).
batches_for() {
  local b=" $BATCHES "
  case $1 in
    3072x768 | 768x3072)
      [[ $b == *" 16 "* ]] || b="$b 16 "
      [[ $b == *" 128 "* ]] || b="$b 128 "
      ;;
  esac
  # sorted numerically, single spaces
  tr ' ' '\n' <<<"$b" | grep . | sort -n | uniq | tr '\n' ' ' | sed 's/ $//'
}
