#!/usr/bin/env bash
# Runs the Countersign platform locally as processes on loopback. `make demo` calls it after
# building; SMOKE=1 runs a scripted check instead of waiting, and exits 0 when it passes.
#
# What runs: the local attestation service (MAA-compatible); redis-server (AOF, appendfsync
# always) behind its sidecar; the diagnostic provider's inference server behind its sidecar; the
# records API behind its sidecar (public HTTPS for the portal, outbound TCP to Redis and gRPC to
# the inference server: INFERENCE_PROTOCOL=rest for its REST API instead).
# docs/healthcare-demo.md explains it. Every process is stopped on Ctrl-C
# or exit.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${DEMO_STATE:-demo-state}
ATTEST_ADDR=${ATTEST_ADDR:-127.0.0.1:8443}
INFER_ADDR=${INFER_ADDR:-127.0.0.1:8000}
INFER_PROXY_ADDR=${INFER_PROXY_ADDR:-127.0.0.1:8001}
INFER_GRPC_ADDR=${INFER_GRPC_ADDR:-127.0.0.1:8002}
INFER_GRPC_PROXY_ADDR=${INFER_GRPC_PROXY_ADDR:-127.0.0.1:8003}
INFERENCE_PROTOCOL=${INFERENCE_PROTOCOL:-grpc} # grpc (an HTTP/2 attested hop) or rest
REDIS_PORT=${REDIS_PORT:-6390}
REDIS_PROXY_ADDR=${REDIS_PROXY_ADDR:-127.0.0.1:6391}
RECORDS_ADDR=${RECORDS_ADDR:-127.0.0.1:8081}
PORTAL_ADDR=${PORTAL_ADDR:-127.0.0.1:9443}
RECORDS_REDIS_OUT=127.0.0.1:6380 RECORDS_INFER_OUT=127.0.0.1:7001 RECORDS_INFER_GRPC_OUT=127.0.0.1:7002
ADMIN_RECORDS=127.0.0.1:9901 ADMIN_INFER=127.0.0.1:9902 ADMIN_REDIS=127.0.0.1:9903 ADMIN_APP=127.0.0.1:9081
MR_RECORDS=$(printf 'a1%.0s' {1..32}) MR_INFER=$(printf 'b2%.0s' {1..32}) MR_REDIS=$(printf 'c3%.0s' {1..32})
ORT_LIB=${ONNXRUNTIME_LIB:-${COUNTERSIGN_CACHE:-.cache}/onnxruntime/1.24.1/libonnxruntime.so.1}
mkdir -p "$STATE"

pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo "demo: stopping ${#pids[@]} process(es)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

wait_for() { # url, what, [curl args...]
  local url=$1 what=$2; shift 2
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo: $what did not become ready at $url (logs in $STATE/)" >&2
  exit 1
}

step "simulated platform key"
[ -f "$STATE/platform.pem" ] || bin/proxy sim-platform-key --out "$STATE/platform.pem" >/dev/null
echo "    $STATE/platform.pem (the simulated SGX platform; only the local service trusts it)"

step "local attestation service on https://$ATTEST_ADDR"
bin/attestation-service --listen "$ATTEST_ADDR" --issuer "https://$ATTEST_ADDR" \
  --signing-key "$STATE/signing.pem" --signing-cert "$STATE/signing-cert.pem" \
  --tls-ca-out "$STATE/ca.pem" --sim-platform-key "$STATE/platform.pem.pub" \
  >"$STATE/attestation-service.log" 2>&1 &
pids+=($!)
wait_for "https://$ATTEST_ADDR/certs" "the attestation service" --cacert "$STATE/ca.pem"

step "inference server on http://$INFER_ADDR and gRPC (h2c) $INFER_GRPC_ADDR (ONNX Runtime: $ORT_LIB)"
bin/inference-server --listen "$INFER_ADDR" --grpc-listen "$INFER_GRPC_ADDR" --model-repository inference-server/models \
  --onnxruntime-lib "$ORT_LIB" >"$STATE/inference-server.log" 2>&1 &
pids+=($!)
wait_for "http://$INFER_ADDR/v2/health/ready" "the inference server"

cat >"$STATE/policy.yaml" <<POLICY
# Development policy: trusts the local attestation service and simulated (debuggable) enclaves.
issuers:
  - url: https://$ATTEST_ADDR
    caFile: ca.pem
