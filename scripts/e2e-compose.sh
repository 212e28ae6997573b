#!/usr/bin/env bash
# End-to-end check of the docker-compose fleet: build the images, start two
# rewrited replicas, the example SMTP frontend and rewrited-proxy in front of
# it on a copy of the example policy folder, send mail with a real SMTP client
# (Python's smtplib), directly and through the proxy, stop a replica, edit the
# shared policy, check that every replica converges on the new version, and
# tear everything down. Skips (exit 0) when no Docker
# engine answers, so the suite still passes on machines without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "e2e-compose: SKIP: no Docker engine answers (docker info failed)"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "e2e-compose: SKIP: neither 'docker compose' nor 'docker-compose' is installed"
  exit 0
fi
for tool in python3 grpcurl jq curl; do
  command -v "$tool" >/dev/null || { echo "e2e-compose: $tool not found (grpcurl: make tools)" >&2; exit 1; }
done

started=$SECONDS
project="rewritede2e$$"
work=$(mktemp -d)
passed=0 failed=0

dc() { "${compose[@]}" -p "$project" -f docker-compose.yml "$@"; }
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    echo "--- last log lines of the fleet" >&2
    dc logs --no-color --tail 30 >&2 2>/dev/null || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1${2:+: $2}"; }

# The fleet serves a copy of the example policies, so editing it leaves the
# repository alone. The containers run as uid 65532: make the copy readable.
mkdir -p "$work/policies"
cp examples/policies/*.lua "$work/policies/"
chmod 755 "$work" "$work/policies"
chmod 644 "$work/policies/"*.lua
# Empty host ports: Docker picks free ones, read back with `port`.
export REWRITED_POLICY_DIR="$work/policies" SMTP_PORT= PROXY_SMTP_PORT= \
  REWRITED1_GRPC_PORT= REWRITED1_METRICS_PORT= REWRITED2_GRPC_PORT= REWRITED2_METRICS_PORT=

echo "e2e-compose: building images (${compose[*]})"
if ! "${MAKE:-make}" --no-print-directory images >"$work/images.log" 2>&1; then
  tail -30 "$work/images.log" >&2
  echo "e2e-compose: make images failed" >&2
  exit 1
fi
echo "e2e-compose: images built in $((SECONDS - started))s"
dc up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; echo "e2e-compose: up failed" >&2; exit 1; }

replicas=(rewrited1 rewrited2)
declare -A cid grpc_port metrics_port
for s in "${replicas[@]}" frontend proxy; do cid[$s]=$(dc ps -q "$s"); done
# Host ports come from the containers (a restart may move them); `docker port`
# answers far faster than compose v1 does.
hostport() { docker port "${cid[$1]}" "$2" 2>/dev/null | grep -m1 '^127\.0\.0\.1:' | sed 's/.*://' || true; }
read_ports() {
  local r
  for r in "${replicas[@]}"; do
    grpc_port[$r]=$(hostport "$r" 7070/tcp)
    metrics_port[$r]=$(hostport "$r" 9090/tcp)
  done
  smtp_port=$(hostport frontend 2525/tcp)
  proxy_port=$(hostport proxy 2526/tcp)
}
read_ports

# retry SECONDS COMMAND...: run COMMAND every half second until it succeeds
# or SECONDS have passed.
retry() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}
healthy() { # replica: its gRPC health answers SERVING for the rewrite service
  read_ports
  [ -n "${grpc_port[$1]}" ] && grpcurl -plaintext -max-time 2 -d '{"service":"rewrite.v1.RewriteService"}' \
    "127.0.0.1:${grpc_port[$1]}" grpc.health.v1.Health/Check 2>/dev/null | jq -e '.status == "SERVING"' >/dev/null 2>&1
}
metrics() { curl -fsS --max-time 2 "http://127.0.0.1:${metrics_port[$1]}/metrics" 2>/dev/null || true; }
# The versions a replica reports as served for policy "default" (value 1).
info_versions() {
  metrics "$1" | awk '/^rewrited_policy_info\{/ && /policy="default"/ && $NF == 1' |
    sed -E 's/.*version="([^"]*)".*/\1/' | sort -u | paste -sd, -
}
# RewriteResponse calls a replica has handled, from the gRPC server metrics.
handled() {
  metrics "$1" | awk '/^grpc_server_handled_total\{/ && /grpc_method="RewriteResponse"/ { n += $NF } END { print n + 0 }'
}
reload_failures() {
  metrics "$1" | awk '/^rewrited_policy_reloads_total\{/ && /policy="default"/ && /result="failure"/ { n += $NF } END { print n + 0 }'
}
rpc_version() { # replica: policyVersion of a direct call
  grpcurl -plaintext -max-time 2 -d '{"status":250,"response":"OK","command":"DATA"}' \
    "127.0.0.1:${grpc_port[$1]}" rewrite.v1.RewriteService/RewriteResponse 2>/dev/null | jq -r '.policyVersion // empty' 2>/dev/null || true
}

