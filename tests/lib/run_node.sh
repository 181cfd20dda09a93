#!/bin/sh
# Runs a Node integration test with the workspace's node_modules: the
# workspace is found by resolving this harness's runfile symlink back into
# the source tree (AGENTMESH_ROOT, when set, wins).
# Usage: run_node.sh TEST.js [ARGS...]
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
if [ -z "${AGENTMESH_ROOT:-}" ]; then
    dir=$(dirname "$(readlink -f tests/lib/grpc_node.js)")
    while [ "$dir" != "/" ]; do
        if [ -f "$dir/package.json" ] && [ -f "$dir/WORKSPACE" ]; then
            break
        fi
        dir=$(dirname "$dir")
    done
    AGENTMESH_ROOT="$dir"
fi
if [ ! -d "$AGENTMESH_ROOT/node_modules/@grpc/grpc-js" ]; then
    echo "run_node.sh: no node_modules/@grpc/grpc-js under $AGENTMESH_ROOT (run npm ci)" >&2
    exit 1
fi
export AGENTMESH_ROOT
NODE_PATH="$AGENTMESH_ROOT/node_modules"
export NODE_PATH
exec node "$script" "$@"
