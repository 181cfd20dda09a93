#!/bin/bash
# run.sh: build the record decoder's libFuzzer driver with clang
# (-fsanitize=fuzzer,address,undefined) and fuzz it from the seed corpus.
# Usage: eventstore/fuzz/run.sh [SECONDS]   (default 60; needs clang and
# libclang-rt-14-dev). New inputs go to a scratch corpus, not the committed one.
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${FUZZ_OUT:-/tmp/es-record-fuzz}"
mkdir -p "$out/corpus"
clang -g -O1 -std=c11 -D_GNU_SOURCE -DES_LIBFUZZER \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root" \
    "$here/record_fuzz.c" "$root"/eventstore/{record,status,chain,store,append,read,subscribe,kv}.c \
    -llmdb -lcrypto -lpthread -o "$out/record_fuzz"
cp -n "$here"/corpus/* "$out/corpus/" 2>/dev/null || true
exec "$out/record_fuzz" -max_total_time="$secs" -max_len=8192 -print_final_stats=1 \
    "$out/corpus"
