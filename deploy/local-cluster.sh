#!/usr/bin/env bash
# A Quiver cluster on a laptop, all on loopback: one redis-server, three hosts
# sharing it (features, cached results, the Redis Streams event bus), each with its
# own data dir, and nginx in front (round robin, passive health checks).
#
#   deploy/local-cluster.sh          # up, then wait; Ctrl-C stops everything
#   deploy/local-cluster.sh up       # start, print the endpoints, return
#   deploy/local-cluster.sh status   # what runs
#   deploy/local-cluster.sh down     # stop what `up` started (by pid)
#
# Settings (environment): QUIVER_BIN (default: build the release binary),
# CLUSTER_DIR (default ${TMPDIR:-/tmp}/quiver-cluster; `up` starts it afresh),
# NGINX_PORT (8080), HOST_PORTS ("8081 8082 8083": one host per port),
# REDIS_PORT (6390), DEMO_FUNCTION (hello-http; empty: deploy nothing).
#
# What it does not do: run an OCI registry (docker-registry). The hosts have no
# OCI blob backend yet (no --registry flag): each keeps its registry index and
# blobs in its data dir, so a registry server would have nothing to serve. For the
# same reason (no shared index, no config propagation between hosts) the demo
# function is deployed to every host, and each host has its own tenants and
# tokens: calls through nginx go to a public function, which needs no token.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir="${CLUSTER_DIR:-${TMPDIR:-/tmp}/quiver-cluster}"
nginx_port="${NGINX_PORT:-8080}"
read -r -a host_ports <<<"${HOST_PORTS:-8081 8082 8083}"
redis_port="${REDIS_PORT:-6390}"
demo="${DEMO_FUNCTION-hello-http}"
pidfile="$dir/pids"
marker="$dir/.quiver-local-cluster"

