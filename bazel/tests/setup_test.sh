#!/usr/bin/env bash
# setup_test: with the toolchain missing, bazel/setup.sh names every missing
# Debian package and the command that installs it, and fails; with it
# present, it passes and installs nothing.
set -uo pipefail
setup=bazel/setup.sh
out=$(AGENTMESH_SETUP_ROOT=/nonexistent-root AGENTMESH_SETUP_CHECK_ONLY=1 bash "$setup" 2>&1)
rc=$?
[ "$rc" -ne 0 ] || { echo "setup.sh succeeded with nothing installed"; exit 1; }
for pkg in bazel-bootstrap libgrpc-dev protobuf-c-compiler liblmdb-dev libnats-dev nats-server libssl-dev; do
  echo "$out" | grep -q "missing Debian packages:.*\b$pkg\b" || { echo "not named: $pkg"; echo "$out"; exit 1; }
done
echo "$out" | grep -q "apt-get install -y" || { echo "no install command given"; echo "$out"; exit 1; }
out=$(AGENTMESH_SETUP_CHECK_ONLY=1 bash "$setup" 2>&1) || { echo "setup.sh fails on this machine: $out"; exit 1; }
echo "setup_test: ok"
