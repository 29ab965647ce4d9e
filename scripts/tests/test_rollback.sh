# shellcheck shell=bash
# scripts/rollback.sh against the fake docker and curl.

setup() {
    make_repo
    use_fakes
}

test_rollback_picks_the_previous_tag_without_migrating() {
    setup
    deploy_ok aaa111 bbb222 ccc333
    local before
    before=$(call_count)
    rollback
    assert_eq "$RC" 0 "$ERR"
    assert_contains "$ERR" "rolling back from ccc333 to bbb222"
    assert_contains "$ERR" "rolled back to bbb222; http://127.0.0.1:18080/health answers 200"
    local new
    new=$(calls_since "$before")
    assert_not_contains "$new" "migrate"
    # ccc333 ran on blue, so bbb222 comes back on green, then blue drains.
    assert_before 'up --detach --no-deps --force-recreate green .*GREEN_TAG=bbb222' 'nginx -s reload'
    assert_eq "$(container_state green)" "running bbb222"
    assert_eq "$(container_state blue)" "stopped ccc333"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server green:3000;"
    assert_eq "$(state releases)" $'aaa111\nbbb222'
    assert_contains "$(state history.log)" "rollback bbb222 green live (was ccc333 on blue)"
    # The health check through nginx was the last call.
    assert_eq "$(calls | tail -n 1)" "curl http://127.0.0.1:18080/health"
}

test_a_second_rollback_goes_one_release_further_back() {
    setup
    deploy_ok aaa111 bbb222 ccc333
    rollback
    assert_eq "$RC" 0 "$ERR"
    rollback
    assert_eq "$RC" 0 "$ERR"
    assert_contains "$ERR" "rolling back from bbb222 to aaa111"
    assert_eq "$(state releases)" "aaa111"
    assert_contains "$(state current)" "active_color=blue"
    assert_eq "$(container_state blue)" "running aaa111"
    rollback
    assert_eq "$RC" 1
    assert_contains "$ERR" "no earlier release recorded"
}

test_rollback_to_a_given_tag() {
    setup
    deploy_ok aaa111 bbb222 ccc333
    rollback aaa111
    assert_eq "$RC" 0 "$ERR"
    assert_eq "$(state releases)" "aaa111"
    assert_eq "$(container_state green)" "running aaa111"

    # A tag never deployed by these scripts (built by hand, say) is pushed as a new release.
    have_image erp-sync:hand999
    rollback hand999
    assert_eq "$RC" 0 "$ERR"
    assert_eq "$(state releases)" $'aaa111\nhand999'

    rollback hand999
    assert_eq "$RC" 1
    assert_contains "$ERR" "hand999 is already live"
}

test_rollback_without_history_says_what_to_do_and_calls_nothing() {
    setup
    rollback
    assert_eq "$RC" 1
    assert_contains "$ERR" "no earlier release recorded"
    assert_contains "$ERR" "rollback.sh TAG"
    deploy_ok aaa111
    local before
    before=$(call_count)
    rollback
    assert_eq "$RC" 1
    assert_contains "$ERR" "no earlier release recorded"
    assert_eq "$(call_count)" "$before"
}

test_a_rollback_that_does_not_come_up_leaves_the_live_release_serving() {
    setup
    deploy_ok aaa111 bbb222
    FAKE_UNHEALTHY_TAGS=aaa111 rollback
    assert_eq "$RC" 1
    assert_eq "$(container_state blue)" "stopped aaa111"
    assert_eq "$(container_state green)" "running bbb222"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server green:3000;"
    assert_eq "$(state releases)" $'aaa111\nbbb222'
    curl -fs http://127.0.0.1:18080/health || fail "bbb222 stopped serving"
}

test_rollback_dry_run_changes_nothing() {
    setup
    deploy_ok aaa111 bbb222
    local before print
    before=$(call_count)
    print=$(fingerprint "$REPO/deploy/state")
    rollback --dry-run
    assert_eq "$RC" 0 "$ERR"
    assert_contains "$OUT" "would run: compose up --detach --no-deps --force-recreate blue"
    assert_not_contains "$OUT" "migrate"
    assert_contains "$OUT" "would verify http://127.0.0.1:18080/health"
    assert_eq "$(fingerprint "$REPO/deploy/state")" "$print"
    assert_not_contains "$(calls_since "$before")" " up "
    assert_not_contains "$(calls_since "$before")" "curl"
}