identities:
  demo:
    mrsigner: ["$(printf 'ab%.0s' {1..32})"]
    productId: 1
    minSvn: 1
    allowDebug: true
  records-api: {mrenclave: ["$MR_RECORDS"], allowDebug: true}
  inference:   {mrenclave: ["$MR_INFER"], allowDebug: true}
  redis:       {mrenclave: ["$MR_REDIS"], allowDebug: true}
POLICY

proxy_config() { # name identity mrenclave admin listeners-yaml
  cat >"$STATE/$1.yaml" <<CFG
# $2's sidecar (simulated enclave; see docs/proxy-config.md)
attester: {type: sim, simPlatformKey: platform.pem, simIdentity: {mrenclave: "$3"}}
attestationService: {url: "https://$ATTEST_ADDR", caFile: ca.pem}
policyFile: policy.yaml
identity: $2
admin: {listen: "$4"}
$5
CFG
}
start_proxy() { # name identity mrenclave admin listeners-yaml
  proxy_config "$@"
  bin/proxy run --config "$STATE/$1.yaml" >"$STATE/$1.log" 2>&1 &
  pids+=($!)
  wait_for "http://$4/readyz" "the $2 sidecar"
}

if ! command -v redis-server >/dev/null; then
  step "redis-server not found: installing the platform's Debian packages"
  scripts/install-deps.sh
fi
step "redis-server on 127.0.0.1:$REDIS_PORT (AOF, appendfsync always) and its sidecar on $REDIS_PROXY_ADDR"
mkdir -p "$STATE/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STATE/redis" --appendonly yes \
  --appendfsync always --save "" >"$STATE/redis-server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
