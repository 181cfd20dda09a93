#!/usr/bin/env bash
# run_libfuzzer.sh NAME SECONDS CORPUS_DIR -- SOURCES... [-- EXTRA_FLAGS...]
# Builds a libFuzzer driver with clang (-fsanitize=fuzzer,address,undefined)
# from the given sources plus the generated API code, and runs it on a copy of
# its corpus for SECONDS. Exits non-zero when the fuzzer finds a crash.
set -euo pipefail
name=$1 seconds=$2 corpus=$3
shift 3
[ "$1" = "--" ] && shift
srcs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do srcs+=("$1"); shift; done
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bazel build //api:agentmesh_c >/dev/null 2>&1 || bazel build //api:agentmesh_c
bin=$(bazel info bazel-bin 2>/dev/null)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gen=$(ls "$bin"/api/agentmesh/v1/*.pb-c.c "$bin"/api/google/*/*.pb-c.c "$bin"/api/grpc/*/*/*.pb-c.c \
  "$bin"/api/agentmesh_c_registry.c)
clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I. -I"$bin" -I"$bin/api" -o "$work/$name" "${srcs[@]}" $gen "$@" \
  -lprotobuf-c -ljansson -llmdb -lssl -lcrypto -lpthread -lm
mkdir -p "$work/corpus"
cp -r "$corpus"/. "$work/corpus/"
rc=0
"$work/$name" -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1 \
  "$work/corpus" >"$work/log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  tail -n 60 "$work/log"
  echo "$name: the fuzzer failed (exit $rc)"
  exit 1
fi
grep -E 'stat::number_of_executed_units|stat::new_units_added' "$work/log" | sed "s/^/$name: /"
