#!/usr/bin/env bash
# Raw PUT uploads with wrk against ringup and nginx (dav_methods PUT) on the same run: 16 KiB
# bodies at 100 and 1,000 connections, 10 MiB bodies at 50 connections, ringup also with
# FSYNC=true (nginx never fsyncs, so only the FSYNC=false rows get a ratio). Then the disk's
# ceiling with fio (O_DIRECT and buffered sequential writes) on the same filesystem, and
# ringup's peak RSS during the 10 MiB run. Prints markdown tables.
#
#   bench/put.sh [SECONDS]        # seconds per measurement, default 10
#   bench/put.sh SECONDS paths    # ringup alone: buffered vs splice vs O_DIRECT by body size
#
# The paths matrix runs one body size after another, each through the three raw-body paths
# (SPLICE_UPLOADS=false, SPLICE_UPLOADS=true, DIRECT_IO_THRESHOLD=1), same run, FSYNC=false;
# it is what sets the defaults of SPLICE_UPLOADS and DIRECT_IO_THRESHOLD.
#
# Use 5 or more: the first 10 MiB uploads of 50 connections finish together after 1-2 s, so a
# shorter run leaves the 10 MiB rows with few or no completed uploads. Numbers move a lot from
# run to run on a shared machine; compare ratios, and run it more than once.
#
# Loopback only; every wrk, fio and server run is bounded in time. Each measurement writes
# into a fresh storage directory of its own (deleting many files slows later file creation on
# ext4 for minutes), all under one scratch directory in var/ that is removed at exit, with the
# scratch database. Needs `tools/bootstrap --bench` (wrk, nginx-light, fio) and `make ringup`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-10}
matrix=${2:-main}
case $secs in
'' | *[!0-9]* | 0)
    echo "usage: bench/put.sh [SECONDS [paths]]" >&2
    exit 2
    ;;
esac
case $matrix in
main | paths) ;;
*)
    echo "usage: bench/put.sh [SECONDS [paths]]" >&2
    exit 2
    ;;
esac
workers=2
small=16384
large=10485760
lua=$root/bench/put.lua
db=ringup_put_$$

for b in wrk nginx fio python3 createdb dropdb; do
    command -v "$b" >/dev/null || {
        echo "put.sh: $b not found; run tools/bootstrap --bench" >&2
        exit 1
    }
done
[ -x "$root/ringup" ] || {
    echo "put.sh: $root/ringup is missing; run make ringup" >&2
    exit 1
}

mkdir -p "$root/var"
tmp=$(mktemp -d)                            # configs, logs, wrk output
data=$(mktemp -d -p "$root/var" put.XXXXXX) # storage: the repository's filesystem
pids=()
db_made=0
stop_devstack=0

log() { echo "put.sh: $*" >&2; }

cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$db_made" = 1 ]; then
        timeout 60 dropdb --force -h "$pghost" "$db" 2>/dev/null || log "dropdb $db failed"
    fi
    if [ "$stop_devstack" = 1 ]; then "$root/tools/devstack" stop >/dev/null 2>&1 || true; fi
    rm -rf "$data" "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until something accepts on PORT, while PID lives
wait_port() {
    for _ in $(seq 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    log "nothing listens on $1"
    return 1
}

# stop PID: SIGTERM, bounded wait, then SIGKILL
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=()
    for i in "${pids[@]}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
    pids=("${keep[@]}")
}

# Flush what earlier runs left dirty, so no run pays for another's writeback.
settle() { timeout 180 sync || true; }

ulimit -n 20000 2>/dev/null || true

# --- devstack, scratch database, token ------------------------------------------------------
if ! "$root/tools/devstack" status >/dev/null 2>&1; then
    stop_devstack=1
    "$root/tools/devstack" start >&2
fi
eval "$("$root/tools/devstack" env)"
pghost=$(python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.parse_qs(u.urlsplit(sys.argv[1]).query)["host"][0]))' "$DATABASE_URL")
createdb -h "$pghost" "$db"
db_made=1
db_url="postgresql:///$db?host=$pghost"
DATABASE_URL=$db_url "$root/ringup" migrate >"$tmp/migrate.log" 2>&1 || {
    cat "$tmp/migrate.log" >&2
    exit 1
}
token=$(DATABASE_URL=$db_url "$root/ringup" token create --user bench 2>"$tmp/token.log")
token=${token%%$'\n'*}
[ -n "$token" ] || {
    cat "$tmp/token.log" >&2
    exit 1
}

