#!/usr/bin/env bash
# bench/scale.sh: `make bench-scale`. Holds 10,000 concurrent slow uploads against one ringup
# (FSYNC=false): every connection trickles its 20 KiB PUT body at 1 KiB/s and starts the next
# upload when one is answered, for SCALE_SECS (default 60) seconds, driven by
# build/bench/ringup-load. Expects zero errors; samples the server's RSS, its process
# descriptors and ringup_connections_open every second. Then looks for the largest number of
# idle connections the server holds: 20,000, 30,000, ... (ringup's sockets are io_uring
# direct descriptors, outside the process's 20,000-descriptor limit), until a step does not
# hold every connection or the client cannot open them. Prints markdown.
#
#   bench/scale.sh
#
# Loopback only (sources spread over 127.0.0.0/8 by ringup-load); bounded in time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
me=scale.sh
secs=${SCALE_SECS:-60}
conns=${SCALE_CONNS:-10000}
load=$root/build/bench/ringup-load
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

need curl
[ -x "$load" ] || {
    log "$load is missing; run make build/bench/ringup-load"
    exit 1
}
bench_setup

# watch PID PORT OUT: "rss_kB descriptors connections_open" every second until killed
watch_server() {
    local nfd open
    while :; do
        nfd=$(ls "/proc/$1/fd" 2>/dev/null | wc -l)
        # A scrape that times out under load must not end the sampler (set -e, pipefail).
        open=$(curl -s --max-time 2 "http://127.0.0.1:$2/metrics" |
            awk '$1 == "ringup_connections_open" {print $2}') || open=0
        echo "$(rss_kb "$1") $nfd ${open:-0}" >>"$3"
        sleep 1
    done
}

# peaks FILE: "max_rss_MiB max_fds max_open"
peaks() {
    awk '$1 > r { r = $1 } $2 > f { f = $2 } $3 > o { o = $3 } END { printf "%.1f %d %d", r / 1024, f, o }' "$1"
}

# --- 10,000 slow uploads ---------------------------------------------------------------------
settle
start_ringup scale false
spid=$pid
sport=$port
idle_rss=$(rss_kb "$spid")
watch_server "$spid" "$sport" "$tmp/slow.watch" &
wpid=$!
pids+=("$wpid")
log "$conns connections trickling 20 KiB bodies at 1 KiB/s for ${secs}s"
rc=0
timeout $((secs + 300)) "$load" --quiet --json -c "$conns" -d "$secs" -s 20k --trickle 1024 \
    -T "$token" --verify 0 --timeout 120 put "http://127.0.0.1:$sport" >"$tmp/slow.json" \
    2>"$tmp/slow.err" || rc=$?
stop "$wpid"
read -r s_rss s_fds s_open <<<"$(peaks "$tmp/slow.watch")"
kill -0 "$spid" 2>/dev/null || log "ringup died during the slow uploads"
stop "$spid"

# --- idle connections past the descriptor limit ------------------------------------------------
settle
start_ringup idle false
ipid=$pid
iport=$port
steps=()
for n in 20000 30000 40000 50000 60000; do
    : >"$tmp/idle-$n.watch"
    watch_server "$ipid" "$iport" "$tmp/idle-$n.watch" &
    wpid=$!
    pids+=("$wpid")
    log "$n idle connections, 5 s"
    irc=0
    timeout 300 "$load" --quiet --json -c "$n" -d 5 idle "http://127.0.0.1:$iport" \
        >"$tmp/idle-$n.json" 2>"$tmp/idle-$n.err" || irc=$?
    stop "$wpid"
    held=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("open_at_end") or 0)' \
        "$tmp/idle-$n.json" 2>/dev/null || echo 0)
    read -r i_rss i_fds i_open <<<"$(peaks "$tmp/idle-$n.watch")"
    steps+=("$n|$held|$i_open|$i_rss|$i_fds|$irc|$(tail -n 1 "$tmp/idle-$n.err" | cut -c1-120)")
    if [ "$held" != "$n" ] || ! kill -0 "$ipid" 2>/dev/null; then break; fi
    sleep 2
done
stop "$ipid"

# --- report (also in bench/results/<UTC time>-scale.md) -----------------------------------------
mkdir -p "$root/bench/results"
exec > >(tee "$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-scale.md")
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo
echo "ringup $rev, $workers workers, FSYNC=false; client build/bench/ringup-load"
echo
python3 - "$tmp/slow.json" "$conns" "$secs" "$rc" "$idle_rss" "$s_rss" "$s_fds" "$s_open" <<'PY'
import json, sys
f, conns, secs, rc, idle, rss, fds, open_ = sys.argv[1:]
try:
    r = json.load(open(f))
except (OSError, ValueError):
    r = {}
lat = r.get("latency_us") or {}
errs = sum((r.get("errors") or {}).values())
print("| slow uploads | value |")
print("|---|---|")
print("| connections, each trickling 1 KiB/s | %s for %s s |" % (conns, secs))
print("| uploads answered | %s (status %s) |" % (r.get("requests", 0), r.get("status", {})))
print("| socket errors | %d %s |" % (errs, r.get("errors", {})))
print("| upload time p50 / p99 | %.1f s / %.1f s |" % (lat.get("p50", 0) / 1e6, lat.get("p99", 0) / 1e6))
print("| ringup_connections_open, peak | %s |" % open_)
print("| server RSS idle / peak | %.1f MiB / %s MiB |" % (int(idle) / 1024.0, rss))
print("| server process descriptors, peak | %s |" % fds)
print("| ringup-load exit status | %s |" % rc)
PY
echo
echo "| idle connections asked | held to the end | ringup_connections_open peak | server RSS peak | process descriptors peak | ringup-load exit | last client line |"
echo "|---|---|---|---|---|---|---|"
for s in "${steps[@]}"; do
    IFS='|' read -r n held open rss fds irc line <<<"$s"
    echo "| $n | $held | $open | $rss MiB | $fds | $irc | $line |"
done
