#!/usr/bin/env bash
# up_test: `agentmesh up` starts a real nats-server with JetStream in its data
# folder, reports it up, and on SIGINT stops it and exits 0.
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

env -u GOGC -u GOMAXPROCS "$bin" up --data "$tmp/data" --bin "$tmp/nothing-built" --nats-port "$port" 2>"$tmp/log" &
pid=$!

deadline=$((SECONDS + 30))
until grep -q 'agentmesh is up' "$tmp/log"; do
  [ $SECONDS -lt $deadline ] || { echo "not up in time"; cat "$tmp/log"; exit 1; }
  kill -0 $pid 2>/dev/null || { echo "supervisor died"; cat "$tmp/log"; exit 1; }
  sleep 0.1
done
# JetStream is on: the server's store folder exists and it answers INFO with jetstream.
/usr/bin/python3 - "$port" <<'PY'
import socket, sys, json
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
line = s.makefile().readline()
assert line.startswith("INFO "), line
info = json.loads(line[5:])
assert info.get("jetstream") is True, info
print("nats-server", info["version"], "jetstream on")
PY
[ -d "$tmp/data/nats/jetstream" ] || { echo "no JetStream store in data/nats"; exit 1; }
grep -q 'agent-manager is not built yet' "$tmp/log"
# nats-server runs with GOGC and GOMAXPROCS as OPERATIONS.md gives them,
# unless the environment sets its own (checked below).
env_of() {
  local p
  p=$(pgrep -f -- "-p $1( |\$)" | head -1)
  [ -n "$p" ] || { echo "no nats-server on port $1"; exit 1; }
  tr '\0' '\n' < /proc/$p/environ | sed -n "s/^$2=//p"
}
procs=$(/usr/bin/python3 -c 'import os; print(max(1, len(os.sched_getaffinity(0)) // 2))')
[ "$(env_of "$port" GOGC)" = 400 ] || { echo "nats-server GOGC is '$(env_of "$port" GOGC)', want 400"; exit 1; }
[ "$(env_of "$port" GOMAXPROCS)" = "$procs" ] || { echo "nats-server GOMAXPROCS is '$(env_of "$port" GOMAXPROCS)', want $procs"; exit 1; }
grep -q "GOGC=400, GOMAXPROCS=$procs" "$tmp/log"

kill -INT $pid
rc=0; wait $pid || rc=$?
[ "$rc" -eq 0 ] || { echo "exit code $rc"; cat "$tmp/log"; exit 1; }
grep -q 'stopped nats-server' "$tmp/log"
if /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), timeout=1)" 2>/dev/null; then
  echo "nats-server still listening after stop"; exit 1
fi

# An operator's GOGC and GOMAXPROCS win.
port2=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GOGC=150 GOMAXPROCS=3 "$bin" up --data "$tmp/data2" --bin "$tmp/nothing-built" --nats-port "$port2" 2>"$tmp/log2" &
pid=$!
deadline=$((SECONDS + 30))
until grep -q 'agentmesh is up' "$tmp/log2"; do
  [ $SECONDS -lt $deadline ] || { echo "second run not up in time"; cat "$tmp/log2"; exit 1; }
  sleep 0.1
done
[ "$(env_of "$port2" GOGC)" = 150 ] || { echo "nats-server GOGC is '$(env_of "$port2" GOGC)', want the environment's 150"; exit 1; }
[ "$(env_of "$port2" GOMAXPROCS)" = 3 ] || { echo "nats-server GOMAXPROCS is '$(env_of "$port2" GOMAXPROCS)', want the environment's 3"; exit 1; }
grep -q 'GOGC=150, GOMAXPROCS=3' "$tmp/log2"
kill -INT $pid
rc=0; wait $pid || rc=$?
[ "$rc" -eq 0 ] || { echo "second run: exit code $rc"; cat "$tmp/log2"; exit 1; }
echo "up_test: ok"
