#!/usr/bin/env bash
# /healthz requests/s with wrk against ringup and nginx (`return 200`) on the
# same run, same worker count, same connection count; prints a markdown table
# with the ratio ringup / nginx. Loopback only; each wrk run is bounded.
#   bench/healthz.sh [CONNECTIONS] [SECONDS]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
conns=${1:-1000}
secs=${2:-10}
workers=$(nproc)
tmp=$(mktemp -d)
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "healthz.sh: nothing listens on $1" >&2
    return 1
}

# rps and p99 from one wrk run
run_wrk() {
    wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$1/healthz" >"$tmp/wrk.out" 2>&1
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")
    errs=$(awk '/Socket errors:/ {print $0}' "$tmp/wrk.out" | sed 's/.*Socket errors: //')
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.out")
    echo "${rps:-0} ${p99:-?} ${non2xx:-0} ${errs:-none}"
}

ulimit -n 20000 2>/dev/null || true
rport=$(free_port)
nport=$(free_port)

cat >"$tmp/nginx.conf" <<CONF
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
daemon off;
events { worker_connections 20000; multi_accept on; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$nport reuseport backlog=4096;
        location = /healthz { default_type application/json; return 200 '{"status":"ok"}'; }
    }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp" &
pids+=($!)
LOG_LEVEL=warn "$root/ringup" serve --listen "127.0.0.1:$rport" --workers "$workers" \
    2>"$tmp/ringup.log" &
pids+=($!)
wait_port "$nport"
wait_port "$rport"

# Warm both, then measure alternately so drift hits both.
wrk -t2 -c100 -d2s "http://127.0.0.1:$rport/healthz" >/dev/null
wrk -t2 -c100 -d2s "http://127.0.0.1:$nport/healthz" >/dev/null
read -r r_rps r_p99 r_bad r_err < <(run_wrk "$rport")
read -r n_rps n_p99 n_bad n_err < <(run_wrk "$nport")

echo "| server | connections | requests/s | p99 | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|"
echo "| ringup ($workers workers) | $conns | $r_rps | $r_p99 | $r_bad | $r_err |"
echo "| nginx ($workers workers, return 200) | $conns | $n_rps | $n_p99 | $n_bad | $n_err |"
awk -v a="$r_rps" -v b="$n_rps" 'BEGIN { if (b > 0) printf "\nratio ringup / nginx: %.2f\n", a / b }'
