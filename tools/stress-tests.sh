#!/usr/bin/env bash
# The suite under load: `pytest -n 4` beside a CPU burner, three runs in a row, stopping at the
# first failure. A test that depends on timing shows up here long before it shows up in CI.
#   tools/stress-tests.sh [extra pytest arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-.venv/bin/pytest}
RUNS=${RUNS:-3}

burner=""
stop_burner() {
    if [ -n "$burner" ]; then
        kill "$burner" 2>/dev/null
        wait "$burner" 2>/dev/null
        burner=""
    fi
}
trap stop_burner EXIT
trap 'stop_burner; exit 130' INT TERM

python3 -c 'while True: pass' &
burner=$!
echo "CPU burner pid $burner on $(nproc) core(s)"

for run in $(seq 1 "$RUNS"); do
    started=$(date +%s)
    "$PYTEST" -n 4 -q "$@"
    code=$?
    elapsed=$(( $(date +%s) - started ))
    if [ "$code" -eq 0 ]; then
        echo "run $run/$RUNS: passed in ${elapsed}s"
    else
        echo "run $run/$RUNS: FAILED (pytest exit $code) after ${elapsed}s"
        exit "$code"
    fi
done
echo "all $RUNS runs passed"
