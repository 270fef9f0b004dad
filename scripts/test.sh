#!/usr/bin/env bash
# `make test`: the release build and its tests, then the ASan+UBSan tests, the ThreadSanitizer
# tests and the short fuzz run. Sequentially this kept a 2-core machine idle most of the time:
# the integration tests wait on sockets (about 80% idle CPU) while the next build waited its
# turn. So once the release build is done, the sanitizer builds, the fuzz build and the short
# fuzz run go on in the background at the lowest CPU priority (nice 19: the tests in the
# foreground take the CPU whenever they want it), one after another, and each test phase waits
# for its build only. The background's output is in build/background.log; a failure there
# prints its tail and fails the run, as a failure in the foreground does.
set -euo pipefail
cd "$(dirname "$0")/.."
export MAKEFLAGS=--no-print-directory

if [ "${1:-}" = --background ]; then
  # The background's steps, one after another; each leaves <step>.rc with its exit code in
  # the state directory $2, and a step runs only if the one before passed.
  for step in build-asan build-tsan build-fuzz fuzz-short; do
    echo "== background: make $step ($(date +%T))"
    rc=0
    nice -n 19 make "$step" || rc=$?
    echo "$rc" > "$2/$step.rc"
    [ "$rc" -eq 0 ] || exit "$rc"
  done
  exit 0
fi

make build

state=build/background
rm -rf "$state"
mkdir -p "$state"
log=build/background.log
# In a session of its own, so that a failure here stops all of it (make, compilers, fuzzers).
setsid bash scripts/test.sh --background "$state" > "$log" 2>&1 &
background=$!
trap 'kill -- -$background 2>/dev/null || true' EXIT

# Waits until the background has done `step`; fails the run if it failed (or never ran).
wait_for() {
  local step=$1
  while [ ! -e "$state/$step.rc" ]; do
    if ! kill -0 "$background" 2>/dev/null && [ ! -e "$state/$step.rc" ]; then
      echo "== background stopped before $step; its log's end:" >&2
      tail -n 60 "$log" >&2
      exit 1
    fi
    sleep 1
  done
  if [ "$(cat "$state/$step.rc")" != 0 ]; then
    echo "== background: $step failed; its log's end:" >&2
    tail -n 80 "$log" >&2
    exit 1
  fi
}

echo "== release tests"
make check-release
wait_for build-asan
echo "== ASan+UBSan tests"
make check-asan
wait_for build-tsan
echo "== ThreadSanitizer tests"
make check-tsan
wait_for fuzz-short
echo "== short fuzz run (in the background)"
sed -n '/^fuzz: summary/,$p' "$log"
wait "$background"
trap - EXIT
