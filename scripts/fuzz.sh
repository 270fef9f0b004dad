#!/usr/bin/env bash
# Runs libFuzzer targets (build-fuzz/, the fuzz preset: ASan + UBSan) over their seed corpora.
#   fuzz.sh runs N [TARGET...]    N executions per target from a fixed seed: the short run in
#                                 `make test`, reproducible, so a CI failure is one anyone can
#                                 replay;
#   fuzz.sh time S [TARGET...]    S seconds per target with a random seed: the opt-in long hunt
#                                 (`make fuzz-long`). Afterwards the inputs it found that reach
#                                 code the corpus does not are merged into fuzz/corpus/<target>/
#                                 (libFuzzer's -merge=1; -use_counters=0 counts new edges only,
#                                 not new hit counts, so the corpora stay small): review and
#                                 commit them.
# TARGET is a name such as jingle (build-fuzz/bin/fuzz_jingle); none means every target. Targets
# run side by side, FUZZ_JOBS at a time (one per core unless told). Each run
# works on a scratch copy of the corpus. A crash fails the run and keeps its input in
# fuzz/artifacts/ (add it to fuzz/corpus/<target>/ once fixed). At the end a table gives, per
# target, the time, the executions, the coverage (cov: edges, ft: features) and what was merged.
set -euo pipefail
mode=${1:-runs}
amount=${2:-200000}
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
case "$mode" in
  runs | time) ;;
  *) echo "usage: fuzz.sh runs N [TARGET...] | time SECONDS [TARGET...]" >&2; exit 2 ;;
esac
bins=()
if [ $# -eq 0 ]; then
  bins=(build-fuzz/bin/fuzz_*)
else
  for t in "$@"; do
    if [ ! -x "build-fuzz/bin/fuzz_$t" ]; then
      echo "fuzz: no target $t (build-fuzz/bin/fuzz_$t)" >&2
      exit 2
    fi
    bins+=("build-fuzz/bin/fuzz_$t")
  done
fi
mkdir -p fuzz/artifacts
# Targets run side by side, one per core (libFuzzer runs one process per target here): FUZZ_JOBS
# of them at a time, nproc unless told. Each writes its summary line and status to $results.
jobs_max=${FUZZ_JOBS:-$(nproc)}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# A run of fuzz_record13 sets up two TLS 1.3 key schedules and cipher contexts through OpenSSL
# (about 1.5 ms under ASan, 70 times the other targets' cost): it gets a quarter of the runs;
# fuzz_xml_serializer makes a parser for every input (about 0.5 ms under ASan): half. So the short
# fuzz stays near a minute per target.
declare -A run_share=([record13]=4 [xml_serializer]=2)
# libFuzzer's -timeout is wall-clock time, and these runs go on at nice 19 beside builds and tests
# (make test) or other work: a 30-minute run here once stopped on a "timeout" of 11 s for an input
# that takes under a millisecond, its process starved of the CPU. Every input runs in well under a
# second; 60 s still catches a hang.
unit_timeout=60

run_one() {
  local bin=$1 name=${1##*/fuzz_} budget log work start result took execs cov merged before
  local status=0
  if [ "$mode" = runs ]; then
    budget=(-runs="$((amount / ${run_share[$name]:-1}))" -seed=1)
  else
    budget=(-max_total_time="$amount")
  fi
  log="fuzz/artifacts/$name.log"
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzz: $name ($mode $amount)"
  start=$SECONDS
  if ! "$bin" "${budget[@]}" -timeout=$unit_timeout -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/${name}-" "$work" > "$log" 2>&1; then
    echo "fuzz: $name FAILED (see $log)"
    tail -n 30 "$log"
    status=1
    result=FAILED
  else
    result=clean
  fi
  took=$((SECONDS - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
  merged=-
  if [ "$mode" = time ] && [ "$result" = clean ]; then
    mkdir -p "fuzz/corpus/$name"
    before=$(find "fuzz/corpus/$name" -type f | wc -l)
    if "$bin" -merge=1 -use_counters=0 -timeout=$unit_timeout -rss_limit_mb=2048 \
        "fuzz/corpus/$name" "$work" >> "$log" 2>&1; then
      merged=$(($(find "fuzz/corpus/$name" -type f | wc -l) - before))
    else
      echo "fuzz: $name: merging into fuzz/corpus/$name failed (see $log)"
      status=1
    fi
  fi
  printf '%-16s %-7s %6ss %12s execs  %-22s +%s corpus\n' "$name" "$result" "$took" \
    "${execs:-?}" "${cov:-cov: ?}" "$merged" > "$results/$name.line"
  echo "$status" > "$results/$name.status"
  rm -rf "$work"
}

for bin in "${bins[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_one "$bin" &
done
wait
status=0
summary=()
for bin in "${bins[@]}"; do
  name=${bin##*/fuzz_}
  summary+=("$(cat "$results/$name.line" 2>/dev/null || echo "$name did not finish")")
  [ "$(cat "$results/$name.status" 2>/dev/null)" = 0 ] || status=1
done
echo "fuzz: summary ($mode $amount; $(date -u +%Y-%m-%d))"
printf '  %s\n' "${summary[@]}"
if [ $status -eq 0 ]; then
  echo "fuzz: all targets ran clean"
fi
exit $status
