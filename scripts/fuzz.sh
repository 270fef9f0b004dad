#!/usr/bin/env bash
# Runs every libFuzzer target over its seed corpus.
#   fuzz.sh runs N   — N executions per target from a fixed seed: the short run in `make test`,
#                      reproducible, so a CI failure is one anyone can replay;
#   fuzz.sh time S   — S seconds per target with a random seed: the opt-in long hunt.
# New inputs go to a scratch corpus so the checked-in seeds stay small; a crash fails the run and
# keeps its input in fuzz/artifacts/ (add it to fuzz/corpus/<target>/ once fixed).
set -euo pipefail
mode=${1:-runs}
amount=${2:-200000}
cd "$(dirname "$0")/.."
case "$mode" in
  runs) budget=(-runs="$amount" -seed=1) ;;
  time) budget=(-max_total_time="$amount") ;;
  *) echo "usage: fuzz.sh runs N | time SECONDS" >&2; exit 2 ;;
esac
mkdir -p fuzz/artifacts
status=0
# A run of fuzz_record13 sets up two TLS 1.3 key schedules and cipher contexts through OpenSSL
# (about 1.5 ms under ASan, 70 times the other targets' cost): it gets a quarter of the runs so
# the short fuzz stays near a minute per target.
declare -A run_share=([record13]=4)
for bin in build-fuzz/bin/fuzz_*; do
  name=${bin##*/fuzz_}
  if [ "$mode" = runs ] && [ -n "${run_share[$name]:-}" ]; then
    budget=(-runs="$((amount / run_share[$name]))" -seed=1)
  elif [ "$mode" = runs ]; then
    budget=(-runs="$amount" -seed=1)
  fi
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzz: $name ($mode $amount)"
  if ! "$bin" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="fuzz/artifacts/${name}-" "$work" > "fuzz/artifacts/$name.log" 2>&1; then
    echo "fuzz: $name FAILED (see fuzz/artifacts/$name.log)"
    tail -n 30 "fuzz/artifacts/$name.log"
    status=1
  else
    grep -E '^(#[0-9]+ +DONE|Done)' "fuzz/artifacts/$name.log" | tail -n 1 || true
  fi
  rm -rf "$work"
done
if [ $status -eq 0 ]; then
  echo "fuzz: all targets ran clean"
fi
exit $status
