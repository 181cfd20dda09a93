#!/bin/sh
# Runs a native test binary, adding the runtime's TSan suppressions when the
# test runs under --config=tsan (Bazel's --test_env replaces a rule's env, so
# the option is added here).
# Usage: run_native.sh BINARY [ARGS...]
set -eu
bin="$1"
shift
# Under TSan, the runtime's suppressions cover the uninstrumented gRPC
# libraries (services/common/tsan.supp, when the test ships it).
if [ "${AGENTMESH_SANITIZER:-}" = tsan ] && [ -f services/common/tsan.supp ]; then
    TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}suppressions=$(pwd)/services/common/tsan.supp"
    export TSAN_OPTIONS
fi
exec "$bin" "$@"
