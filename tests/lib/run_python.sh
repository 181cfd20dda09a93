#!/bin/sh
# Runs a Python integration test with Debian's /usr/bin/python3 (the one that
# has grpcio and protobuf), with tests/lib on the module path. Bazel runs
# tests from the runfiles root, so paths below are relative to it.
# Usage: run_python.sh TEST.py [ARGS...]
set -eu
script="$1"
shift
# Under TSan, the runtime's suppressions cover the uninstrumented gRPC
# libraries (services/common/tsan.supp, when the test ships it).
if [ "${AGENTMESH_SANITIZER:-}" = tsan ] && [ -f services/common/tsan.supp ]; then
    TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}suppressions=$(pwd)/services/common/tsan.supp"
    export TSAN_OPTIONS
fi
# Temporary folders (stores, nats-server data) go under the test's own
# temporary directory, which Bazel owns, instead of piling up in /tmp.
if [ -n "${TEST_TMPDIR:-}" ]; then
    TMPDIR="$TEST_TMPDIR"
    export TMPDIR
fi
PYTHONPATH="$(pwd)/tests/lib${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -u "$script" "$@"
