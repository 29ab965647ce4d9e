#!/usr/bin/env bash
# Zero-downtime deploy of the erp-sync image TAG with two colours behind nginx
# (deploy/docker-compose.prod.yml):
#   1. migrate the database with the new image (migrations stay backward compatible for one
#      release, so the live colour keeps working on the new schema);
#   2. start the idle colour with TAG and wait, bounded, for its /health to answer 200;
#   3. point nginx at it (deploy/state/nginx/upstream.conf, checked with `nginx -t`, then a
#      reload: in-flight requests finish on the old colour) and check /health through nginx;
#   4. drain the old colour: SIGTERM, SIGKILL only after DRAIN_TIMEOUT_SECS.
# When the new colour never becomes healthy, or nginx does not serve it, everything is put
# back: the old colour never stopped serving. --dry-run prints every step and changes nothing.
# docs/deployment-runbook.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/deploy-blue-green.sh TAG [--dry-run] [--skip-migrate] [--force]
  TAG             image tag to deploy (scripts/build-and-tag.sh prints it)
  --dry-run       print every step; run nothing that changes a container or a file
  --force         deploy even if TAG is live already (to apply a changed .env.prod, e.g. a
                  rotated secret: the idle colour starts with the new settings)
  --skip-migrate  do not run `erp-sync migrate` first (rollbacks: an older image has nothing to apply)
  --rollback      used by scripts/rollback.sh: implies --skip-migrate and rewinds the release list
Settings (environment): docs/deployment-runbook.md.
USAGE
}

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

TAG='' skip_migrate=0 action=deploy force=0
while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=1 ;;
    --skip-migrate) skip_migrate=1 ;;
    --force) force=1 ;;
    --rollback)
        action=rollback
        skip_migrate=1
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        usage >&2
        exit 2
        ;;
    *)
        [[ -z $TAG ]] || {
            usage >&2
            exit 2
        }
        TAG=$1
        ;;
    esac
    shift
done
[[ -n $TAG ]] || {
    usage >&2
    exit 2
}
valid_tag "$TAG" || die "'$TAG' is not a valid image tag"
[[ -f $ERP_SYNC_COMPOSE_FILE ]] || die "compose file $ERP_SYNC_COMPOSE_FILE not found"

[[ $DRY_RUN == 1 ]] || take_lock
load_current
old=$ACTIVE_COLOR
old_tag=''
if [[ -n $old ]]; then
    old_tag=$([[ $old == blue ]] && echo "$BLUE_TAG" || echo "$GREEN_TAG")
fi
new=$(other_color "${old:-green}")
if [[ $new == blue ]]; then BLUE_TAG=$TAG; else GREEN_TAG=$TAG; fi
new_url="http://127.0.0.1:$(color_port "$new")/health"
upstream=$(state_file nginx/upstream.conf)

if [[ -n $old && $old_tag == "$TAG" && $force != 1 ]]; then
    log "$TAG is already live on $old; nothing to do (--force restarts it on $new)"
    exit 0
fi
log "$action $TAG: ${old:-nothing} (${old_tag:-none}) is live; $new takes over"

ensure_image "$TAG"

if ((skip_migrate == 0)); then
    run compose run --rm --no-deps "$new" migrate ||
        die "migrations failed with $TAG; nothing was switched (${old:-nothing} still serves)"
fi

# Stops the new colour (kept, stopped, for its logs) after a failed attempt.
abandon_new() {
    local why=$1
    log "$why; rolling back: ${old:+$old keeps serving}${old:-no colour was live before}"
    compose logs --no-color --tail 50 "$new" >&2 || true
    compose stop --timeout "$DRAIN_TIMEOUT_SECS" "$new" >&2 || log "warning: could not stop $new"
    record history.log "$(now_utc) $action $TAG $new failed: $why"
    exit 1
}

run compose up --detach --no-deps --force-recreate "$new" || abandon_new "$new ($TAG) did not start"
if [[ $DRY_RUN == 1 ]]; then
    echo "[dry-run] would wait up to ${HEALTH_TIMEOUT_SECS}s for 200 from $new_url"
elif wait_healthy "$new_url" "$HEALTH_TIMEOUT_SECS"; then
    log "$new ($TAG) is healthy"
else
    abandon_new "$new ($TAG) did not answer 200 on /health within ${HEALTH_TIMEOUT_SECS}s"
fi

nginx_running() { compose ps --status running --services 2>/dev/null | grep -qx nginx; }

# Loads the upstream file into nginx: a checked reload when it runs, a start otherwise.
apply_upstream() {
    if nginx_running; then
        run compose exec -T nginx nginx -t && run compose exec -T nginx nginx -s reload
    else
        run compose up --detach --no-deps nginx
    fi
}

upstream_conf() {
    printf '# Written by scripts/deploy-blue-green.sh at %s: %s serves %s.\n' "$(now_utc)" "$1" "$2"
    printf 'upstream erp_sync {\n    server %s:3000;\n    keepalive 16;\n}\n' "$1"
}

previous_upstream=''
[[ -f $upstream ]] && previous_upstream=$(<"$upstream")
if [[ $DRY_RUN == 1 ]]; then
    echo "[dry-run] would write $upstream: upstream erp_sync -> $new:3000"
else
    write_state nginx/upstream.conf "$(upstream_conf "$new" "$TAG")"
fi
switched=1
apply_upstream || switched=0
if ((switched)) && [[ $DRY_RUN != 1 ]] &&
    ! wait_healthy "$ERP_SYNC_PROXY_URL/health" "$PROXY_CHECK_TIMEOUT_SECS"; then
    switched=0
fi
if ((switched == 0)); then
    # Put the old upstream back before stopping the new colour, so nginx never points at a
    # stopped container.
    if [[ -n $previous_upstream ]]; then
        write_state nginx/upstream.conf "$previous_upstream"
        apply_upstream || log "warning: nginx did not take the previous upstream back; check it now"
    fi
    abandon_new "nginx did not serve $new through $ERP_SYNC_PROXY_URL/health"
fi
if [[ $DRY_RUN == 1 ]]; then
    echo "[dry-run] would check $ERP_SYNC_PROXY_URL/health through nginx"
    echo "[dry-run] would record $new ($TAG) as live in $(state_file current)"
else
    ACTIVE_COLOR=$new
    save_current
    if [[ $action == rollback ]]; then rewind_releases_to "$TAG"; else push_release "$TAG"; fi
    record history.log "$(now_utc) $action $TAG $new live (was ${old_tag:-none} on ${old:-nothing})"
    log "nginx serves $new ($TAG)"
fi

if [[ -n $old ]]; then
    # SIGTERM: the old colour stops taking connections and finishes what it has in flight.
    run compose stop --timeout "$DRAIN_TIMEOUT_SECS" "$old" ||
        log "warning: $old did not stop cleanly; $new serves anyway, stop it by hand"
fi
if [[ $DRY_RUN == 1 ]]; then
    echo "[dry-run] nothing was changed"
else
    log "done: $TAG is live on $new"
fi