# send_mail prints the DATA reply as JSON: code, text as smtplib joins it, and
# the reply's lines as they were on the wire (from smtplib's debug output).
send_mail() {
  python3 - "${1:-$smtp_port}" <<'EOF'
import ast, contextlib, io, json, smtplib, sys
try:
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
        s.ehlo("e2e.example")
        s.mail("sender@example.org")
        s.rcpt("rcpt@example.net")
        dbg = io.StringIO()
        s.set_debuglevel(1)
        with contextlib.redirect_stderr(dbg):
            code, text = s.data(b"Subject: e2e-compose\r\n\r\nhello\r\n")
        s.set_debuglevel(0)
    raw = [ast.literal_eval(l[len("reply: "):]).decode()
           for l in dbg.getvalue().splitlines() if l.startswith("reply: b")]
    wire = [l.rstrip("\r\n") for l in raw[[i for i, l in enumerate(raw) if l.startswith("354")][-1] + 1:]]
    print(json.dumps({"code": code, "text": text.decode(), "wire": wire}))
except Exception as e:
    print(json.dumps({"error": repr(e)}))
EOF
}
# rewritten FIRST_LINE JSON: the DATA reply is FIRST_LINE over the original.
rewritten() {
  jq -e --arg first "$1" '.code == 250 and (.wire | length) == 2 and .wire[0] == "250-" + $first
    and (.wire[1] | test("^250 OK ids=[0-9a-f]+$")) and .text == $first + "\n" + .wire[1][4:]' <<<"$2" >/dev/null 2>&1
}
# mails N FIRST_LINE: send N messages; every DATA reply must be rewritten.
mails() {
  local i out
  for ((i = 0; i < $1; i++)); do
    out=$(send_mail)
    rewritten "$2" "$out" || { echo "$out"; return 1; }
  done
}

# 1. The fleet starts: both replicas healthy, the frontend answers.
for r in "${replicas[@]}"; do
  if retry 45 healthy "$r"; then ok "$r is SERVING (gRPC health)"; else fail "$r is SERVING (gRPC health)"; fi
done
# The frontend connects on its first call; allow the first few to fall back.
first_mail() { out=$(send_mail) && rewritten "super fantastic!" "$out"; }
if retry 30 first_mail; then ok "smtplib DATA reply is rewritten: $(jq -c .wire <<<"$out")"; else fail "first DATA reply is rewritten" "$out"; fi

# 1b. rewrited-proxy in front of the frontend: the frontend's rewritten DATA
# reply passes through the policy once more, so the line is added twice.
through_proxy() {
  out=$(send_mail "$proxy_port") && jq -e '.code == 250 and (.wire | length) == 3
    and .wire[0] == "250-super fantastic!" and .wire[1] == "250-super fantastic!"
    and (.wire[2] | test("^250 OK ids=[0-9a-f]+$"))' <<<"$out" >/dev/null 2>&1
}
if retry 30 through_proxy; then ok "smtplib through rewrited-proxy: $(jq -c .wire <<<"$out")"; else fail "a message through rewrited-proxy is rewritten" "$out"; fi

# 2. Every replica serves the same policy version, in its metrics and replies.
v0=$(info_versions rewrited1)
if [ -n "$v0" ] && [[ $v0 != *,* ]] && [ "$(info_versions rewrited2)" = "$v0" ]; then
  ok "both replicas report rewrited_policy_info version $v0"
