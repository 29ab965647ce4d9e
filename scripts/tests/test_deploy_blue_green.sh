# shellcheck shell=bash
# scripts/deploy-blue-green.sh against the fake docker and curl.

setup() {
    make_repo
    use_fakes
}

test_first_deploy_migrates_starts_blue_and_nginx() {
    setup
    deploy_ok aaa111
    assert_before 'run --rm --no-deps blue migrate .*BLUE_TAG=aaa111' 'up .* blue '
    assert_before 'up .* blue ' 'curl http://127.0.0.1:13001/health'
    assert_before 'curl http://127.0.0.1:13001/health' 'up .* nginx '
    assert_eq "$(container_state blue)" "running aaa111"
    assert_eq "$(container_state nginx)" "running nginx"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server blue:3000;"
    assert_contains "$(state current)" "active_color=blue"
    assert_eq "$(state releases)" "aaa111"
    curl -fs http://127.0.0.1:18080/health || fail "nothing serves through the proxy"
}

test_a_healthy_new_colour_is_switched_to_and_the_old_one_drained() {
    setup
    deploy_ok aaa111
    local before
    before=$(call_count)
    deploy_ok bbb222
    assert_contains "$OUT$ERR" "bbb222 is live on green"
    local new
    new=$(calls_since "$before")
    assert_not_contains "$new" "compose up --detach --no-deps --force-recreate blue"
    assert_before 'run --rm --no-deps green migrate .*GREEN_TAG=bbb222' 'up --detach --no-deps --force-recreate green .*GREEN_TAG=bbb222'
    assert_before 'up --detach --no-deps --force-recreate green' 'curl http://127.0.0.1:13002/health'
    assert_before 'curl http://127.0.0.1:13002/health' 'exec -T nginx nginx -t'
    assert_before 'exec -T nginx nginx -t' 'exec -T nginx nginx -s reload'
    assert_before 'exec -T nginx nginx -s reload' 'compose .* stop --timeout 5 blue'
    # The migration ran with the new image while blue still served.
    assert_eq "$(cat "$FAKE_WORLD/migrations.log")" $'aaa111\nbbb222'
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server green:3000;"
    assert_eq "$(container_state green)" "running bbb222"
    assert_eq "$(container_state blue)" "stopped aaa111"
    assert_eq "$(state current)" $'active_color=green\nblue_tag=aaa111\ngreen_tag=bbb222'
    assert_eq "$(state releases)" $'aaa111\nbbb222'
    curl -fs http://127.0.0.1:18080/health || fail "the proxy does not serve green"

    # The third release goes back to blue.
    deploy_ok ccc333
    assert_eq "$(container_state blue)" "running ccc333"
    assert_eq "$(container_state green)" "stopped bbb222"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server blue:3000;"
}

test_an_unhealthy_new_colour_is_rolled_back_and_the_old_one_keeps_serving() {
    setup
    deploy_ok aaa111
    have_image erp-sync:bad222
    local before started current
    before=$(call_count)
    current=$(state current)
    started=$(date +%s)
    FAKE_UNHEALTHY_TAGS=bad222 deploy bad222
    assert_eq "$RC" 1 "an unhealthy deploy must fail"
    (($(date +%s) - started < 30)) || fail "the health wait is not bounded"
    assert_contains "$ERR" "did not answer 200 on /health within 2s"
    assert_contains "$ERR" "blue keeps serving"
    local new
    new=$(calls_since "$before")
    # Polled more than once, then gave up; nginx never touched; blue never stopped.
    (($(grep -c 'curl http://127.0.0.1:13002/health' <<<"$new") > 1)) || fail "polled once only"
    assert_not_contains "$new" "nginx -s reload"
    assert_not_contains "$new" "nginx -t"
    assert_not_contains "$new" "stop --timeout 5 blue"
    assert_contains "$new" "stop --timeout 5 green"
    assert_eq "$(container_state green)" "stopped bad222"
    assert_eq "$(container_state blue)" "running aaa111"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server blue:3000;"
    assert_contains "$(state nginx/upstream.conf)" "server blue:3000;"
    assert_eq "$(state current)" "$current"
    assert_eq "$(state releases)" "aaa111"
    assert_contains "$(state history.log)" "deploy bad222 green failed"
    curl -fs http://127.0.0.1:18080/health || fail "the old colour stopped serving"

    # The next deploy still goes to the idle colour, green.
    deploy_ok ccc333
    assert_eq "$(container_state green)" "running ccc333"
}

