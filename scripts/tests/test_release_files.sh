# shellcheck shell=bash
# The Dockerfile, compose files, nginx config, env templates and docs agree with the scripts
# and with src/config.rs.

py() { python3 - "$PROJECT_ROOT" "$@"; }

test_the_image_runs_unprivileged_drains_on_sigterm_and_has_a_healthcheck() {
    local dockerfile
    dockerfile=$(<"$PROJECT_ROOT/Dockerfile")
    assert_contains "$dockerfile" "USER erp-sync"
    assert_contains "$dockerfile" "STOPSIGNAL SIGTERM"
    assert_contains "$dockerfile" 'HEALTHCHECK'
    assert_contains "$dockerfile" '/health'
    assert_contains "$dockerfile" 'ARG GIT_SHA'
    # The last USER wins: it must not be root.
    assert_eq "$(grep -E '^USER ' "$PROJECT_ROOT/Dockerfile" | tail -n 1)" "USER erp-sync"
    # A host's .env.prod and deploy state never enter the build context.
    local ignore pattern
    ignore=$(<"$PROJECT_ROOT/.dockerignore")
    for pattern in .env '.env.*' '*.env' deploy/state/; do
        grep -qxF -- "$pattern" <<<"$ignore" || fail ".dockerignore lacks $pattern"
    done
}

test_the_compose_files_match_the_scripts() {
    py <<'PY'
import pathlib, re, sys, yaml
root = pathlib.Path(sys.argv[1])
def grace_secs(value):
    m = re.fullmatch(r"(\d+)s", str(value))
    assert m, f"stop_grace_period {value!r} is not in seconds"
    return int(m.group(1))

dev = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["erp-sync"]
assert dev["image"] == "${ERP_SYNC_IMAGE:-erp-sync}:${ERP_SYNC_TAG:-dev}", dev["image"]
assert dev["stop_signal"] == "SIGTERM" and grace_secs(dev["stop_grace_period"]) >= 30
assert "/health" in " ".join(dev["healthcheck"]["test"])

prod = yaml.safe_load((root / "deploy/docker-compose.prod.yml").read_text())["services"]
common = (root / "scripts/lib/common.sh").read_text()
drain = int(re.search(r'DRAIN_TIMEOUT_SECS:=(\d+)', common).group(1))
for colour in ("blue", "green"):
    s = prod[colour]
    tag = colour.upper() + "_TAG"
    assert s["image"] == "${ERP_SYNC_IMAGE:-erp-sync}:${%s:-undeployed}" % tag, s["image"]
    port = re.search(r'%s_HOST_PORT:=(\d+)' % colour.upper(), common).group(1)
    assert s["ports"] == ["127.0.0.1:${%s_HOST_PORT:-%s}:3000" % (colour.upper(), port)], s["ports"]
    assert s["stop_signal"] == "SIGTERM" and grace_secs(s["stop_grace_period"]) >= drain
    assert s["env_file"] == "../.env.prod"
    assert "/health" in " ".join(s["healthcheck"]["test"])
    assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
mount = "${ERP_SYNC_STATE_DIR:-./state}/nginx:/etc/nginx/erp-sync:ro"
assert mount in prod["nginx"]["volumes"], prod["nginx"]["volumes"]
nginx = (root / "deploy/nginx/nginx.conf").read_text()
assert "include /etc/nginx/erp-sync/upstream.conf;" in nginx
assert "proxy_pass http://erp_sync;" in nginx
PY
}

test_every_setting_is_documented_and_the_templates_name_only_real_ones() {
    py <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
config = (root / "src/config.rs").read_text()
raw = re.search(r"struct Raw \{(.*?)\n\}", config, re.S).group(1)
settings = {name.upper() for name in re.findall(r"^\s*(\w+):", raw, re.M)}
assert len(settings) > 20, settings
# Millisecond and second settings are read under their suffixed names already.
guide = (root / "docs/secrets-guide.md").read_text()
missing = sorted(v for v in settings if f"`{v}`" not in guide)
assert not missing, f"docs/secrets-guide.md does not describe {missing}"
example = (root / ".env.example").read_text()
missing = sorted(v for v in settings if not re.search(rf"^#? ?{v}=", example, re.M))
assert not missing, f".env.example lacks {missing}"
known = settings | {"RUST_LOG", "PGPASSWORD"}
prod = (root / ".env.prod.example").read_text()
named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", prod, re.M))
assert not named - known, f".env.prod.example names unknown variables {sorted(named - known)}"
for required in ("APP_ENV", "DATABASE_URL", "REDIS_URL", "API_SECRET", "AGENT_SECRET"):
    assert required in named, required
assert re.search(r"^APP_ENV=production$", prod, re.M)
# A template holds no value for a secret.
for secret in ("API_SECRET", "AGENT_SECRET", "SLACK_WEBHOOK_URL", "PGPASSWORD"):
    for line in re.findall(rf"^#? ?{secret}=(.*)$", prod, re.M):
        assert line.strip() == "", f".env.prod.example gives {secret} a value"
PY
}

test_the_readme_links_the_runbooks() {
    local readme
    readme=$(<"$PROJECT_ROOT/README.md")
    local doc
    for doc in docs/deployment-runbook.md docs/rollback-runbook.md docs/secrets-guide.md; do
        assert_contains "$readme" "($doc)"
        [[ -f $PROJECT_ROOT/$doc ]] || fail "$doc is missing"
    done
}
