#!/bin/bash
# run.sh: build the agent manager's fold/snapshot libFuzzer driver with clang
# (-fsanitize=fuzzer,address,undefined) and fuzz it from the seed corpus.
# Usage: services/agent_manager/fuzz/run.sh [SECONDS]   (default 60; needs
# clang and libclang-rt-14-dev). New inputs go to a scratch corpus.
set -euo pipefail
secs="${1:-${FUZZ_SECONDS:-60}}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${FUZZ_OUT:-/tmp/am-fold-fuzz}"
mkdir -p "$out/corpus" "$out/gen"
# The protobuf-c code of the API, generated as the build does.
protoc-c -I"$root/api" -I/usr/include -I/usr/share/grpc-proto --c_out="$out/gen" \
    agentmesh/v1/agents.proto agentmesh/v1/events.proto agentmesh/v1/memory.proto \
    google/api/annotations.proto google/api/http.proto google/protobuf/descriptor.proto
am="$root/services/agent_manager"
clang -g -O1 -std=c11 -D_GNU_SOURCE -DAM_LIBFUZZER \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root" -I"$out/gen" \
    "$here/fold_fuzz.c" "$am"/{state,snapshot,map,model}.c \
    "$out"/gen/agentmesh/v1/{agents,events,memory}.pb-c.c \
    "$out"/gen/google/api/{annotations,http}.pb-c.c \
    "$out"/gen/google/protobuf/descriptor.pb-c.c \
    "$root"/eventstore/{record,status,chain,store,append,read,subscribe,kv}.c \
    -lprotobuf-c -llmdb -lcrypto -lpthread -o "$out/fold_fuzz"
cp -n "$here"/corpus/* "$out/corpus/" 2>/dev/null || true
exec "$out/fold_fuzz" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
    "$out/corpus"
