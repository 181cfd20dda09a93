#!/usr/bin/env bash
# setup.sh: installs what agentmesh needs to build, run and test, from Debian's
# archive and npm only, and checks the toolchain. Idempotent: packages already
# present are left alone, and a second run installs nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# For tests of this script: look for the probes under another root, and only
# report what is missing instead of installing it.
root=${AGENTMESH_SETUP_ROOT:-}
check_only=${AGENTMESH_SETUP_CHECK_ONLY:-0}

# Debian package -> a file or command that proves it is usable.
packages=(
  "bazel-bootstrap:/usr/bin/bazel"
  "pkg-config:/usr/bin/pkg-config"
  "gcc:/usr/bin/gcc"
  "clang:/usr/bin/clang"
  "libclang-rt-14-dev:/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a"
  "libgrpc-dev:/usr/include/grpc/grpc.h"
  "protobuf-compiler:/usr/bin/protoc"
  "protobuf-c-compiler:/usr/bin/protoc-c"
  "libprotobuf-c-dev:/usr/include/protobuf-c/protobuf-c.h"
  "grpc-proto:/usr/share/grpc-proto/grpc/health/v1/health.proto"
  "liblmdb-dev:/usr/include/lmdb.h"
  "lmdb-utils:/usr/bin/mdb_stat"
  "libnats-dev:/usr/include/nats/nats.h"
  "nats-server:/usr/sbin/nats-server"
  "libssl-dev:/usr/include/openssl/evp.h"
  "libmicrohttpd-dev:/usr/include/microhttpd.h"
  "libjansson-dev:/usr/include/jansson.h"
  "python3-grpcio:/usr/lib/python3/dist-packages/grpc/__init__.py"
  "python3-protobuf:/usr/lib/python3/dist-packages/google/protobuf/__init__.py"
  "python3-lmdb:/usr/lib/python3/dist-packages/lmdb/__init__.py"
  "nodejs:/usr/bin/node"
  "npm:/usr/bin/npm"
  "curl:/usr/bin/curl"
  "xxd:/usr/bin/xxd"
)

say() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*}
  probe=${entry#*:}
  if [ ! -e "$root$probe" ]; then
    # node and npm may come from elsewhere than Debian's package; accept them.
    case "$pkg" in
      nodejs) [ -z "$root" ] && command -v node >/dev/null 2>&1 && continue ;;
      npm) [ -z "$root" ] && command -v npm >/dev/null 2>&1 && continue ;;
    esac
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || [ "$check_only" = 1 ]; then
    say "missing Debian packages: ${missing[*]}"
    say "install them as root:  apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
  say "installing from Debian's archive: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/agentmesh-apt.log 2>&1; then
    apt-get update -q >>/tmp/agentmesh-apt.log 2>&1 || true
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/agentmesh-apt.log 2>&1; then
      tail -n 20 /tmp/agentmesh-apt.log >&2
      say "apt-get could not install: ${missing[*]} (full log: /tmp/agentmesh-apt.log)"
      exit 1
    fi
  fi
fi

# Verify each probe now exists, naming the package that provides it.
bad=0
for entry in "${packages[@]}"; do
  pkg=${entry%%:*}
  probe=${entry#*:}
  case "$pkg" in
    nodejs) [ -z "$root" ] && command -v node >/dev/null 2>&1 && continue ;;
    npm) [ -z "$root" ] && command -v npm >/dev/null 2>&1 && continue ;;
  esac
  if [ ! -e "$root$probe" ]; then
    say "still missing $probe: install the Debian package '$pkg' (apt-get install $pkg)"
    bad=1
  fi
done
for lib in grpc gpr libprotobuf-c lmdb libnats openssl libmicrohttpd jansson; do
  if ! pkg-config --exists "$lib"; then
    say "pkg-config cannot find '$lib': its -dev package is missing or broken"
    bad=1
  fi
done
[ "$bad" -eq 0 ] || exit 1

# Node test clients, exactly as locked.
[ "$check_only" = 1 ] && exit 0
if [ ! -d "$here/node_modules/@grpc/grpc-js" ] || [ ! -d "$here/node_modules/nats" ] ||
   [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  say "installing Node test dependencies from package-lock.json"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2 || {
    say "npm ci failed: the npm registry must be reachable for the first install"
    exit 1
  }
fi
