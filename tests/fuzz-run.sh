#!/usr/bin/env bash
# Runs every libFuzzer harness of a clang -Dfuzz=true build dir for a
# bounded time (or number of executions) from its seed corpus, one after
# the other, and prints the executions each reached.  New inputs go to a
# scratch dir, never into the source tree.  Exits non-zero on any finding
# (the input is left under the scratch dir and its path printed).
#   tests/fuzz-run.sh BUILD-DIR time SECONDS   (CI: tests/run)
#   tests/fuzz-run.sh BUILD-DIR runs N         (docs/security.md's runs)
set -u
cd "$(dirname "$0")/.."
dir=$1 mode=$2 amount=$3
case $mode in
time) limit=-max_total_time=$amount ;;
runs) limit=-runs=$amount ;;
*) echo "fuzz-run: mode '$mode' is neither time nor runs" >&2; exit 2 ;;
esac
# harness (in DIR), seed corpus, -max_len
harnesses=(
	"tests/qmp/fuzz-qmp tests/qmp/corpus 4096"
	"tests/symvirt/fuzz-symvirt-agent-msg tests/symvirt/fuzz-corpus 8192"
	"tests/symvirt/fuzz-symvirt-client tests/symvirt/client-corpus 88000"
	"tests/mpi-plugin/fuzz-btl-input tests/mpi-plugin/corpus 4096"
	"tests/migrate/fuzz-kwm-cluster tests/migrate/fuzz-corpus 8192"
	"tests/verbs/fuzz-kwv-proto tests/verbs/fuzz-corpus 4096"
)
scratch=$(mktemp -d /var/tmp/kawarimi-fuzz.XXXXXX) || exit 1
status=0
for h in "${harnesses[@]}"; do
	read -r bin corpus maxlen <<<"$h"
	name=$(basename "$bin")
	if [ ! -x "$dir/$bin" ]; then
		echo "fuzz-run: $dir/$bin is not built (configure $dir with CC=clang -Dfuzz=true)"
		status=1
		continue
	fi
	mkdir -p "$scratch/$name"
	seeds=$(ls -d "$corpus"/* | paste -sd,)
	"$dir/$bin" "$limit" -max_len="$maxlen" -seed_inputs="$seeds" -print_final_stats=1 \
		-artifact_prefix="$scratch/$name/" "$scratch/$name" >"$scratch/$name.log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$name.log")
	if [ $rc -ne 0 ]; then
		tail -40 "$scratch/$name.log"
		echo "fuzz-run: $name: FINDING after ${execs:-?} executions (exit $rc); input under $scratch/$name/"
		status=1
	else
		echo "fuzz-run: $name: ${execs:-?} executions, $mode $amount, no finding"
	fi
done
[ $status -eq 0 ] && rm -rf "$scratch"
exit $status
