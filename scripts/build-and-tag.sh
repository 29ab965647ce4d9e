#!/usr/bin/env bash
# Builds the erp-sync image tagged with the commit's short SHA, so every running image names
# the code it came from; `latest` only when asked. Refuses a dirty working tree (the image
# would not match its tag) unless --force, and then tags it <sha>-dirty and never publishes
# it. Records each build in deploy/state/images.log. Prints the tag on stdout.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/build-and-tag.sh [--latest] [--push] [--force]
  --latest   also tag the image as latest
  --push     push the tag(s) to the registry named by ERP_SYNC_IMAGE (e.g. ghcr.io/acme/erp-sync)
  --force    build from a dirty tree anyway: tagged <sha>-dirty; not with --latest or --push
Environment: ERP_SYNC_IMAGE (default erp-sync), ERP_SYNC_STATE_DIR (default deploy/state).
USAGE
}

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

latest=0 push=0 force=0
while (($#)); do
    case $1 in
    --latest) latest=1 ;;
    --push) push=1 ;;
    --force) force=1 ;;
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

cd "$ERP_SYNC_ROOT"
git rev-parse --verify -q HEAD >/dev/null || die "$ERP_SYNC_ROOT is not a git checkout with a commit"
sha=$(git rev-parse HEAD)
tag=$(git rev-parse --short=12 HEAD)
# Untracked files count: they are in the build context (unless .dockerignore drops them).
changes=$(git status --porcelain --untracked-files=normal)
if [[ -n $changes ]]; then
    if [[ $force != 1 ]]; then
        log "the working tree has uncommitted changes; an image must be rebuildable from its tag:"
        head -n 20 <<<"$changes" >&2
        die "commit or stash them first (or --force for a local <sha>-dirty image)"
    fi
    ((latest == 0 && push == 0)) || die "a dirty build is never tagged latest nor pushed"
    tag="$tag-dirty"
    log "building from a dirty tree (--force): tag $tag"
fi

image=$(image_ref "$tag")
log "building $image"
docker build \
    --build-arg "GIT_SHA=$sha" \
    --label "org.opencontainers.image.revision=$sha" \
    --label "org.opencontainers.image.version=$tag" \
    --label "org.opencontainers.image.created=$(now_utc)" \
    --tag "$image" \
    "$ERP_SYNC_ROOT" >&2
refs=("$image")
if ((latest)); then
    docker tag "$image" "$(image_ref latest)" >&2
    refs+=("$(image_ref latest)")
fi
if ((push)); then
    for ref in "${refs[@]}"; do
        docker push "$ref" >&2
    done
fi
record images.log "$(printf '%s\t%s\t%s\t%s' "$(now_utc)" "$image" "$sha" \
    "$( ((push)) && echo pushed || echo local)$( ((latest)) && echo ',latest' || true)")"
log "built ${refs[*]}"
printf '%s\n' "$tag"