say() { printf '%s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }

# Running, and not a zombie nobody has reaped yet (Linux: /proc; elsewhere kill -0).
alive() { kill -0 "$1" 2>/dev/null && ! grep -qs ') Z ' "/proc/$1/stat"; }

# Stop every process `up` recorded: SIGTERM (the hosts save usage counters), then
# SIGKILL what is still there after 10 s.
down() {
  [ -f "$pidfile" ] || { say "nothing to stop in $dir"; return 0; }
  local name pid left
  while read -r name pid; do
    alive "$pid" && kill -TERM "$pid" 2>/dev/null && say "stopping $name (pid $pid)"
  done <"$pidfile"
  for _ in $(seq 100); do
    left=0
    while read -r name pid; do alive "$pid" && left=1; done <"$pidfile"
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  while read -r name pid; do
    alive "$pid" && { kill -KILL "$pid" 2>/dev/null || true; say "killed $name (pid $pid)"; }
  done <"$pidfile"
  rm -f "$pidfile"
  say "stopped"
}

status() {
  [ -f "$pidfile" ] || { say "not running ($dir)"; return 1; }
  local name pid bad=0
  while read -r name pid; do
    if alive "$pid"; then say "$name pid $pid running"; else say "$name pid $pid gone"; bad=1; fi
  done <"$pidfile"
  return "$bad"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local what="$1" secs="$2"; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up in ${secs}s (logs in $dir)"
}

host_ready() { curl -fsS "http://127.0.0.1:$1/healthz" | grep -q '"ready":true'; }

up() {
  command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
  command -v nginx >/dev/null || die "nginx not found (apt-get install nginx)"
  command -v curl >/dev/null || die "curl not found"
  if [ -f "$pidfile" ]; then
    while read -r _ pid; do alive "$pid" && die "already running ($pidfile); run: $0 down"; done <"$pidfile"
  fi
  for p in "$redis_port" "$nginx_port" "${host_ports[@]}"; do
    port_free "$p" || die "port $p is in use"
  done
  if [ -z "${QUIVER_BIN:-}" ]; then
    # shellcheck source=scripts/env.sh
    source scripts/env.sh
    build_host --release
    QUIVER_BIN="$CARGO_TARGET_DIR/release/quiver"
  fi
  [ -x "$QUIVER_BIN" ] || die "QUIVER_BIN=$QUIVER_BIN is not an executable"
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    [ -f "$marker" ] || die "$dir is not empty and not a local cluster's: set CLUSTER_DIR"
    rm -rf "$dir"
  fi
  mkdir -p "$dir/redis" "$dir/nginx/tmp"
  touch "$marker"
  : >"$pidfile"
  # A failure from here on (set -e, or die) stops what started.
  trap 'down >/dev/null' EXIT

  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir/redis" --logfile "$dir/redis.log" --daemonize no </dev/null >/dev/null 2>&1 &
  echo "redis $!" >>"$pidfile"
  wait_for redis-server 10 redis-cli -h 127.0.0.1 -p "$redis_port" ping
  local redis_url="redis://127.0.0.1:$redis_port/0"
  say "redis  $redis_url  pid $!"

  local i=0 upstreams=""
  for p in "${host_ports[@]}"; do
    i=$((i + 1))
    "$QUIVER_BIN" serve --listen "127.0.0.1:$p" --data-dir "$dir/host$i" \
      --redis "$redis_url" --host-id "host$i" </dev/null >"$dir/host$i.log" 2>&1 &
    echo "host$i $!" >>"$pidfile"
    upstreams+="    server 127.0.0.1:$p max_fails=1 fail_timeout=5s;"$'\n'
  done
  i=0
  for p in "${host_ports[@]}"; do
    i=$((i + 1))
    wait_for "host$i" 60 host_ready "$p"
    say "host$i  http://127.0.0.1:$p  pid $(awk -v n="host$i" '$1 == n {print $2}' "$pidfile")  data $dir/host$i  token $dir/host$i/admin-token"
  done

  if [ -n "$demo" ]; then
    say "no shared registry index yet: deploying $demo (public) to each host separately"
    i=0
    for p in "${host_ports[@]}"; do
      i=$((i + 1))
      QUIVER_SERVER="http://127.0.0.1:$p" QUIVER_TOKEN="$(cat "$dir/host$i/admin-token")" \
        "$QUIVER_BIN" deploy "functions/$demo" --set triggers.http=public >"$dir/deploy-host$i.log" 2>&1 \
        || die "deploying $demo to host$i failed: $(cat "$dir/deploy-host$i.log")"
      say "host$i  $(tail -n 1 "$dir/deploy-host$i.log")"
    done
  fi

  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;"
  cat >"$dir/nginx/nginx.conf" <<EOF
# Written by deploy/local-cluster.sh.
$user_line
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log $dir/nginx/access.log;
  client_body_temp_path $dir/nginx/tmp/body;
  proxy_temp_path $dir/nginx/tmp/proxy;
  fastcgi_temp_path $dir/nginx/tmp/fastcgi;
  uwsgi_temp_path $dir/nginx/tmp/uwsgi;
  scgi_temp_path $dir/nginx/tmp/scgi;
  # Round robin. Passive health checks: a host that fails a connection or times
  # out is skipped for fail_timeout, and the request goes to the next host (a
  # POST only when it was not sent yet; nginx never resends a non-idempotent one).
  upstream quiver {
$upstreams    keepalive 16;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    client_max_body_size 16m;
    location / {
      proxy_pass http://quiver;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_connect_timeout 1s;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
      # Which host answered (after a retry: every host tried, the last answered).
      add_header X-Quiver-Upstream \$upstream_addr always;
    }
  }
}
EOF
  nginx -t -q -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf"
  nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf" -g 'daemon off;' \
    </dev/null >/dev/null 2>&1 &
  echo "nginx $!" >>"$pidfile"
  wait_for nginx 10 curl -fsS "http://127.0.0.1:$nginx_port/healthz"
  say "nginx  http://127.0.0.1:$nginx_port  pid $!  (round robin over ${#host_ports[@]} hosts; max_fails=1 fail_timeout=5s)"
  say "pids   $pidfile"
  [ -n "$demo" ] && say "try:   curl -si http://127.0.0.1:$nginx_port/http/default/$demo/hi"
  trap - EXIT
  say "up"
}

case "${1:-run}" in
  up) up ;;
  down) down ;;
  status) status ;;
  run)
    up
    trap 'down' EXIT
    trap 'exit 130' INT TERM
    say "Ctrl-C stops the cluster"
    while true; do sleep 3600 & wait $!; done
    ;;
  *) die "usage: $0 [run|up|down|status]" ;;
esac
