#!/usr/bin/env bash
# Runs the runtime's request-decoding libFuzzer driver for FUZZ_SECONDS
# (default 60) on its corpus.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
exec bash "$root/tests/fuzz/run_libfuzzer.sh" rpc_decode_fuzz "${FUZZ_SECONDS:-60}" \
  "$here/corpus" -- "$here/decode_fuzz.c" "$root/services/common/decode.c"
