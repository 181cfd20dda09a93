#!/bin/bash
# tool_test.sh: es_tool end to end on a fixture store: every command, JSON
# output that parses, exit codes for success, corruption and usage errors.
set -u
TOOL="$1"
FIXTURE="$2"
T="${TEST_TMPDIR:-/tmp}/es-tool-$$"
rm -rf "$T"
mkdir -p "$T"
fails=0

expect() { # expect CODE DESCRIPTION -- command...
    local want="$1" what="$2"
    shift 3
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: $what: exit $got, want $want"
        cat "$T/out" "$T/err"
        fails=$((fails + 1))
    fi
}

"$FIXTURE" "$T/store" 40 || { echo "fixture failed"; exit 1; }

expect 0 "stats" -- "$TOOL" stats "$T/store"
grep -q "last position  40" "$T/out" || { echo "FAIL: stats output"; cat "$T/out"; fails=$((fails + 1)); }
expect 0 "stats json" -- "$TOOL" stats --json "$T/store"
grep -q '"last_position":40' "$T/out" || { echo "FAIL: stats json"; fails=$((fails + 1)); }

expect 0 "dump" -- "$TOOL" dump "$T/store"
[ "$(wc -l <"$T/out")" = 40 ] || { echo "FAIL: dump lines"; fails=$((fails + 1)); }
grep -q '^#1 agent-0@0 agentmesh.v1.AgentRegistered' "$T/out" || { echo "FAIL: dump text"; head -2 "$T/out"; fails=$((fails + 1)); }

expect 0 "dump json" -- "$TOOL" dump --json "$T/store"
/usr/bin/python3 - "$T/out" <<'PY' || fails=$((fails + 1))
import base64, json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 40, len(lines)
for i, line in enumerate(lines):
    e = json.loads(line)
    assert e["position"] == i + 1
    body = json.loads(base64.b64decode(e["data_base64"]))
    assert body["n"] == i and body["s"] == 'quote" tab\t', body
    assert e["metadata"]["actor"] == "tester"
    assert len(e["hash"]) == 64 and len(e["event_id"]) == 36
PY

expect 0 "dump filtered" -- "$TOOL" dump --json --prefix task- --type agentmesh.v1.TaskSubmitted --limit 5 "$T/store"
[ "$(wc -l <"$T/out")" = 5 ] || { echo "FAIL: filtered dump lines"; fails=$((fails + 1)); }
expect 0 "dump stream backward" -- "$TOOL" dump --stream agent-0 --backward "$T/store"
head -1 "$T/out" | grep -q '^#37 agent-0@6 ' || { echo "FAIL: backward stream dump"; head -2 "$T/out"; fails=$((fails + 1)); }

expect 0 "verify" -- "$TOOL" verify "$T/store"
expect 0 "backup" -- "$TOOL" backup "$T/store" "$T/backup"
expect 3 "backup over a store" -- "$TOOL" backup "$T/store" "$T/backup"
expect 0 "restore" -- "$TOOL" restore "$T/backup" "$T/restored"
expect 3 "restore over a store" -- "$TOOL" restore "$T/backup" "$T/restored"
expect 0 "restore --force" -- "$TOOL" restore --force "$T/backup" "$T/restored"
expect 0 "verify restored" -- "$TOOL" verify "$T/restored"

"$FIXTURE" --tamper "$T/store" 17
expect 1 "verify tampered" -- "$TOOL" verify "$T/store"
grep -q "position 17" "$T/out" || { echo "FAIL: verify does not name position 17"; cat "$T/out"; fails=$((fails + 1)); }
expect 1 "restore a tampered backup" -- "$TOOL" restore "$T/store" "$T/other"

expect 2 "no command" -- "$TOOL"
expect 2 "unknown command" -- "$TOOL" frobnicate "$T/store"
expect 2 "unknown option" -- "$TOOL" dump --bogus "$T/store"
expect 2 "missing dir" -- "$TOOL" verify
expect 2 "bad limit" -- "$TOOL" dump --limit x "$T/store"
expect 3 "not a store" -- "$TOOL" stats "$T/nothing-here"

rm -rf "$T"
if [ "$fails" != 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "tool_test: ok"