# --- servers ----------------------------------------------------------------------------------
# start_ringup NAME FSYNC: fresh storage $data/NAME; sets port, pid
start_ringup() {
    port=$(free_port)
    # Rate limits, queue cap and adaptive limiting are policy, not the upload path: out of the way.
    DATABASE_URL=$db_url REDIS_URL=$REDIS_URL LOG_LEVEL=warn \
        "$root/ringup" serve --listen "127.0.0.1:$port" --workers "$workers" \
        --storage-dir "$data/$1" --fsync "$2" --shutdown-timeout 5000 \
        --upload-rate-limit 1000000000 --global-rate-limit 1000000000 \
        --enable-adaptive-rate-limiting false --max-queue-size 100000000 \
        "${ringup_extra[@]}" 2>>"$tmp/$1.log" &
    pid=$!
    pids+=("$pid")
    wait_port "$port" "$pid" || {
        tail -n 20 "$tmp/$1.log" >&2
        exit 1
    }
}

# start_nginx NAME: fresh storage $data/NAME; sets port, pid
start_nginx() {
    port=$(free_port)
    mkdir -p "$data/$1/tmp" "$tmp/$1"
    # Workers write where the master (this user) made the directories; as root, that needs
    # workers running as root too (nginx's default would be "nobody").
    local user=""
    [ "$(id -u)" = 0 ] && user="user root;"
    cat >"$tmp/$1/nginx.conf" <<CONF
$user
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $tmp/$1/nginx.pid;
error_log $tmp/$1.log warn;
daemon off;
events { worker_connections 20000; multi_accept on; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_max_body_size 20m;
    client_body_buffer_size 16k;
    client_body_temp_path $data/$1/tmp;
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location /v1/files/ {
            root $data/$1;
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }
    }
}
CONF
    nginx -c "$tmp/$1/nginx.conf" -p "$tmp/$1" 2>>"$tmp/$1.log" &
    pid=$!
    pids+=("$pid")
    wait_port "$port" "$pid" || {
        tail -n 20 "$tmp/$1.log" >&2
        exit 1
    }
}

# --- one measurement --------------------------------------------------------------------------
# wrk_put PORT CONNS SECONDS SIZE TOKEN PREFIX OUT
wrk_put() {
    timeout $(($3 + 60)) wrk -t2 -c"$2" -d"$3s" --timeout 30s --latency -s "$lua" \
        "http://127.0.0.1:$1/" -- "$4" "$5" "$6" >"$7" 2>&1 || true
}

# rss_watch PID OUT: append VmRSS (kB) to OUT every 0.2 s until killed or PID is gone
rss_watch() {
    while kill -0 "$1" 2>/dev/null; do
        awk '/^VmRSS:/ {print $2}' "/proc/$1/status" >>"$2" 2>/dev/null || true
        sleep 0.2
    done
}

rows=()
rss_idle=() rss_peak=()
ringup_dead=()

ringup_extra=()

