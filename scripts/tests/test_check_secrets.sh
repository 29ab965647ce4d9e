# shellcheck shell=bash
# shellcheck disable=SC2016 # single-quoted on purpose: bash -c scripts and literal ${VAR}s
# scripts/check-secrets.sh on temporary repositories with planted secrets, and on this one.
# Every planted value is made at run time, so this file holds none.

hex() { od -An -tx1 -N "$1" /dev/urandom | tr -d ' \n'; }
b64() { head -c "$1" /dev/urandom | base64 -w0; }
# Random base64 that happens to spell no fixture word (so the @fixture rule cannot pass it).
b64_plain() {
    local v
    while v=$(b64 "$1") && [[ ${v,,} =~ test|fake|dummy|example|fixture|sample|mock|stub|bench|chang|real|placeholder|wrong|invalid|bogus|secret|token|passw ]]; do :; done
    printf '%s' "$v"
}
PEM_BEGIN="-----BEGIN OPENSSH PRIV""ATE KEY-----"
PEM_END="-----END OPENSSH PRIV""ATE KEY-----"

new_repo() {
    SCAN=$TEST_TMP/scan
    mkdir -p "$SCAN"
    git_quiet -C "$SCAN" init -q -b main
}
commit_all() {
    git_quiet -C "$SCAN" add -A
    git_quiet -C "$SCAN" commit -q -m planted
}
check() { capture bash -c 'cd "$1" && shift && exec "$@"' _ "$SCAN" "$PROJECT_ROOT/scripts/check-secrets.sh" "$@"; }

test_finds_each_kind_of_planted_secret_with_file_and_line_and_never_prints_it() {
    new_repo
    local api_secret db_password signing_key bearer whsec auth_token github slack
    api_secret=$(hex 16) db_password=$(hex 8) signing_key=$(hex 20) bearer=$(hex 16)
    whsec=whsec_$(b64 24) auth_token=$(hex 16) github=ghp_$(hex 18) slack=$(hex 12)
    mkdir -p "$SCAN/config" "$SCAN/src" "$SCAN/deploy" "$SCAN/keys"
    printf '# production\nAPI_SECRET=%s\nDATABASE_URL=postgres://app:%s@db.internal:5432/app\n' \
        "$api_secret" "$db_password" >"$SCAN/config/prod.env"
    printf '// keys\npub const SIGNING_KEY: &str = "%s";\nlet auth = "Bearer %s";\nlet s = "%s";\n' \
        "$signing_key" "$bearer" "$whsec" >"$SCAN/src/keys.rs"
    printf '  auth_token: %s\n  github: %s\n' "$auth_token" "$github" >"$SCAN/deploy/values.yml"
    printf '%s\n%s\n%s\n' "$PEM_BEGIN" "$(b64 48)" "$PEM_END" >"$SCAN/keys/id_ed25519"
    printf 'alerts: https://hooks.slack.com/services/T0%s/B0%s/%s\n' "$(hex 4)" "$(hex 4)" "$slack" >"$SCAN/notify.txt"
    # Binary files are not text to scan; a clean file and an untracked secret are not findings.
    printf 'bin\0ary\n%s\n' "$PEM_BEGIN" >"$SCAN/blob.bin"
    printf 'PORT=3000\nAPI_SECRET=\nAGENT_SECRET=${AGENT_SECRET}\nREDIS_URL=redis://:<password>@redis:6379\n' >"$SCAN/.env.example"
    commit_all
    printf 'API_SECRET=%s\n' "$(hex 16)" >"$SCAN/untracked.env"

    check
    assert_eq "$RC" 1 "planted secrets must fail the check"
    assert_eq "$(cut -d: -f1-3 <<<"$OUT" | sort)" "$(printf '%s\n' \
        "config/prod.env:2: secret-assignment" \
        "config/prod.env:3: url-password" \
        "deploy/values.yml:1: secret-assignment" \
        "deploy/values.yml:2: provider-token" \
        "keys/id_ed25519:1: private-key" \
        "notify.txt:1: slack-webhook" \
        "src/keys.rs:2: secret-assignment" \
        "src/keys.rs:3: bearer-token" \
        "src/keys.rs:4: signing-secret")"
    assert_contains "$OUT" "config/prod.env:3: url-password: postgres://app:***@db.internal:5432"
    assert_contains "$OUT" "keys/id_ed25519:1: private-key: a PEM private key block"
    assert_contains "$OUT" "config/prod.env:2: secret-assignment: ${api_secret:0:4}… (32 chars)"
    assert_contains "$ERR" "9 likely secret(s) in the tracked files"
    local value
    for value in "$api_secret" "$db_password" "$signing_key" "$bearer" "$whsec" "$auth_token" "$github" "$slack"; do
        assert_not_contains "$OUT$ERR" "$value" "a secret was printed"
    done
}

