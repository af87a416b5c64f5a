#!/usr/bin/env bash
# The compose testbed in one command: builds the images locally (deploy/docker/build.sh), starts
# the Docker engine if it is not running, brings the testbed up, shows — and checks — allowed
# and denied requests in both directions, prints the sidecar's access log, and tears it down.
# Exit status 0 only if every request had the expected outcome. Needs root.
# Usage: deploy/compose/run.sh [--keep]   (--keep leaves it running)
set -euo pipefail
cd "$(dirname "$0")"
project=portcullis-demo
keep=${1:-}
dockerd_pid=""

cleanup() {
  if [ "$keep" != --keep ]; then
    docker-compose -p "$project" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ -n "$dockerd_pid" ] && [ "$keep" != --keep ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

for tool in docker dockerd docker-compose; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install docker.io docker-compose)" >&2; exit 1; }
done
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  dockerd >/tmp/portcullis-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/portcullis-dockerd.log >&2; exit 1; }
fi

../docker/build.sh "${PORTCULLIS_PROFILE:-debug}"
for image in proxy injector controller; do
  docker run --rm "portcullis/$image:dev" --version >/dev/null \
    || { echo "portcullis/$image:dev does not run" >&2; exit 1; }
done
# What a cluster provides, made afresh: the controller's serving certificate for its address, a
# CA (the mesh root), and a token issuer with each pod's projected-style token.
rm -rf .creds
"../../target/${PORTCULLIS_PROFILE:-debug}/portcullis-proxy" dev-certs --out .creds \
  --server 172.29.0.50 --token-for demo/app=app --token-for demo/app-tproxy=web >/dev/null
chmod -R a+rX .creds
docker-compose -p "$project" down -v --remove-orphans >/dev/null 2>&1 || true
docker-compose -p "$project" up -d
dc_exec() { docker-compose -p "$project" exec -T "$@"; }

echo "waiting for the sidecars"
for pod in 172.29.0.10 172.29.0.11; do
  for _ in $(seq 1 100); do
    [ "$(dc_exec allowed-client curl -s -m 2 "http://$pod:15020/ready" 2>/dev/null)" = ready ] && break
    sleep 0.2
  done
done
for init in init init-tproxy; do
  init_exit=$(docker inspect -f '{{.State.ExitCode}}' "$(docker-compose -p "$project" ps -q "$init")")
  [ "$init_exit" = 0 ] || { echo "$init container failed"; docker-compose -p "$project" logs "$init"; exit 1; }
done

failures=0
check() {
  local title=$1 want=$2; shift 2
  local got
  got=$(dc_exec "$@" curl -s -o /dev/null -m 5 -w '%{http_code}' "${CURL_ARGS[@]}" || true)
  [ -n "$got" ] || got=000
  if [ "$got" = "$want" ]; then mark=ok; else mark=FAIL; failures=$((failures + 1)); fi
  printf '%-4s %-62s want %s got %s\n' "$mark" "$title" "$want" "$got"
}
echo
echo "== requests (000 = connection refused by the sidecar before the app saw a byte) =="
CURL_ARGS=(http://172.29.0.10:8080/hello);  check "allowed client GET /hello  → app (inbound)"  200 allowed-client
CURL_ARGS=(-X POST http://172.29.0.10:8080/hello); check "allowed client POST /hello → 403 (method not allowed)" 403 allowed-client
CURL_ARGS=(http://172.29.0.10:8080/hello);  check "denied client GET /hello   → refused" 000 denied-client
CURL_ARGS=(http://172.29.0.40:8080/public/x); check "app GET upstream /public/x → allowed (outbound)" 200 --user 1000 app
CURL_ARGS=(http://172.29.0.40:8080/private); check "app GET upstream /private  → 403 (outbound)" 403 --user 1000 app
CURL_ARGS=(http://172.29.0.40:8080/public/x); check "denied client → upstream directly (no sidecar there) → 200" 200 denied-client
CURL_ARGS=(http://172.29.0.11:8080/hello);  check "tproxy: allowed client GET /hello → app"        200 allowed-client
CURL_ARGS=(http://172.29.0.11:8080/hello);  check "tproxy: denied client GET /hello  → refused"    000 denied-client
CURL_ARGS=(-X POST http://172.29.0.11:8080/hello); check "controller: NetworkPolicy admits role=frontend (POST)" 200 allowed-client
CURL_ARGS=(http://172.29.0.11:8080/mesh/x); check "mesh: app → app-tproxy over mTLS, each judging the other's identity" 200 --user 1000 app
CURL_ARGS=(-X POST http://172.29.0.11:8080/mesh/x); check "mesh: app POST → app-tproxy: its identity may only GET → 403" 403 --user 1000 app
# Read whole first: `grep -q` stops at the first match, and with pipefail the writer it cut off
# (SIGPIPE) would fail the check.
tproxy_log=$(docker-compose -p "$project" logs --no-color proxy-tproxy)
if grep -q '"identity":"spiffe://cluster.local/ns/demo/sa/app"' <<<"$tproxy_log"; then mark=ok; else mark=FAIL; failures=$((failures + 1)); fi
printf '%-4s %s\n' "$mark" "mesh: the TPROXY pod logged the caller's certificate identity, issued by the controller"
seen=$(dc_exec allowed-client curl -s -m 5 http://172.29.0.11:8080/hello || true)
if grep -q '"client_ip": "172.29.0.20"' <<<"$seen"; then mark=ok; else mark=FAIL; failures=$((failures + 1)); fi
printf '%-4s %-62s %s\n' "$mark" "tproxy: the app sees the client's own address" "$seen"
echo
echo "== the sidecar's access log =="
docker-compose -p "$project" logs --no-color proxy | grep -o '{"ts".*' || true
echo
if [ "$failures" -ne 0 ]; then
  echo "$failures unexpected outcome(s)"
  docker-compose -p "$project" logs --no-color init proxy init-tproxy proxy-tproxy controller | tail -60
  exit 1
fi
echo "all requests had the expected outcome"