# measure SCENARIO SERVER(ringup|nginx) FSYNC CONNS SIZE NAME [PATH]
# PATH (ringup only): buffered, splice or direct; default: the server's defaults
measure() {
    local scen=$1 srv=$2 fs=$3 conns=$4 size=$5 name=$6 path=${7:-} tok=- label out
    out=$tmp/$name.wrk
    settle
    case $path in
    buffered) ringup_extra=(--splice-uploads false --direct-io-threshold 0) ;;
    splice) ringup_extra=(--splice-uploads true --direct-io-threshold 0) ;;
    direct) ringup_extra=(--splice-uploads false --direct-io-threshold 1) ;;
    *) ringup_extra=() ;;
    esac
    if [ "$srv" = ringup ]; then
        start_ringup "$name" "$fs"
        tok=$token
        label="ringup (FSYNC=$fs${path:+, $path})"
    else
        start_nginx "$name"
        label="nginx"
    fi
    log "$scen: $label, ${secs}s"
    # short warm-up into the same fresh directory, then flush it
    wrk_put "$port" 10 1 "$size" "$tok" warm "$tmp/$name.warm"
    settle
    local watcher=""
    if [ "$srv" = ringup ] && [ "$size" = "$large" ]; then
        rss_idle+=("$fs:$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)")
        rss_watch "$pid" "$tmp/$name.rss" &
        watcher=$!
        pids+=("$watcher")
    fi
    wrk_put "$port" "$conns" "$secs" "$size" "$tok" m "$out"
    if [ -n "$watcher" ]; then
        stop "$watcher"
        rss_peak+=("$fs:$(awk '$1 > m { m = $1 } END { print m + 0 }' "$tmp/$name.rss" 2>/dev/null || echo 0)")
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        ringup_dead+=("$name")
        label="$label, died"
    fi
    stop "$pid"

    local rps p99 bad errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    bad=$(awk '/Non-2xx/ {print $NF}' "$out")
    errs=$(sed -n 's/.*Socket errors: //p' "$out")
    if [ -z "$rps" ]; then
        log "wrk gave no result for $name:"
        tail -n 5 "$out" >&2
    fi
    rows+=("$scen|$label|${rps:-0}|$size|${p99:-?}|${bad:-0}|${errs:-none}|$srv$fs")
}

if [ "$matrix" = paths ]; then
    # Rotate the order inside each size, so no path always runs first on a fresh disk.
    order=(buffered splice direct)
    for size in 65536 262144 1048576 4194304 10485760; do
        for p in "${order[@]}"; do
            measure "$((size / 1024)) KiB PUT, 50 conns" ringup false 50 "$size" "p-$p-$size" "$p"
        done
        order=("${order[@]:1}" "${order[0]}")
    done
    echo
    rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    echo "Raw PUT by write path, wrk -t2, ${secs}s per row, $workers workers, FSYNC=false (ringup $rev); MB = 10^6 bytes"
    echo
    echo "| scenario | server | uploads/s | MB/s | p99 | non-2xx | socket errors |"
    echo "|---|---|---|---|---|---|---|"
    for row in "${rows[@]}"; do
        IFS='|' read -r s label rps size p99 bad errs _ <<<"$row"
        mbs=$(awk -v r="$rps" -v z="$size" 'BEGIN { printf "%.1f", r * z / 1e6 }')
        echo "| $s | $label | $rps | $mbs | $p99 | $bad | $errs |"
    done
    for d in "${ringup_dead[@]}"; do echo "server exited during $d"; done
    exit 0
fi

# Alternate servers inside every cell; flip the order from cell to cell.
measure "16 KiB PUT, 100 conns" ringup false 100 "$small" c1-ringup
measure "16 KiB PUT, 100 conns" nginx - 100 "$small" c1-nginx
measure "16 KiB PUT, 1,000 conns" nginx - 1000 "$small" c2-nginx
measure "16 KiB PUT, 1,000 conns" ringup false 1000 "$small" c2-ringup
measure "16 KiB PUT, 1,000 conns" ringup true 1000 "$small" c2-ringup-fsync
measure "10 MiB PUT, 50 conns" ringup false 50 "$large" c3-ringup
measure "10 MiB PUT, 50 conns" nginx - 50 "$large" c3-nginx
measure "10 MiB PUT, 50 conns" ringup true 50 "$large" c3-ringup-fsync

# --- ceiling ----------------------------------------------------------------------------------
# fio_mbs DIRECT EXTRA...: sequential 1 MiB writes, MB/s (10^6 B/s)
fio_mbs() {
    local d=$data/fio-$1
    mkdir -p "$d"
    settle
    log "fio --direct=$1"
    timeout 120 fio --name=seq --rw=write --bs=1m --size=1g --numjobs=1 --direct="$1" "${@:2}" \
        --directory="$d" --runtime=15 --time_based --group_reporting --output-format=json \
        >"$tmp/fio-$1.json" 2>"$tmp/fio-$1.err" || {
        log "fio failed: $(tail -n 3 "$tmp/fio-$1.err")"
        echo 0
        return
    }
    rm -rf "$d"
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print("%.0f" % (j["jobs"][0]["write"]["bw_bytes"] / 1e6))' "$tmp/fio-$1.json"
}
fio_direct=$(fio_mbs 1)
fio_buffered=$(fio_mbs 0 --end_fsync=1)

