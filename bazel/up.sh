#!/usr/bin/env bash
# up.sh: installs what is missing, builds, and runs the whole mesh with its
# embedded defaults (data under ./data). Ctrl-C stops everything.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash bazel/setup.sh
bazel build //...
exec "$(bazel info bazel-bin 2>/dev/null)/services/agentmesh/agentmesh" up --data "$here/data" --bin "$(bazel info bazel-bin 2>/dev/null)" "$@"