test_passes_on_this_repository() {
    capture bash -c 'cd "$1" && exec scripts/check-secrets.sh' _ "$PROJECT_ROOT"
    assert_eq "$RC" 0 "$OUT $ERR"
    assert_contains "$ERR" "no secrets in the tracked files"
}

test_staged_mode_scans_only_the_added_lines() {
    new_repo
    printf 'OLD_TOKEN=%s\n' "$(hex 16)" >"$SCAN/old.env"
    printf 'A=1\n' >"$SCAN/app.env"
    commit_all
    local staged unstaged
    staged=$(hex 16) unstaged=$(hex 16)
    printf 'A=1\nAPI_TOKEN=%s\nB=2\n' "$staged" >"$SCAN/app.env"
    git -C "$SCAN" add app.env
    printf 'LATER_TOKEN=%s\n' "$unstaged" >>"$SCAN/app.env"
    check --staged
    assert_eq "$RC" 1
    assert_eq "$OUT" "app.env:2: secret-assignment: ${staged:0:4}… (32 chars)"
    assert_contains "$ERR" "1 likely secret(s) in the staged changes"

    git_quiet -C "$SCAN" commit -q -m more
    check --staged
    assert_eq "$RC" 0 "$OUT"
}

test_the_fixture_rule_passes_obvious_test_values_in_test_code_only() {
    new_repo
    mkdir -p "$SCAN/tests" "$SCAN/src"
    printf 'tests/*  *  @fixture\n' >"$SCAN/.secrets-allowlist"
    local fixture_whsec real real_whsec
    fixture_whsec=whsec_$(printf '%s' "test-signing-secret-0123456789" | base64 -w0)
    real=$(hex 16) real_whsec=whsec_$(b64_plain 24)
    printf 'const API_KEY: &str = "test-api-key-0123456789abcdef";\nconst S: &str = "%s";\n' "$fixture_whsec" >"$SCAN/tests/helpers.rs"
    printf 'let url = "https://user:pw-%s@agent.example.com";\n' "$(hex 4)" >"$SCAN/tests/urls.rs"
    printf 'const API_KEY: &str = "%s";\nconst S: &str = "%s";\n' "$real" "$real_whsec" >"$SCAN/tests/pasted.rs"
    printf 'const API_KEY: &str = "test-api-key-0123456789abcdef";\n' >"$SCAN/src/lib.rs"
    commit_all
    check
    assert_eq "$RC" 1
    assert_eq "$(cut -d: -f1-3 <<<"$OUT" | sort)" \
        "$(printf '%s\n' "src/lib.rs:1: secret-assignment" "tests/pasted.rs:1: secret-assignment" "tests/pasted.rs:2: signing-secret")"
    assert_contains "$ERR" "(3 allowed by .secrets-allowlist)"
}

test_value_rules_allow_one_value_and_bad_rules_are_errors() {
    new_repo
    mkdir -p "$SCAN/src"
    printf 'const API_KEY: &str = "test-api-key-0123456789abcdef";\nconst OTHER_KEY: &str = "%s";\n' "$(hex 16)" >"$SCAN/src/lib.rs"
    printf '# comment\n\nsrc/*.rs  secret-assignment  ^test-api-key-[0-9a-f]+$  # trailing comment\n' >"$SCAN/.secrets-allowlist"
    commit_all
    check
    assert_eq "$RC" 1
    assert_eq "$(cut -d: -f1-3 <<<"$OUT")" "src/lib.rs:2: secret-assignment"

    printf 'src/*  nonsense  ^x$\n' >"$SCAN/other-list"
    check --allowlist "$SCAN/other-list"
    assert_eq "$RC" 2
    assert_contains "$ERR" "other-list:1: unknown kind 'nonsense'"
    printf '\nsrc/*  *  (unclosed\n' >"$SCAN/other-list"
    check --allowlist "$SCAN/other-list"
    assert_eq "$RC" 2
    assert_contains "$ERR" "other-list:2: invalid regular expression"
    printf 'src/*  *\n' >"$SCAN/other-list"
    check --allowlist "$SCAN/other-list"
    assert_eq "$RC" 2
    check --bogus
    assert_eq "$RC" 2
}

test_outside_a_git_repository_it_is_an_error() {
    mkdir -p "$TEST_TMP/plain"
    capture bash -c 'cd "$1" && GIT_CEILING_DIRECTORIES="$2" exec "$3"' _ "$TEST_TMP/plain" "$TEST_TMP" "$PROJECT_ROOT/scripts/check-secrets.sh"
    assert_eq "$RC" 2
    assert_contains "$ERR" "not inside a git repository"
}
