#!/usr/bin/env bash
# test.sh: the one command that runs every agentmesh test. It installs what is
# missing (bazel/setup.sh), builds offline, runs `bazel test //...` plain, under
# ASan+UBSan, the threaded tests under TSan, and each fuzz driver briefly on its
# corpus, then prints one closing line: "N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

bash bazel/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

export AGENTMESH_ROOT="$here"
fuzz_seconds=${AGENTMESH_FUZZ_SECONDS:-20}
passed=0
failed=0
log=$(mktemp -d)

# Runs one bazel test invocation and adds its results to the totals.
run_bazel() {
  local name=$1
  shift
  echo "== bazel test ($name) $*"
  bazel test --keep_going "$@" 2>&1 | tee "$log/$name.log" | grep -E '^(//|Executed|INFO: Build|ERROR|FAIL)' 
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log/$name.log")
  f=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FLAKY|INCOMPLETE)' "$log/$name.log")
  # Exit code 4 means the filter matched no test: nothing ran, nothing failed.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 4 ] && [ "$f" -eq 0 ]; then
    echo "bazel test ($name) failed with exit code $rc before reporting tests"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

echo "== bazel build //..."
if ! bazel build --keep_going //... 2>&1 | tail -n 30; then
  failed=$((failed + 1))
fi
run_bazel plain //...
run_bazel asan --config=asan //...
run_bazel tsan --config=tsan --test_tag_filters=tsan //...

# Fuzz drivers: each */fuzz/run.sh builds its libFuzzer driver and runs it on
# its committed corpus for a short while.
for runner in $(git ls-files '*/fuzz/run.sh'); do
  echo "== fuzz $runner (${fuzz_seconds}s)"
  if FUZZ_SECONDS=$fuzz_seconds bash "$runner" >"$log/fuzz.log" 2>&1; then
    tail -n 3 "$log/fuzz.log"
    passed=$((passed + 1))
  else
    tail -n 40 "$log/fuzz.log"
    echo "FAILED: $runner"
    failed=$((failed + 1))
  fi
done

rm -rf "$log"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
