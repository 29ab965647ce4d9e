#!/usr/bin/env bash
# Puts the previous release (or TAG) back in service, with the same blue-green switch as a
# deploy (no downtime, automatic undo if it does not come up healthy), without migrating:
# the schema stays where the newer release left it, which the older one accepts (migrations
# are backward compatible for one release). Then verifies /health through nginx.
# "Previous" comes from deploy/state/releases, written by scripts/deploy-blue-green.sh.
# docs/rollback-runbook.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/rollback.sh [TAG] [--dry-run]
  TAG        the image tag to go back to (default: the release before the live one)
  --dry-run  print every step and change nothing
USAGE
}

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

target='' passthrough=()
while (($#)); do
    case $1 in
    --dry-run)
        DRY_RUN=1
        passthrough+=(--dry-run)
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
        [[ -z $target ]] || {
            usage >&2
            exit 2
        }
        target=$1
        ;;
    esac
    shift
done

stack=$(releases)
live=$(tail -n 1 <<<"$stack")
if [[ -z $target ]]; then
    target=$(tail -n 2 <<<"$stack" | head -n 1)
    if [[ -z $live || $target == "$live" ]]; then
        die "no earlier release recorded in $(state_file releases); name the tag: rollback.sh TAG ($(state_file images.log) lists the images built here)"
    fi
fi
valid_tag "$target" || die "'$target' is not a valid image tag"
[[ $target != "$live" ]] || die "$target is already live"

log "rolling back from ${live:-an unrecorded release} to $target"
"$ERP_SYNC_ROOT/scripts/deploy-blue-green.sh" "$target" --rollback "${passthrough[@]}"

if [[ $DRY_RUN == 1 ]]; then
    echo "[dry-run] would verify $ERP_SYNC_PROXY_URL/health"
    exit 0
fi
http_ok "$ERP_SYNC_PROXY_URL/health" || die "$target is live but $ERP_SYNC_PROXY_URL/health does not answer 200: check now (docs/rollback-runbook.md)"
log "rolled back to $target; $ERP_SYNC_PROXY_URL/health answers 200"
