# shellcheck shell=bash
# Shared by the release scripts (sourced, never run): logging, settings, the deploy state
# under deploy/state/, the compose wrapper and bounded health checks.
#
# Every setting below can be overridden from the environment; docs/deployment-runbook.md
# lists them.

ERP_SYNC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${ERP_SYNC_IMAGE:=erp-sync}"
: "${ERP_SYNC_STATE_DIR:=$ERP_SYNC_ROOT/deploy/state}"
: "${ERP_SYNC_COMPOSE_FILE:=$ERP_SYNC_ROOT/deploy/docker-compose.prod.yml}"
: "${ERP_SYNC_COMPOSE_PROJECT:=erp-sync}"
: "${BLUE_HOST_PORT:=3001}"
: "${GREEN_HOST_PORT:=3002}"
: "${ERP_SYNC_PROXY_URL:=http://127.0.0.1:${HTTP_PORT:-80}}"
: "${HEALTH_TIMEOUT_SECS:=120}"
: "${HEALTH_INTERVAL_SECS:=2}"
: "${HEALTH_REQUEST_TIMEOUT_SECS:=3}"
: "${PROXY_CHECK_TIMEOUT_SECS:=30}"
# Longer than the slowest in-flight work the service finishes on SIGTERM (an agent call is
# bounded by AGENT_TIMEOUT_MS, 30 s by default).
: "${DRAIN_TIMEOUT_SECS:=60}"
# Read by docker compose to fill in deploy/docker-compose.prod.yml.
export ERP_SYNC_IMAGE ERP_SYNC_STATE_DIR BLUE_HOST_PORT GREEN_HOST_PORT

DRY_RUN=${DRY_RUN:-0}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Runs a command that changes something; with --dry-run only prints it.
run() {
    if [[ $DRY_RUN == 1 ]]; then
        printf '[dry-run] would run: %s\n' "$*"
        return 0
    fi
    log "+ $*"
    "$@"
}

# Docker tag grammar: what `docker tag` accepts, so a bad tag fails here with a clear message.
valid_tag() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; }

now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

state_file() { printf '%s/%s' "$ERP_SYNC_STATE_DIR" "$1"; }

ensure_state_dir() { mkdir -p "$ERP_SYNC_STATE_DIR/nginx"; }

# Appends one line to an append-only state log (history.log, images.log).
record() {
    local file=$1
    shift
    ensure_state_dir
    printf '%s\n' "$*" >>"$(state_file "$file")"
}

# Writes a state file (CONTENT plus a final newline) atomically: readers never see half of it.
write_state() {
    local file=$1 content=$2 path tmp
    ensure_state_dir
    path=$(state_file "$file")
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$path"
}

# Reads deploy/state/current (key=value lines; parsed, never sourced) into ACTIVE_COLOR,
# BLUE_TAG and GREEN_TAG.
load_current() {
    ACTIVE_COLOR='' BLUE_TAG='' GREEN_TAG=''
    local key value path
    path=$(state_file current)
    [[ -f $path ]] || return 0
    while IFS='=' read -r key value; do
        # Anything else (a hand edit gone wrong) reads as absent, never as a command.
        if [[ $key == active_color && ($value == blue || $value == green) ]]; then
            ACTIVE_COLOR=$value
        elif [[ $key == blue_tag ]] && valid_tag "$value"; then
            BLUE_TAG=$value
        elif [[ $key == green_tag ]] && valid_tag "$value"; then
            GREEN_TAG=$value
        fi
    done <"$path"
}

save_current() {
    write_state current "$(printf 'active_color=%s\nblue_tag=%s\ngreen_tag=%s' \
        "$ACTIVE_COLOR" "$BLUE_TAG" "$GREEN_TAG")"
}

# The release stack (deploy/state/releases, one tag a line, the live one last): a deploy
# pushes its tag; a rollback to a tag already in the stack cuts everything above it, so the
# next rollback goes one release further back instead of undoing this one.
releases() {
    local path
    path=$(state_file releases)
    [[ -f $path ]] && grep -E '^[A-Za-z0-9_][A-Za-z0-9_.-]*$' "$path" || true
}

push_release() {
    local tag=$1 stack
    stack=$(releases)
    if [[ -n $stack && $(tail -n 1 <<<"$stack") == "$tag" ]]; then
        return 0
    fi
    write_state releases "$(printf '%s\n' ${stack:+"$stack"} "$tag")"
}

# Cuts the stack back to the last occurrence of TAG (or pushes TAG when it is not there).
rewind_releases_to() {
    local tag=$1 stack keep
    stack=$(releases)
    if grep -qxF -- "$tag" <<<"$stack"; then
        keep=$(grep -nxF -- "$tag" <<<"$stack" | tail -n 1 | cut -d: -f1)
        write_state releases "$(head -n "$keep" <<<"$stack")"
    else
        push_release "$tag"
    fi
}

color_port() {
    case $1 in
    blue) printf '%s' "$BLUE_HOST_PORT" ;;
    green) printf '%s' "$GREEN_HOST_PORT" ;;
    *) die "unknown colour '$1'" ;;
    esac
}

other_color() { if [[ $1 == blue ]]; then printf green; else printf blue; fi; }

# docker compose on the shipped production file. BLUE_TAG / GREEN_TAG pick each colour's
# image; a colour never deployed gets a tag no registry has, so it cannot start by accident.
compose() {
    BLUE_TAG=${BLUE_TAG:-undeployed} GREEN_TAG=${GREEN_TAG:-undeployed} \
        docker compose --project-name "$ERP_SYNC_COMPOSE_PROJECT" \
        --file "$ERP_SYNC_COMPOSE_FILE" "$@"
}

image_ref() { printf '%s:%s' "$ERP_SYNC_IMAGE" "$1"; }

# The image must be here before anything changes: pulled when a registry has it.
ensure_image() {
    local ref
    ref=$(image_ref "$1")
    if docker image inspect "$ref" >/dev/null 2>&1; then
        return 0
    fi
    if [[ $DRY_RUN == 1 ]]; then
        printf '[dry-run] image %s is not here; would run: docker pull %s\n' "$ref" "$ref"
        return 0
    fi
    log "image $ref is not here; pulling it"
    docker pull "$ref" >&2 || die "image $ref not found locally nor in its registry"
}

http_ok() {
    curl -fs -o /dev/null --max-time "$HEALTH_REQUEST_TIMEOUT_SECS" "$1" 2>/dev/null
}

# Polls URL until it answers 2xx or TIMEOUT seconds have passed (bounded whatever hangs:
# every request has its own timeout).
wait_healthy() {
    local url=$1 timeout=$2 deadline
    deadline=$(($(date +%s) + timeout))
    while true; do
        if http_ok "$url"; then
            return 0
        fi
        if (($(date +%s) >= deadline)); then
            return 1
        fi
        sleep "$HEALTH_INTERVAL_SECS"
    done
}

# One deploy or rollback at a time on this host.
take_lock() {
    ensure_state_dir
    exec 9>"$(state_file deploy.lock)"
    flock -n 9 || die "another deploy or rollback is running (lock $(state_file deploy.lock))"
}