test_nginx_refusing_the_switch_puts_the_old_upstream_back() {
    setup
    deploy_ok aaa111
    have_image erp-sync:bbb222
    FAKE_NGINX_TEST_FAILS=1 deploy bbb222
    assert_eq "$RC" 1
    assert_contains "$(state nginx/upstream.conf)" "server blue:3000;"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server blue:3000;"
    assert_eq "$(container_state green)" "stopped bbb222"
    assert_eq "$(container_state blue)" "running aaa111"
    assert_contains "$(state current)" "active_color=blue"
}

test_a_proxy_that_does_not_serve_the_new_colour_is_switched_back() {
    setup
    deploy_ok aaa111
    have_image erp-sync:bbb222
    FAKE_PROXY_BROKEN=1 deploy bbb222
    assert_eq "$RC" 1
    assert_contains "$ERR" "nginx did not serve green"
    # Switched, found broken, switched back with a checked reload.
    assert_contains "$(state nginx/upstream.conf)" "server blue:3000;"
    assert_contains "$(cat "$FAKE_WORLD/nginx-loaded.conf")" "server blue:3000;"
    assert_eq "$(container_state blue)" "running aaa111"
    assert_eq "$(container_state green)" "stopped bbb222"
    assert_eq "$(state releases)" "aaa111"
}

test_a_failed_migration_changes_nothing() {
    setup
    deploy_ok aaa111
    have_image erp-sync:bbb222
    local before
    before=$(call_count)
    FAKE_MIGRATE_FAILS_TAGS=bbb222 deploy bbb222
    assert_eq "$RC" 1
    assert_contains "$ERR" "migrations failed with bbb222; nothing was switched (blue still serves)"
    assert_not_contains "$(calls_since "$before")" "compose up"
    assert_eq "$(container_state green)" absent
    assert_eq "$(state releases)" "aaa111"
}

test_a_colour_that_does_not_start_is_stopped_and_the_old_one_keeps_serving() {
    setup
    deploy_ok aaa111
    have_image erp-sync:bbb222
    FAKE_START_FAILS_TAGS=bbb222 deploy bbb222
    assert_eq "$RC" 1
    assert_contains "$ERR" "green (bbb222) did not start; rolling back: blue keeps serving"
    assert_not_contains "$(calls)" "nginx -s reload"
    assert_eq "$(container_state blue)" "running aaa111"
    assert_eq "$(state releases)" "aaa111"
    curl -fs http://127.0.0.1:18080/health || fail "the old colour stopped serving"
}

test_a_missing_image_fails_before_any_change() {
    setup
    deploy nope999
    assert_eq "$RC" 1
    assert_contains "$ERR" "image erp-sync:nope999 not found"
    assert_not_contains "$(calls)" "compose"
    assert_file_absent "$REPO/deploy/state/current"

    # One the registry has is pulled, then deployed.
    FAKE_REGISTRY=erp-sync:reg777 deploy reg777
    assert_eq "$RC" 0 "$ERR"
    assert_before 'docker pull erp-sync:reg777' ' run --rm'
}

test_bad_arguments_are_refused_before_docker_is_called() {
    setup
    deploy 'x;rm -rf /'
    assert_eq "$RC" 1
    assert_contains "$ERR" "is not a valid image tag"
    deploy
    assert_eq "$RC" 2
    deploy aaa111 bbb222
    assert_eq "$RC" 2
    assert_eq "$(call_count)" 0
}

