#!/usr/bin/env bash
# End-to-end check of the real binary with grpcurl: start `rewrited serve` on
# the bundled example policy, ask it over reflection, and check the replies.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v grpcurl >/dev/null || { echo "e2e-grpcurl: grpcurl not found (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4)" >&2; exit 1; }
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/rewrited" ./cmd/rewrited
"$work/rewrited" serve --listen 127.0.0.1:0 --log-format json 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
  addr=$(jq -r 'select(.msg == "serving") | .addr' "$work/log" 2>/dev/null | head -1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "${addr:-}" ] || { echo "e2e-grpcurl: server did not start"; cat "$work/log"; exit 1; }

fail=0; passed=0
check() { # name, jq filter that must be true, json
  if echo "$3" | jq -e "$2" >/dev/null; then passed=$((passed + 1)); echo "ok   $1"
  else fail=$((fail + 1)); echo "FAIL $1: $3"; fi
}
call() { grpcurl -plaintext -d "$1" "$addr" rewrite.v1.RewriteService/RewriteResponse 2>&1 || true; }

grep -q '"msg":"no --policy given: serving the bundled example policy"' "$work/log" && passed=$((passed + 1)) && echo "ok   logs that it serves the bundled policy" || { fail=$((fail + 1)); echo "FAIL bundled policy log"; }

out=$(grpcurl -plaintext "$addr" list)
check "reflection lists the service" '. == "ok"' "$(echo "$out" | grep -qx rewrite.v1.RewriteService && echo '"ok"' || echo '"missing"')"

out=$(grpcurl -plaintext -d '{"service":"rewrite.v1.RewriteService"}' "$addr" grpc.health.v1.Health/Check)
check "health SERVING" '.status == "SERVING"' "$out"

out=$(call '{"status":250,"response":"OK ids=8f2a","command":"DATA"}')
check "DATA 250 is rewritten" '.status == 250 and .response == "super fantastic!\nOK ids=8f2a" and .rewritten == true and .outcome == "OUTCOME_REWRITTEN" and (.policyVersion | length) == 12' "$out"

out=$(call '{"status":250,"response":"OK"}')
check "command absent is left alone" '.status == 250 and .response == "OK" and .outcome == "OUTCOME_UNCHANGED" and (.rewritten // false) == false' "$out"

out=$(call '{"status":421,"response":"too busy"}')
check "421 closes the connection" '.closeConnection == true' "$out"

out=$(call '{"status":999,"response":"x"}')
check "status 999 is InvalidArgument naming the field" '. == true' "$(echo "$out" | grep -q 'Code: InvalidArgument' && echo "$out" | grep -q 'status:' && echo true || echo false)"

out=$(call '{"status":250,"response":"x","policy":"nope"}')
check "unknown policy is NotFound" '. == true' "$(echo "$out" | grep -q 'Code: NotFound' && echo true || echo false)"

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=
check "SIGTERM drains and exits 0" ". == 0" "$rc"

echo "e2e-grpcurl: $passed passed, $fail failed"
[ "$fail" -eq 0 ]
