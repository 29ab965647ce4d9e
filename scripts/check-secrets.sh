#!/usr/bin/env bash
# Scans for likely secrets: the tracked files (default) or, with --staged, the lines added in
# the staged diff (a pre-commit hook). A finding that the allow-list permits passes; any other
# is printed as `file:line: kind: masked value` and the exit status is 1. A value is never
# printed in full. Rules and the allow-list format: docs/secrets-guide.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/check-secrets.sh [--staged] [--allowlist FILE]
  (default)         scan every tracked file (its working-tree content)
  --staged          scan only the lines added in the staged diff (pre-commit)
  --allowlist FILE  allow-list to apply (default: .secrets-allowlist at the repository root)
exit status: 0 nothing found, 1 secrets found, 2 usage or allow-list error
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=tracked
allowlist=''
while (($#)); do
    case $1 in
    --staged) mode=staged ;;
    --allowlist)
        [[ $# -ge 2 ]] || {
            usage >&2
            exit 2
        }
        allowlist=$(realpath -- "$2")
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
    shift
done

root=$(git rev-parse --show-toplevel 2>/dev/null) || {
    echo "check-secrets: not inside a git repository" >&2
    exit 2
}
cd "$root"
allowlist=${allowlist:-$root/.secrets-allowlist}

readonly KINDS=" private-key signing-secret bearer-token provider-token slack-webhook url-password secret-assignment "
# Words a human writes into a fixture and a random secret never contains.
readonly FIXTURE_MARKERS='test|fake|dummy|example|fixture|sample|mock|stub|bench|change-?me|not-?a-?real|placeholder|wrong|invalid|bogus|secret|token|passw(or)?d'

rule_globs=() rule_kinds=() rule_patterns=()
if [[ -f $allowlist ]]; then
    n=0
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        line=${line%%#*}
        read -r glob kind pattern extra <<<"$line" || true
        [[ -z ${glob:-} ]] && continue
        if [[ -z ${pattern:-} || -n ${extra:-} ]]; then
            echo "check-secrets: $allowlist:$n: want 'PATH-GLOB KIND VALUE-PATTERN' (a pattern has no spaces; use \\s)" >&2
            exit 2
        fi
        if [[ $kind != '*' && $KINDS != *" $kind "* ]]; then
            echo "check-secrets: $allowlist:$n: unknown kind '$kind' (one of:$KINDS or *)" >&2
            exit 2
        fi
        if [[ $pattern != @fixture ]]; then
            # A pattern bash cannot compile is an error, not a silent "never matches".
            rc=0
            # shellcheck disable=SC2319 # the status of [[ =~ ]] is wanted: 2 = invalid regex
            [[ '' =~ $pattern ]] || rc=$?
            if ((rc == 2)); then
                echo "check-secrets: $allowlist:$n: invalid regular expression '$pattern'" >&2
                exit 2
            fi
        fi
        rule_globs+=("$glob") rule_kinds+=("$kind") rule_patterns+=("$pattern")
    done <"$allowlist"
fi

# @fixture: the value, or the text a base64 value decodes to (e.g. whsec_ + base64 of
# "test-signing-secret"), spells a fixture marker. Random bytes never decode to printable text.
is_fixture() {
    local value=${1,,} payload decoded
    [[ $value =~ $FIXTURE_MARKERS ]] && return 0
    payload=${1#whsec_}
    if [[ $payload =~ ^[A-Za-z0-9+/]+={0,2}$ ]] && ((${#payload} % 4 == 0)); then
        decoded=$(printf '%s' "$payload" | base64 -d 2>/dev/null | tr -d '\0' | LC_ALL=C tr -dc '[:print:]') || return 1
        [[ ${#decoded} -ge $((${#payload} * 3 / 4 - 2)) && ${decoded,,} =~ $FIXTURE_MARKERS ]] && return 0
    fi
    return 1
}

allowed() {
    local path=$1 kind=$2 value=$3 i
    for i in "${!rule_globs[@]}"; do
        # shellcheck disable=SC2053 # the glob is a pattern on purpose
        [[ $path == ${rule_globs[i]} ]] || continue
        [[ ${rule_kinds[i]} == '*' || ${rule_kinds[i]} == "$kind" ]] || continue
        if [[ ${rule_patterns[i]} == @fixture ]]; then
            is_fixture "$value" && return 0
        elif [[ $value =~ ${rule_patterns[i]} ]]; then
            return 0
        fi
    done
    return 1
}

mask() {
    local kind=$1 value=$2
    case $kind in
    private-key) printf 'a PEM private key block' ;;
    url-password) sed -E 's#^([^:]+://[^:@]*:)[^@]*@#\1***@#' <<<"$value" ;;
    *)
        if ((${#value} >= 16)); then
            printf '%s… (%d chars)' "${value:0:4}" "${#value}"
        else
            printf '… (%d chars)' "${#value}"
        fi
        ;;
    esac
}

findings=$(mktemp)
trap 'rm -f "$findings"' EXIT
if [[ $mode == tracked ]]; then
    # -I: binary files are skipped; '' matches every line, so -l lists every text file.
    { git -c core.quotePath=false grep -I -l -z -e '' -- . || true; } |
        xargs -0 -r awk -v mode=files -f "$here/lib/secrets.awk" >"$findings"
else
    git -c core.quotePath=false diff --cached -U0 --no-color --no-ext-diff --diff-filter=ACMR -- . |
        awk -v mode=diff -f "$here/lib/secrets.awk" >"$findings"
fi

hits=0 passed=0
while IFS=$'\t' read -r path line kind value; do
    if allowed "$path" "$kind" "$value"; then
        passed=$((passed + 1))
        continue
    fi
    hits=$((hits + 1))
    printf '%s:%s: %s: %s\n' "$path" "$line" "$kind" "$(mask "$kind" "$value")"
done <"$findings"

what=$([[ $mode == tracked ]] && echo "tracked files" || echo "staged changes")
if ((hits > 0)); then
    echo "check-secrets: $hits likely secret(s) in the $what ($passed allowed by ${allowlist#"$root"/}); see docs/secrets-guide.md" >&2
    exit 1
fi
echo "check-secrets: no secrets in the $what ($passed finding(s) allowed by ${allowlist#"$root"/})" >&2
