#!/usr/bin/env bash
# Runs every libFuzzer target over its seed corpus for N seconds (default 20). New inputs go to a
# scratch corpus so the checked-in seeds stay small; a crash fails the run and keeps its input in
# fuzz/artifacts/.
set -euo pipefail
secs=${1:-20}
cd "$(dirname "$0")/.."
mkdir -p fuzz/artifacts
status=0
for bin in build-fuzz/bin/fuzz_*; do
  name=${bin##*/fuzz_}
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzz: $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
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
