#!/usr/bin/env bash
# Builds and runs the fuzz targets of fuzz/ (libFuzzer, ASan + UBSan, clang). See README "Fuzzing".
#   scripts/fuzz.sh build                 configure and build $FUZZ_BUILD_DIR (default build/fuzz)
#   scripts/fuzz.sh smoke TARGET          the seed corpus plus a short run (make test does this)
#   scripts/fuzz.sh run [RUNS] [TARGET..] the long run: RUNS inputs per target (default 1000000),
#                                         one target after the other, all targets when none named
#   scripts/fuzz.sh list                  the targets
# The long run keeps its corpus in $FUZZ_BUILD_DIR/corpus/<target> (seeded from fuzz/corpus/<target>),
# writes crashing inputs to $FUZZ_BUILD_DIR/crashes/<target>/ and logs to $FUZZ_BUILD_DIR/logs/,
# and ends with a table: inputs, seconds, coverage, crashes. FUZZ_JOBS=N runs N processes per target
# (libFuzzer -jobs/-workers, RUNS each). Exit status 77: clang++ or libFuzzer is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$(realpath -m "${FUZZ_BUILD_DIR:-$ROOT/build/fuzz}")"
SMOKE_RUNS="${FUZZ_SMOKE_RUNS:-5000}"
SMOKE_SECONDS="${FUZZ_SMOKE_SECONDS:-10}"

targets() {
  for f in "$ROOT"/fuzz/fuzz_*.cpp; do
    f="${f##*/}"
    f="${f#fuzz_}"
    echo "${f%.cpp}"
  done
}

# Per-target libFuzzer options: the input size limit fits the format (configs and states are a few KB).
options() {
  local t="$1" max_len=4096
  case "$t" in
    params_json | train_state) max_len=8192 ;;
    tokenizer_*) max_len=2048 ;;
  esac
  local opts=(-rss_limit_mb=2048 -timeout=10 -max_len="$max_len" -print_final_stats=1 -error_exitcode=1)
  if [ -f "$ROOT/fuzz/dicts/$t.dict" ]; then opts+=(-dict="$ROOT/fuzz/dicts/$t.dict"); fi
  echo "${opts[@]}"
}

have_libfuzzer() {
  command -v clang++ >/dev/null 2>&1 || return 1
  local tmp
  tmp="$(mktemp -d)"
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$tmp/t.cpp"
  local rc=0
  clang++ -fsanitize=fuzzer,address,undefined "$tmp/t.cpp" -o "$tmp/t" >/dev/null 2>&1 || rc=1
  rm -rf "$tmp"
  return $rc
}

build() {
  if ! have_libfuzzer; then
    echo "fuzz: skipped: clang++ with libFuzzer not found (Debian: clang libclang-rt-14-dev; scripts/setup.sh)"
    exit 77
  fi
  if [ ! -f "$BUILD/build.ninja" ]; then
    local launcher=()
    if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
    cmake -S "$ROOT/fuzz" -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" >/dev/null
  fi
  cmake --build "$BUILD" -j "${FUZZ_BUILD_JOBS:-$(nproc)}"
}

binary() {
  local bin="$BUILD/fuzz_$1"
  if [ ! -x "$bin" ]; then
    if ! have_libfuzzer; then
      echo "fuzz: skipped: clang++ with libFuzzer not found" >&2
      exit 77
    fi
    echo "fuzz: $bin is not built (scripts/fuzz.sh build)" >&2
    exit 1
  fi
  echo "$bin"
}

smoke() {
  local t="${1#fuzz_}" bin
  bin="$(binary "$t")"
  local work="$BUILD/smoke/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/crashes"
  # New inputs go to the scratch corpus; fuzz/corpus/<t> is only read. A fixed seed keeps make test
  # reproducible; the long run explores.
  # shellcheck disable=SC2046
  "$bin" $(options "$t") -seed="${FUZZ_SEED:-1}" -runs="$SMOKE_RUNS" -max_total_time="$SMOKE_SECONDS" \
    -artifact_prefix="$work/crashes/" "$work/corpus" "$ROOT/fuzz/corpus/$t"
}

run_long() {
  local runs=1000000
  if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
    runs="$1"
    shift
  fi
  local list=("$@")
  if [ ${#list[@]} -eq 0 ]; then mapfile -t list < <(targets); fi
  build
  mkdir -p "$BUILD/logs"
  cd "$BUILD/logs"  # -jobs writes fuzz-<n>.log here
  # Allocation stack traces cost much of the time in these allocation-heavy readers; replaying a
  # crashing input (build/fuzz/fuzz_<target> <file>) gives them.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=0}"
  local summary="$BUILD/logs/summary.txt" failed=0
  printf '%-16s %10s %8s %8s %8s %s\n' target inputs seconds cov ft result >"$summary"
  for t in "${list[@]}"; do
    local bin corpus="$BUILD/corpus/$t" crashes="$BUILD/crashes/$t" log="$BUILD/logs/$t.log"
    bin="$(binary "$t")"
    mkdir -p "$corpus" "$crashes"
    local jobs=()
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
    echo "fuzz: $t: $runs inputs (log: $log)"
    local start=$SECONDS rc=0
    # shellcheck disable=SC2046
    "$bin" $(options "$t") -runs="$runs" -artifact_prefix="$crashes/" "${jobs[@]}" "$corpus" \
      "$ROOT/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    local secs=$((SECONDS - start))
    local execs cov ft result=ok
    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
    ft="$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
    if [ $rc -ne 0 ] || [ -n "$(ls -A "$crashes")" ]; then
      result="FAILED (exit $rc; inputs in $crashes)"
      failed=1
    fi
    printf '%-16s %10s %8s %8s %8s %s\n' "$t" "${execs:-?}" "$secs" "${cov:-?}" "${ft:-?}" "$result" | tee -a "$summary"
  done
  echo
  cat "$summary"
  return $failed
}

case "${1:-}" in
  build) build ;;
  smoke) smoke "${2:?target}" ;;
  run) shift; run_long "$@" ;;
  list) targets ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
