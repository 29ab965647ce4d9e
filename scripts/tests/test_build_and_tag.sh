# shellcheck shell=bash
# scripts/build-and-tag.sh against the fake docker.

setup() {
    make_repo
    use_fakes
    SHA=$(git -C "$REPO" rev-parse HEAD)
    SHORT=$(git -C "$REPO" rev-parse --short=12 HEAD)
}

build() { capture "$REPO/scripts/build-and-tag.sh" "$@"; }

test_tags_the_image_with_the_short_sha_and_records_it() {
    setup
    build
    assert_eq "$RC" 0 "$ERR"
    assert_eq "$OUT" "$SHORT" "stdout is the tag alone"
    assert_eq "${#SHORT}" 12
    local call
    call=$(calls)
    assert_contains "$call" "docker build "
    assert_contains "$call" "--tag erp-sync:$SHORT $REPO"
    assert_contains "$call" "--label org.opencontainers.image.revision=$SHA"
    assert_contains "$call" "--build-arg GIT_SHA=$SHA"
    assert_not_contains "$call" "latest"
    assert_not_contains "$call" "docker push"
    assert_eq "$(calls | wc -l)" 1
    assert_contains "$(state images.log)" $'\terp-sync:'"$SHORT"$'\t'"$SHA"$'\tlocal'
    # The state it writes is ignored by git: the tree stays clean for the next build.
    assert_eq "$(git -C "$REPO" status --porcelain)" ""
}

test_latest_and_push_only_when_asked() {
    setup
    ERP_SYNC_IMAGE=registry.example.com/acme/erp-sync build --latest --push
    assert_eq "$RC" 0 "$ERR"
    local image=registry.example.com/acme/erp-sync
    assert_contains "$(calls)" "docker tag $image:$SHORT $image:latest"
    assert_eq "$(cat "$FAKE_WORLD/pushed.log")" "$image:$SHORT"$'\n'"$image:latest"
    assert_contains "$(state images.log)" $'\tpushed,latest'
}

test_refuses_a_dirty_tree() {
    setup
    echo "# local edit" >>"$REPO/Dockerfile"
    build
    assert_eq "$RC" 1
    assert_contains "$ERR" "uncommitted changes"
    assert_contains "$ERR" "Dockerfile"
    assert_eq "$(call_count)" 0
    assert_file_absent "$REPO/deploy/state/images.log"

    # An untracked file is in the build context too.
    git -C "$REPO" checkout -q -- Dockerfile
    echo "scratch" >"$REPO/notes.txt"
    build
    assert_eq "$RC" 1
    assert_contains "$ERR" "notes.txt"
    assert_eq "$(call_count)" 0
}

test_force_builds_a_dirty_tree_as_sha_dirty_and_never_publishes_it() {
    setup
    echo "# local edit" >>"$REPO/Dockerfile"
    build --force
    assert_eq "$RC" 0 "$ERR"
    assert_eq "$OUT" "$SHORT-dirty"
    assert_contains "$(calls)" "--tag erp-sync:$SHORT-dirty"

    build --force --push
    assert_eq "$RC" 1
    assert_contains "$ERR" "never tagged latest nor pushed"
    build --force --latest
    assert_eq "$RC" 1
    assert_eq "$(call_count)" 1
}

test_a_failed_build_records_nothing() {
    setup
    FAKE_BUILD_FAILS=1 build
    assert_eq "$RC" 1
    assert_eq "$OUT" ""
    assert_file_absent "$REPO/deploy/state/images.log"
}

test_unknown_options_are_refused() {
    setup
    build --lastest
    assert_eq "$RC" 2
    assert_contains "$ERR" "usage:"
    assert_eq "$(call_count)" 0
}
