#!/usr/bin/env bash
# Runs the memory-sync token/cursor libFuzzer driver for FUZZ_SECONDS
# (default 60) on its corpus.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
exec bash "$root/tests/fuzz/run_libfuzzer.sh" memory_sync_token_fuzz "${FUZZ_SECONDS:-60}" \
  "$here/corpus" -- "$here/token_fuzz.c" \
  "$root"/services/memory_sync/{token,names,hlc,seal,conflict}.c
