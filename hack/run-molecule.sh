#!/usr/bin/env bash
# Run `molecule test` for each scenario named on the command line, up to
# MOLECULE_JOBS at a time (default 2: most of a scenario's time is spent
# waiting on containers and package installs, not on the CPU). Each
# scenario logs to .cache/molecule/<scenario>.log; a failed scenario's log
# tail is printed. Exits non-zero when any scenario fails or none is given.
set -uo pipefail
jobs="${MOLECULE_JOBS:-2}"
logs=.cache/molecule
mkdir -p "$logs"
if [ $# -eq 0 ]; then
  echo "run-molecule: no scenario given" >&2
  exit 2
fi

run_one() {
  local scenario=$1 log="$logs/$1.log" start end rc
  start=$(date +%s)
  molecule test -s "$scenario" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  printf '%s\t%s\t%ss\n' "$scenario" "$([ $rc -eq 0 ] && echo passed || echo FAILED)" "$((end - start))" \
    >"$logs/$scenario.result"
  printf '== molecule %-20s %s in %ss\n' "$scenario" "$([ $rc -eq 0 ] && echo passed || echo FAILED)" "$((end - start))"
  return $rc
}
export -f run_one
export logs

printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}
status=$?
failed=0
for scenario in "$@"; do
  if ! grep -q passed "$logs/$scenario.result" 2>/dev/null; then
    failed=$((failed + 1))
    echo "---- last 80 lines of $logs/$scenario.log ----"
    tail -n 80 "$logs/$scenario.log"
  fi
done
echo "molecule: $(( $# - failed )) passed, $failed failed"
[ $status -eq 0 ] && [ $failed -eq 0 ]
