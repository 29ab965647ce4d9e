# shellcheck shell=bash
# Helpers for the release-script tests (sourced by scripts/tests/run.sh into each test's own
# bash process, with TEST_TMP set to a fresh directory).

PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FAKES=$PROJECT_ROOT/scripts/tests/fakes

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
assert_eq() { [[ $1 == "$2" ]] || fail "${3:-values differ}: expected '$2', got '$1'"; }
assert_contains() { [[ $1 == *"$2"* ]] || fail "${3:-missing text}: '$2' not in:"$'\n'"$1"; }
assert_not_contains() { [[ $1 != *"$2"* ]] || fail "${3:-unexpected text}: '$2' found in:"$'\n'"$1"; }
assert_file_absent() { [[ ! -e $1 ]] || fail "$1 exists"; }

# Runs "$@", capturing stdout, stderr and the exit status in OUT, ERR and RC (read by the
# test files); never exits.
# shellcheck disable=SC2034
capture() {
    local out_file=$TEST_TMP/out err_file=$TEST_TMP/err
    RC=0
    "$@" >"$out_file" 2>"$err_file" || RC=$?
    OUT=$(<"$out_file")
    ERR=$(<"$err_file")
}

# A git repository holding a copy of the release files, so a test can dirty it, and so the
# scripts' deploy/state lands in the test's directory.
make_repo() {
    REPO=$TEST_TMP/repo
    mkdir -p "$REPO"
    # Tracked and not yet committed files alike, so the tests see the working tree.
    (cd "$PROJECT_ROOT" && git ls-files -z --cached --others --exclude-standard -- scripts deploy Dockerfile .gitignore .dockerignore |
        xargs -0 cp --parents -t "$REPO")
    git_quiet -C "$REPO" init -q -b main
    git_quiet -C "$REPO" add -A
    git_quiet -C "$REPO" commit -q -m "release files"
}

git_quiet() {
    GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 \
        GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@example.com \
        GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@example.com git "$@"
}

# The fake docker and curl first on PATH, a fresh world, short bounds.
use_fakes() {
    export PATH="$FAKES:$PATH"
    export FAKE_WORLD=$TEST_TMP/world
    mkdir -p "$FAKE_WORLD/images" "$FAKE_WORLD/containers"
    : >"$FAKE_WORLD/calls.log"
    export ERP_SYNC_PROXY_URL=http://127.0.0.1:18080
    export BLUE_HOST_PORT=13001 GREEN_HOST_PORT=13002
    export HEALTH_TIMEOUT_SECS=2 HEALTH_INTERVAL_SECS=0.1 PROXY_CHECK_TIMEOUT_SECS=2
    export DRAIN_TIMEOUT_SECS=5
    unset ERP_SYNC_IMAGE ERP_SYNC_STATE_DIR ERP_SYNC_COMPOSE_FILE DRY_RUN
}

# An image the fake docker has, as if built or pulled before.
have_image() { : >"$FAKE_WORLD/images/${1//\//%}"; }

calls() { cat "$FAKE_WORLD/calls.log"; }
calls_since() { tail -n +"$(($1 + 1))" "$FAKE_WORLD/calls.log"; }
call_count() { wc -l <"$FAKE_WORLD/calls.log"; }
container_state() { cat "$FAKE_WORLD/containers/$1" 2>/dev/null || echo absent; }
state() { cat "$REPO/deploy/state/$1"; }
# The line number of the first call matching an extended regex (0 when none).
call_line() { grep -nE -m1 -- "$1" "$FAKE_WORLD/calls.log" | cut -d: -f1 || echo 0; }
assert_before() {
    local a b
    a=$(call_line "$1")
    b=$(call_line "$2")
    ((a > 0)) || fail "no call matches '$1':"$'\n'"$(calls)"
    ((b > 0)) || fail "no call matches '$2':"$'\n'"$(calls)"
    ((a < b)) || fail "'$1' (call $a) should come before '$2' (call $b):"$'\n'"$(calls)"
}

deploy() { capture "$REPO/scripts/deploy-blue-green.sh" "$@"; }
rollback() { capture "$REPO/scripts/rollback.sh" "$@"; }

# Deploys each TAG in turn (each one an image the fake docker has) and checks it went live.
deploy_ok() {
    local tag
    for tag in "$@"; do
        have_image "erp-sync:$tag"
        deploy "$tag"
        assert_eq "$RC" 0 "deploy $tag failed: $ERR"
    done
}

# A fingerprint of every file under DIR (absent: "absent"), to prove a dry run wrote nothing.
fingerprint() {
    if [[ -d $1 ]]; then
        (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
    else
        echo absent
    fi
}