start_proxy redis-proxy redis "$MR_REDIS" "$ADMIN_REDIS" "inbound:
  - {name: redis, listen: \"$REDIS_PROXY_ADDR\", protocol: tcp, forwardTo: \"127.0.0.1:$REDIS_PORT\", allow: [records-api]}"

step "inference server's sidecar: REST on $INFER_PROXY_ADDR, gRPC on $INFER_GRPC_PROXY_ADDR (attested mTLS; callers: records-api)"
start_proxy inference-proxy inference "$MR_INFER" "$ADMIN_INFER" "inbound:
  - {name: oip, listen: \"$INFER_PROXY_ADDR\", protocol: http, forwardTo: \"$INFER_ADDR\", allow: [records-api]}
  - {name: oip-grpc, listen: \"$INFER_GRPC_PROXY_ADDR\", protocol: grpc, forwardTo: \"$INFER_GRPC_ADDR\", allow: [records-api]}"

step "records API's sidecar: portal on https://$PORTAL_ADDR, outbound to Redis and the inference server"
if [ ! -f "$STATE/portal-cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=healthcare demo portal" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$STATE/portal-key.pem" -out "$STATE/portal-cert.pem" >/dev/null 2>&1
fi
start_proxy records-proxy records-api "$MR_RECORDS" "$ADMIN_RECORDS" "inbound:
  - {name: portal, listen: \"$PORTAL_ADDR\", protocol: http, forwardTo: \"$RECORDS_ADDR\", public: true, certFile: portal-cert.pem, keyFile: portal-key.pem}
outbound:
  - {name: redis, listen: \"$RECORDS_REDIS_OUT\", protocol: tcp, upstream: \"$REDIS_PROXY_ADDR\", upstreamIdentity: [redis]}
  - {name: inference, listen: \"$RECORDS_INFER_OUT\", protocol: http, upstream: \"$INFER_PROXY_ADDR\", upstreamIdentity: [inference], authority: inference}
  - {name: inference-grpc, listen: \"$RECORDS_INFER_GRPC_OUT\", protocol: grpc, upstream: \"$INFER_GRPC_PROXY_ADDR\", upstreamIdentity: [inference], authority: inference}"

step "records API on http://$RECORDS_ADDR (plain HTTP, loopback; only its sidecar is public)"
cat >"$STATE/portal-config.json" <<JSON
{
  "attestationURL": "http://$ADMIN_RECORDS/.well-known/attestation",
  "issuers": [{"url": "https://$ATTEST_ADDR", "certsURL": "https://$ATTEST_ADDR/certs"}],
  "identities": {"records-api": {"mrenclave": ["$MR_RECORDS"]}, "inference": {"mrenclave": ["$MR_INFER"]}}
}
JSON
echo "    inference over $INFERENCE_PROTOCOL"
bin/records --listen "$RECORDS_ADDR" --admin-listen "$ADMIN_APP" --redis-addr "$RECORDS_REDIS_OUT" \
  --inference-url "http://$RECORDS_INFER_OUT" --inference-protocol "$INFERENCE_PROTOCOL" --inference-grpc-addr "$RECORDS_INFER_GRPC_OUT" \
  --portal-dir sample-apps/portal \
  --portal-config "$STATE/portal-config.json" >"$STATE/records.log" 2>&1 &
pids+=($!)
wait_for "http://$ADMIN_APP/readyz" "the records API"

if [ "${SMOKE:-0}" = 1 ]; then
  step "smoke: attest a simulated enclave and verify its token"
  bin/proxy attest --service "https://$ATTEST_ADDR" --ca "$STATE/ca.pem" \
    --sim-platform-key "$STATE/platform.pem" --mrsigner "$(printf 'ab%.0s' {1..32})" \
    --product-id 1 --svn 1 >"$STATE/token.jwt"
  bin/proxy verify --policy "$STATE/policy.yaml" --identity demo --token "$STATE/token.jwt"
  step "smoke: the inference server serves the demo model"
  curl -fsS "http://$INFER_ADDR/v2/models/chest-scan-classifier" | head -c 400; echo
  P="https://$PORTAL_ADDR"; C=(--cacert "$STATE/portal-cert.pem" -fsS)
  step "smoke: create a patient through the records API's sidecar"
  pid=$(curl "${C[@]}" -H 'Content-Type: application/json' -H "Idempotency-Key: smoke-$$" \
    -d '{"name":"Smoke Test","dateOfBirth":"1970-01-01"}' "$P/api/patients" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
  [ -n "$pid" ] || { echo "demo: no patient id" >&2; exit 1; }
  echo "    patient $pid"
  step "smoke: upload a scan (records API -> sidecar -> attested mTLS ($INFERENCE_PROTOCOL) -> inference sidecar -> ONNX Runtime)"
  curl "${C[@]}" -H 'Content-Type: image/png' -H "Idempotency-Key: smoke-scan-$$" \
    --data-binary @inference-server/models/chest-scan-classifier/samples/nodule-1.png \
    "$P/api/patients/$pid/scans" >"$STATE/scan.json"
  step "smoke: fetch the diagnosis and its receipt"
  curl "${C[@]}" "$P/api/patients/$pid/records" >"$STATE/records.json"
  echo "    diagnosis: $(grep -o '"label":"[^"]*"' "$STATE/records.json" | head -1 | cut -d'"' -f4)"
  grep -o '"receipt":"[^"]*"' "$STATE/records.json" | head -1 | cut -d'"' -f4 >"$STATE/receipt.txt"
  [ -s "$STATE/receipt.txt" ] || { echo "demo: the diagnosis has no receipt" >&2; exit 1; }
  step "smoke: verify the receipt offline"
  bin/proxy verify --policy "$STATE/policy.yaml" --receipt "$STATE/receipt.txt" --identity records-api --answerer inference
  step "smoke passed"
  exit 0
fi

cat <<EOT

Countersign is running (logs in $STATE/).

  Hospital portal:  https://$PORTAL_ADDR/

The certificates are self-signed for the demo: open https://$ATTEST_ADDR/certs and the portal
once and accept the warning (or trust $STATE/portal-cert.pem and $STATE/ca.pem). Then create a
patient, upload a scan from inference-server/models/chest-scan-classifier/samples/, and see the
attestation and the receipt verified in the browser. Also try:

  bin/proxy attest --service https://$ATTEST_ADDR --ca $STATE/ca.pem \\
      --sim-platform-key $STATE/platform.pem --mrsigner $(printf 'ab%.0s' {1..32}) \\
      --product-id 1 --svn 1 > $STATE/token.jwt
  bin/proxy verify --policy $STATE/policy.yaml --token $STATE/token.jwt
  curl -s http://$INFER_ADDR/v2/models/chest-scan-classifier

Press Ctrl-C to stop everything.
EOT
wait -n "${pids[@]}"
echo "demo: a process exited; see $STATE/*.log" >&2
exit 1
