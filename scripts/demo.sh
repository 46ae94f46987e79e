#!/usr/bin/env bash
# Runs the Countersign platform locally as processes on loopback. `make demo` calls it after
# building; SMOKE=1 runs a scripted check instead of waiting, and exits 0 when it passes.
#
# What runs today: the local attestation service (MAA-compatible) and the diagnostic
# provider's inference server. Every process is stopped on Ctrl-C or exit.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${DEMO_STATE:-demo-state}
ATTEST_ADDR=${ATTEST_ADDR:-127.0.0.1:8443}
INFER_ADDR=${INFER_ADDR:-127.0.0.1:8000}
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

step "inference server on http://$INFER_ADDR (ONNX Runtime: $ORT_LIB)"
bin/inference-server --listen "$INFER_ADDR" --model-repository inference-server/models \
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
POLICY

if [ "${SMOKE:-0}" = 1 ]; then
  step "smoke: attest a simulated enclave and verify its token"
  bin/proxy attest --service "https://$ATTEST_ADDR" --ca "$STATE/ca.pem" \
    --sim-platform-key "$STATE/platform.pem" --mrsigner "$(printf 'ab%.0s' {1..32})" \
    --product-id 1 --svn 1 >"$STATE/token.jwt"
  bin/proxy verify --policy "$STATE/policy.yaml" --identity demo --token "$STATE/token.jwt"
  step "smoke: the inference server serves the demo model"
  curl -fsS "http://$INFER_ADDR/v2/models/chest-scan-classifier" | head -c 400; echo
  step "smoke passed"
  exit 0
fi

cat <<EOT

Countersign is running (logs in $STATE/). Try:

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
