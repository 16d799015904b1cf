#!/usr/bin/env bash
# stress.sh — run the test suite (or some packages) again and again with
# CPU hogs beside it, the way a busy CI machine runs it, and say what failed.
#
#   scripts/stress.sh [-n RUNS] [-j HOGS] [-- GO TEST FLAGS] [PACKAGES...]
#
#   -n RUNS   how many times to run (default 3)
#   -j HOGS   how many busy-loop processes to run beside the tests (default 2)
#   PACKAGES  go package patterns (default ./...)
#   after --  extra flags for go test (default: -race -shuffle=on -count=1 -timeout 30m)
#
# Examples:
#   scripts/stress.sh                                   # 3 full-suite runs, 2 hogs
#   scripts/stress.sh -n 20 ./replicate ./admin ./test ./trigger/api
#
# Prints one line per run (time, result, failing tests) and a summary;
# exits 1 when any run failed. Logs of failed runs are kept in the printed
# directory.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=3 hogs=2 flags=(-race -shuffle=on -count=1 -timeout 30m) pkgs=()
while [ $# -gt 0 ]; do
	case "$1" in
	-n) runs=$2; shift 2 ;;
	-j) hogs=$2; shift 2 ;;
	--) shift; flags=(); while [ $# -gt 0 ] && [[ "$1" == -* ]]; do flags+=("$1"); shift; done ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	*) pkgs+=("$1"); shift ;;
	esac
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

logs=$(mktemp -d "${TMPDIR:-/tmp}/godwit-stress.XXXXXX")
hog_pids=()
stop_hogs() { for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap stop_hogs EXIT INT TERM
for _ in $(seq 1 "$hogs"); do
	( while :; do :; done ) &
	hog_pids+=($!)
done

echo "stress: $runs run(s) of go test ${flags[*]} ${pkgs[*]} beside $hogs CPU hog(s); logs in $logs"
# Build the test binaries once so the first run is not the only one that
# pays for compiling.
go test "${flags[@]}" -run '^$' "${pkgs[@]}" >/dev/null 2>&1 || true

failed=0 total_secs=0
declare -A fail_count=()
for i in $(seq 1 "$runs"); do
	log="$logs/run-$i.log"
	start=$(date +%s)
	go test "${flags[@]}" "${pkgs[@]}" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	total_secs=$(( total_secs + secs ))
	if [ $rc -eq 0 ]; then
		echo "run $i/$runs: ok (${secs}s, load $(cut -d' ' -f1-3 /proc/loadavg))"
		rm -f "$log"
		continue
	fi
	failed=$((failed + 1))
	tests=$(grep -E '^\s*--- FAIL: ' "$log" | sed -E 's/^\s*--- FAIL: ([^ ]+).*/\1/' | sort -u | tr '\n' ' ')
	pkgfail=$(grep -E '^(FAIL|panic:)' "$log" | sort -u | tr '\n' ' ')
	echo "run $i/$runs: FAILED (${secs}s): ${tests:-no test named} ${pkgfail}"
	for tname in $tests; do fail_count[$tname]=$(( ${fail_count[$tname]:-0} + 1 )); done
done

echo "stress: $runs runs, $failed failed, $(( total_secs / runs ))s per run on average"
for tname in "${!fail_count[@]}"; do echo "  ${fail_count[$tname]}× $tname"; done
[ $failed -eq 0 ] && rmdir "$logs" 2>/dev/null
[ $failed -eq 0 ]