test_dry_run_prints_every_step_and_changes_nothing() {
    setup
    # On a host never deployed to: no state directory appears.
    have_image erp-sync:aaa111
    deploy aaa111 --dry-run
    assert_eq "$RC" 0 "$ERR"
    assert_file_absent "$REPO/deploy/state"
    assert_eq "$(container_state blue)" absent

    deploy_ok aaa111
    have_image erp-sync:bbb222
    local before print
    before=$(call_count)
    print=$(fingerprint "$REPO/deploy/state")
    deploy bbb222 --dry-run
    assert_eq "$RC" 0 "$ERR"
    assert_contains "$OUT" "would run: compose run --rm --no-deps green migrate"
    assert_contains "$OUT" "would run: compose up --detach --no-deps --force-recreate green"
    assert_contains "$OUT" "would wait up to 2s for 200 from http://127.0.0.1:13002/health"
    assert_contains "$OUT" "would write $REPO/deploy/state/nginx/upstream.conf: upstream erp_sync -> green:3000"
    assert_contains "$OUT" "would run: compose exec -T nginx nginx -t"
    assert_contains "$OUT" "would run: compose exec -T nginx nginx -s reload"
    assert_contains "$OUT" "would check http://127.0.0.1:18080/health through nginx"
    assert_contains "$OUT" "would run: compose stop --timeout 5 blue"
    assert_contains "$OUT" "[dry-run] nothing was changed"
    assert_not_contains "$ERR" "is live on"
    assert_eq "$(fingerprint "$REPO/deploy/state")" "$print" "the dry run changed the state"
    # Only read-only docker calls, and no health probe.
    local call read_only='^docker image inspect |^docker compose .* ps --status running --services '
    while IFS= read -r call; do
        [[ $call =~ $read_only ]] ||
            fail "the dry run made a call that is not read-only: $call"
    done < <(calls_since "$before")
    assert_eq "$(container_state green)" absent
    assert_eq "$(container_state blue)" "running aaa111"
}

test_redeploying_the_live_tag_does_nothing_unless_forced() {
    setup
    deploy_ok aaa111
    local before
    before=$(call_count)
    deploy aaa111
    assert_eq "$RC" 0
    assert_contains "$ERR" "aaa111 is already live on blue; nothing to do"
    assert_eq "$(call_count)" "$before"

    # --force starts the same tag on the idle colour (a changed .env.prod), then drains blue.
    deploy aaa111 --force
    assert_eq "$RC" 0 "$ERR"
    assert_eq "$(container_state green)" "running aaa111"
    assert_eq "$(container_state blue)" "stopped aaa111"
    assert_eq "$(state releases)" "aaa111"
}

test_two_deploys_at_once_are_refused() {
    setup
    mkdir -p "$REPO/deploy/state/nginx"
    exec 8>"$REPO/deploy/state/deploy.lock"
    flock -n 8
    have_image erp-sync:aaa111
    deploy aaa111
    assert_eq "$RC" 1
    assert_contains "$ERR" "another deploy or rollback is running"
    assert_eq "$(call_count)" 0
}

test_the_shipped_nginx_config_accepts_the_written_upstream() {
    [[ -n ${NGINX_BIN:-} ]] || fail "NGINX_BIN is not set (scripts/tests/run.sh provides nginx)"
    setup
    deploy_ok aaa111
    # The shipped nginx.conf and the upstream the script wrote, with container paths and
    # names replaced by local ones (nginx -t resolves upstream hosts).
    local dir=$TEST_TMP/nginx
    mkdir -p "$dir/erp-sync"
    sed 's/server blue:3000;/server 127.0.0.1:3000;/' "$REPO/deploy/state/nginx/upstream.conf" >"$dir/erp-sync/upstream.conf"
    sed -e "s|/etc/nginx/erp-sync/|$dir/erp-sync/|" -e 's|^user nginx;||' \
        -e "s|^http {|http { client_body_temp_path $dir/b; proxy_temp_path $dir/p; fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;|" \
        "$PROJECT_ROOT/deploy/nginx/nginx.conf" >"$dir/nginx.conf"
    capture "$NGINX_BIN" -t -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    assert_eq "$RC" 0 "nginx -t: $ERR"
    # And nginx -t does catch a broken upstream.
    echo 'server broken' >>"$dir/erp-sync/upstream.conf"
    capture "$NGINX_BIN" -t -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    assert_eq "$RC" 1
}
