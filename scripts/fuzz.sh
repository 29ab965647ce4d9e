#!/usr/bin/env bash
# Fuzz stage: schemathesis generates requests from the OpenAPI document and sends them to the
# real binary, once with an agent token (the operations that accept one) and once with the
# admin key (every other operation). It must end with zero failures of these checks: no 5xx,
# every status and content type documented, every response body and header as documented.
#
# Runs on a database and a Redis prefix of its own, both removed at the end. Postgres is the
# server of DATABASE_URL (default 127.0.0.1:5432), Redis is REDIS_URL (default 127.0.0.1:6379).
# Knobs: FUZZ_AGENT_EXAMPLES / FUZZ_ADMIN_EXAMPLES (per operation, default 200 / 80: the agent
# operations write what agents send, so they get more), FUZZ_SEED (default fixed, so a CI
# failure reproduces), FUZZ_TIME_LIMIT (seconds per run, default 600). About 3 minutes on a
# quiet 2-core machine with the defaults.
#
# Exclusions: none. The `stateful` phase is not run: the document declares no links between
# operations, so it would have nothing to chain.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

st_version=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/erp-sync/schemathesis-$st_version"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    echo "fuzz: installing schemathesis $st_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version"
fi

master="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
server="${master%/*}"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
suffix="$(date +%s)_$$"
database="erp_sync_fuzz_$suffix"
prefix="erp-sync-fuzz-$suffix"
api_key="fuzz-api-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
agent_secret="fuzz-agent-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
work=$(mktemp -d)
pid=""

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    psql "$server/postgres" -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -u "$redis_url" --scan --pattern "$prefix:*" | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

psql "$server/postgres" -qc "CREATE DATABASE \"$database\""

binary="$root/target/debug/erp-sync"
if [[ ! -x "$binary" ]]; then
    cargo build --locked --bin erp-sync
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

# Budgets high enough that the fuzzer reaches the routes' logic rather than 429 (429 is
# documented, so it would not fail the run, only hide the rest).
env APP_ENV=development HOST=127.0.0.1 PORT="$port" \
    DATABASE_URL="$server/$database" REDIS_URL="$redis_url" REDIS_PREFIX="$prefix" \
    API_SECRET="$api_key" AGENT_SECRET="$agent_secret" ORDER_SYNC_ENABLED=false RUST_LOG=warn NO_COLOR=1 \
    REGISTER_RATE_LIMIT_PER_MIN=1000000 INGEST_RATE_LIMIT_PER_MIN=1000000 \
    INGEST_BATCH_RATE_LIMIT_PER_MIN=1000000 \
    "$binary" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 60); do
    if curl -fsS "$base/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
    sleep 1
done
curl -fsS "$base/health" >/dev/null
"$binary" openapi >"$work/openapi.json"

# One agent, its mappings, a warehouse and an item, so agent requests can get past
# authentication and write.
vendor=fuzz-vendor
warehouse=W-FUZZ
token="fuzz-agent-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
admin() { curl -fsS -o /dev/null -H "X-API-Key: $api_key" -H 'Content-Type: application/json' "$base$1" -d "$2"; }
agent() { curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$base$1" -d "$2"; }
admin /api/agents/register "{\"vendorId\":\"$vendor\",\"agentUrl\":\"http://127.0.0.1:9/agent\",\"erpType\":\"custom\",\"authToken\":\"$token\"}"
admin /api/admin/mappings/seed "{\"vendorId\":\"$vendor\",\"mappings\":[
    {\"mappingType\":\"unit\",\"erpCode\":\"PCE\",\"restoCode\":\"piece\",\"restoLabel\":\"Piece\"},
    {\"mappingType\":\"vat\",\"erpCode\":\"T1\",\"restoCode\":\"vat_20\",\"restoLabel\":\"TVA 20\"}]}"
agent /api/sync/warehouses "{\"vendorId\":\"$vendor\",\"warehouses\":[{\"erpWarehouseId\":\"$warehouse\",\"name\":\"Fuzz\",\"contentHash\":\"w1\",\"lastModifiedAt\":\"2026-01-01T00:00:00Z\"}]}"
agent /api/sync/items "{\"vendorId\":\"$vendor\",\"items\":[{\"sku\":\"SKU-1\",\"name\":\"Fuzz\",\"unitCode\":\"PCE\",\"vatCode\":\"T1\",\"price\":1,\"contentHash\":\"i1\",\"lastModifiedAt\":\"2026-01-01T00:00:00Z\"}]}"

# Operations by security scheme, read from the document, so new routes are fuzzed as they come.
operations() {
    jq -r --arg scheme "$1" '.paths[][] | objects | select(.operationId)
        | select(((.security // []) | map(keys[]) | index($scheme)) != null or ($scheme == "api_key" and (.security // []) == []))
        | "--include-operation-id=\(.operationId)"' "$work/openapi.json"
}
mapfile -t agent_ops < <(operations agent_token)
mapfile -t admin_ops < <(operations api_key)

seed="${FUZZ_SEED:-20261128}"
checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_schema_conformance,response_headers_conformance
common=(
    "$work/openapi.json" --url "$base"
    --checks "$checks"
    --phases "examples,coverage,fuzzing"
    --seed "$seed"
    # One worker: CPython 3.11.7's ast module fails under threads ("AST constructor recursion
    # depth mismatch", raised inside Hypothesis), and the machine's cores are shared anyway.
    --workers 1
    --request-timeout 30
    --generation-allow-x00 true
    --generation-database none
    --generation-with-security-parameters false
    --no-color
)
# run agent|admin EXAMPLES ARGS...: one schemathesis run, with scripts/fuzz_hooks.py.
run() {
    local name=$1 examples=$2
    shift 2
    echo "fuzz: $name run"
    (cd "$work" && env FUZZ_RUN="$name" FUZZ_VENDOR_ID="$vendor" FUZZ_WAREHOUSE_ID="$warehouse" \
        FUZZ_SEED="$seed" PYTHONPATH="$root/scripts" SCHEMATHESIS_HOOKS=fuzz_hooks \
        timeout "${FUZZ_TIME_LIMIT:-600}" "$venv/bin/schemathesis" run "${common[@]}" \
        --max-examples "$examples" "$@")
}

status=0
run agent "${FUZZ_AGENT_EXAMPLES:-200}" -H "Authorization: Bearer $token" "${agent_ops[@]}" || status=$?
run admin "${FUZZ_ADMIN_EXAMPLES:-80}" -H "X-API-Key: $api_key" "${admin_ops[@]}" || status=$?
if grep -q '"level":"ERROR"\|ERROR' "$work/server.log"; then
    echo "fuzz: the server logged errors:"
    grep 'ERROR' "$work/server.log" | head -20
    status=1
fi
exit "$status"