else fail "both replicas report one rewrited_policy_info version" "rewrited1=$v0 rewrited2=$(info_versions rewrited2)"; fi
for r in "${replicas[@]}"; do
  got=$(rpc_version "$r")
  if [ -n "$got" ] && [ "$got" = "$v0" ]; then ok "$r replies carry policyVersion $got"; else fail "$r replies carry policyVersion $v0" "got '$got'"; fi
done

# 3. DNS round-robin: the frontend's calls reach both replicas.
declare -A before
for r in "${replicas[@]}"; do before[$r]=$(handled "$r"); done
if out=$(mails 8 "super fantastic!"); then ok "8 more messages rewritten"; else fail "8 more messages rewritten" "$out"; fi
spread=""
for r in "${replicas[@]}"; do spread+=" $r+$(($(handled "$r") - ${before[$r]}))"; done
if [[ $spread != *+0* ]]; then ok "round-robin spreads the calls over both replicas:$spread"; else fail "round-robin reaches both replicas" "$spread"; fi

# 4. One replica stops: mail is still rewritten, by the other one.
dc stop rewrited1 >/dev/null 2>&1 || true
if [ "$(docker inspect -f '{{.State.Running}}' "${cid[rewrited1]}")" = false ]; then ok "rewrited1 stopped"; else fail "rewrited1 stopped"; fi
if out=$(mails 5 "super fantastic!"); then ok "5 messages rewritten with rewrited1 stopped"; else fail "messages rewritten with rewrited1 stopped" "$out"; fi
dc start rewrited1 >/dev/null 2>&1 || true
if retry 45 healthy rewrited1; then ok "rewrited1 back and SERVING"; else fail "rewrited1 back and SERVING"; fi

# 5. Edit the shared policy the way editors do (write aside, rename over):
# every replica reloads it live and reports the new version.
replace_policy() { # file: stdin becomes the policy file, written aside and renamed over
  cat >"$work/policies/.$1.new"
  chmod 644 "$work/policies/.$1.new"
  mv -f "$work/policies/.$1.new" "$work/policies/$1"
}
sed 's/super fantastic!/super fantastic, v2!/' "$work/policies/default.lua" | replace_policy default.lua
converged() {
  v1=$(info_versions rewrited1)
  [ -n "$v1" ] && [ "$v1" != "$v0" ] && [[ $v1 != *,* ]] && [ "$(info_versions rewrited2)" = "$v1" ]
}
if retry 30 converged; then ok "every replica reloaded: version $v0 -> $v1"; else fail "every replica reports a new version" "rewrited1=$(info_versions rewrited1) rewrited2=$(info_versions rewrited2) (was $v0)"; fi
for r in "${replicas[@]}"; do
  got=$(rpc_version "$r")
  if [ -n "$got" ] && [ "$got" = "${v1:-}" ] && [ "$got" != "$v0" ]; then ok "$r replies carry the new policyVersion $got"; else fail "$r replies carry the new policyVersion" "got '$got'"; fi
done
if out=$(mails 4 "super fantastic, v2!"); then ok "mail gets the new rewrite: 250-super fantastic, v2!"; else fail "mail gets the new rewrite" "$out"; fi

# 6. A broken edit is refused by every replica: each counts the failure and
# keeps serving the last good version.
printf '%s\n' "kumo.on('smtp_server_rewrite_response', function(" | replace_policy default.lua
refused() { [ "$(reload_failures rewrited1)" -gt 0 ] && [ "$(reload_failures rewrited2)" -gt 0 ]; }
if retry 30 refused; then ok "every replica refused the broken policy (rewrited_policy_reloads_total result=failure)"; else fail "every replica refused the broken policy" "failures: rewrited1=$(reload_failures rewrited1) rewrited2=$(reload_failures rewrited2)"; fi
if [ "$(info_versions rewrited1)" = "${v1:-}" ] && [ "$(info_versions rewrited2)" = "${v1:-}" ]; then ok "every replica still serves $v1"; else fail "every replica still serves ${v1:-}" "rewrited1=$(info_versions rewrited1) rewrited2=$(info_versions rewrited2)"; fi
if out=$(mails 2 "super fantastic, v2!"); then ok "mail still gets the last good rewrite"; else fail "mail still gets the last good rewrite" "$out"; fi

echo "e2e-compose: took $((SECONDS - started))s"
echo "e2e-compose: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