# --- report -----------------------------------------------------------------------------------
ratio_of() { # SCENARIO: ringup FSYNC=false uploads/s over nginx uploads/s
    local r n row
    for row in "${rows[@]}"; do
        IFS='|' read -r s _ rps _ _ _ _ key <<<"$row"
        [ "$s" = "$1" ] || continue
        [ "$key" = ringupfalse ] && r=$rps
        [ "$key" = nginx- ] && n=$rps
    done
    awk -v a="${r:-0}" -v b="${n:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'
}
mbs_of() { # KEY SCENARIO: MB/s of that row
    local row
    for row in "${rows[@]}"; do
        IFS='|' read -r s _ rps size _ _ _ key <<<"$row"
        [ "$s" = "$2" ] && [ "$key" = "$1" ] && awk -v r="$rps" -v z="$size" 'BEGIN { printf "%.0f", r * z / 1e6 }'
    done
    return 0
}

echo
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
ngv=$(nginx -v 2>&1 | sed 's/.*version: //')
echo "Raw PUT uploads, wrk -t2, ${secs}s per row, $workers workers each (ringup $rev, $ngv); MB = 10^6 bytes"
echo
echo "| scenario | server | uploads/s | MB/s | p99 | non-2xx | socket errors | ratio ringup/nginx |"
echo "|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
    IFS='|' read -r s label rps size p99 bad errs key <<<"$row"
    mbs=$(awk -v r="$rps" -v z="$size" 'BEGIN { printf "%.1f", r * z / 1e6 }')
    ratio="—"
    [ "$key" = ringupfalse ] && ratio=$(ratio_of "$s")
    echo "| $s | $label | $rps | $mbs | $p99 | $bad | $errs | $ratio |"
done

big="10 MiB PUT, 50 conns"
r_nofs=$(mbs_of ringupfalse "$big")
r_fs=$(mbs_of ringuptrue "$big")
n_big=$(mbs_of nginx- "$big")
frac() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
echo
echo "Ceiling: fio sequential 1 MiB writes, ${data%/*} filesystem, 15 s each"
echo
echo "| write path | MB/s | ringup 10 MiB FSYNC=false ($r_nofs MB/s) | ringup 10 MiB FSYNC=true ($r_fs MB/s) | nginx 10 MiB ($n_big MB/s) |"
echo "|---|---|---|---|---|"
echo "| fio O_DIRECT (--direct=1) | $fio_direct | $(frac "$r_nofs" "$fio_direct") | $(frac "$r_fs" "$fio_direct") | $(frac "$n_big" "$fio_direct") |"
echo "| fio buffered (--direct=0 --end_fsync=1) | $fio_buffered | $(frac "$r_nofs" "$fio_buffered") | $(frac "$r_fs" "$fio_buffered") | $(frac "$n_big" "$fio_buffered") |"

echo
for v in "${rss_idle[@]}"; do
    fs=${v%%:*}
    peak=0
    for w in "${rss_peak[@]}"; do [ "${w%%:*}" = "$fs" ] && peak=${w#*:}; done
    awk -v fs="$fs" -v i="${v#*:}" -v p="$peak" 'BEGIN {
        printf "ringup RSS, 10 MiB PUT at 50 conns, FSYNC=%s: %.1f MiB before, %.1f MiB peak (VmRSS every 0.2 s)\n", fs, i / 1024, p / 1024 }'
done

# Anything ringup said at LOG_LEVEL=warn, and any process that died under load.
for f in "$tmp"/c*-ringup*.log; do
    [ -s "$f" ] || continue
    n=$(wc -l <"$f")
    echo
    echo "ringup stderr, $(basename "$f" .log) ($n lines, last 5):"
    echo '```'
    tail -n 5 "$f" | cut -c1-300
    echo '```'
done
for d in "${ringup_dead[@]}"; do echo "server exited during $d (see its stderr above)"; done
exit 0
