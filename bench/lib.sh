# bench/lib.sh: what the benchmark scripts share, sourced by bench/put.sh and bench/bench.sh.
#
#   root=...; me=NAME; source "$root/bench/lib.sh"; bench_setup
#
# bench_setup makes a scratch directory for configs and logs ($tmp), a data directory
# ($data: a fresh ext4 when run as root, see below), a scratch database on the devstack
# ($db_url) with a token ($token), and ringup's storage with its shard tree made once
# ($data/ringup). Everything it made, and every process recorded in pids, goes at exit.
# Servers listen on 127.0.0.1 only; every run is bounded in time. ringup runs with its rate
# limits off; BENCH_LIMITS=on sets them to 10^9 a minute (never refusing, every decision made).

workers=${BENCH_WORKERS:-$(nproc)}
pids=()
db_made=0
stop_devstack=0
loopdev=""
db=ringup_bench_$$
tmp=""
data=""

log() { echo "$me: $*" >&2; }

bench_cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$db_made" = 1 ]; then
        timeout 60 dropdb --force -h "$pghost" "$db" 2>/dev/null || log "dropdb $db failed"
    fi
    if [ "$stop_devstack" = 1 ]; then "$root/tools/devstack" stop >/dev/null 2>&1 || true; fi
    if [ -n "$loopdev" ]; then
        umount "$data" 2>/dev/null || umount -l "$data" 2>/dev/null || true
        losetup -d "$loopdev" 2>/dev/null || true
    fi
    [ -n "$data" ] && rm -rf "$data" "$data.img"
    [ -n "$tmp" ] && rm -rf "$tmp"
}

# need CMD...: each on PATH, or exit with a hint
need() {
    local b
    for b in "$@"; do
        command -v "$b" >/dev/null || {
            log "$b not found; run tools/bootstrap --bench"
            exit 1
        }
    done
}

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

# stop PID: SIGTERM, bounded wait, then SIGKILL; forget it
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

# Before a run: settle, and as root drop the clean page cache too, so no run pays for
# reclaiming the pages of the ones before (without it, four 6 s runs of 16 KiB PUTs in a
# row fell from 20.9k to 13.1k uploads/s, and an A/B of two builds was noise). The run's
# own warm-up then reads back the filesystem's metadata (bitmaps, directories) it needs.
fresh_cache() {
    settle
    if [ "$(id -u)" = 0 ]; then echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}

# cpu_ticks PID...: user + system clock ticks (all threads) of the processes, summed
cpu_ticks() {
    local p s=0 v
    for p in "$@"; do
        v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        s=$((s + v))
    done
    echo "$s"
}

# rss_kb PID...: VmRSS summed (kB)
rss_kb() {
    local p s=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

# server_pids PID: the server and its children (nginx workers)
server_pids() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# A fresh ext4 for the data, when root: on a filesystem that has seen many deletions, every
# new inode costs a scan of recently deleted ones (ext4's recently_deleted; 2.7k against
# 12.7k 16 KiB uploads/s measured here), which would measure the disk's history, not the
# servers. The image is sparse, on the repository's disk, loop-attached with direct I/O so
# O_DIRECT stays O_DIRECT.
fresh_fs() {
    if [ "$(id -u)" != 0 ] || ! command -v mkfs.ext4 >/dev/null || ! command -v losetup >/dev/null; then
        log "not root: data on the repository's filesystem"
        return 0
    fi
    # Sparse: as large as the rows need (large-body rows are deleted after each, see
    # drop_large), at most 60 % of what the host disk has free.
    local free_g
    free_g=$(df -P -BG "$root/var" | awk 'NR == 2 { sub("G", "", $4); print int($4 * 0.6) }')
    [ "$free_g" -gt 48 ] && free_g=48
    [ "$free_g" -ge 8 ] || {
        log "too little free disk for a fresh ext4: data on the repository's filesystem"
        return 0
    }
    truncate -s "${free_g}G" "$data.img"
    if loopdev=$(losetup -f --show --direct-io=on "$data.img" 2>/dev/null) &&
        mkfs.ext4 -q -F "$loopdev" && mount "$loopdev" "$data"; then
        log "data on a fresh ext4 ($loopdev, direct I/O to $data.img)"
    else
        log "no fresh ext4 (losetup/mkfs/mount failed): data on the repository's filesystem"
        [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
        loopdev=""
        rm -f "$data.img"
    fi
}

bench_setup() {
    need python3 createdb dropdb
    [ -x "$root/ringup" ] || {
        log "$root/ringup is missing; run make ringup"
        exit 1
    }
    mkdir -p "$root/var"
    tmp=$(mktemp -d)
    data=$(mktemp -d -p "$root/var" bench.XXXXXX)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    ulimit -n 20000 2>/dev/null || true
    fresh_fs
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
    # ringup's shard tree (objects/00/00 .. ff/ff) is made once, as at a deployment, and every
    # ringup row writes into it: a first-use mkdir per shard is a one-time cost, not per upload.
    log "ringup init-storage (once, not timed)"
    "$root/ringup" init-storage --storage-dir "$data/ringup" 2>&1 | sed "s/^/$me: /" >&2
}

# track_server PID NAME: record a server just started (pid, for cleanup) and wait for its
# port; on failure show the end of its log and exit
track_server() {
    pid=$1
    pids+=("$pid")
    wait_port "$port" "$pid" || {
        tail -n 20 "$tmp/$2.log" >&2
        exit 1
    }
}

# start_ringup NAME FSYNC [FLAG VALUE ...]: storage $data/ringup; sets port, pid
start_ringup() {
    local name=$1 fs=$2
    shift 2
    port=$(free_port)
    # Rate limits, queue cap and adaptive limiting are policy, not the upload path: out of the
    # way. The limits are off (0), or with BENCH_LIMITS=on set so high that they never refuse,
    # so that limits on and off compare the cost of deciding (a Redis lease per 256 uploads).
    local rl=0
    [ "${BENCH_LIMITS:-off}" = on ] && rl=1000000000
    DATABASE_URL=$db_url REDIS_URL=$REDIS_URL LOG_LEVEL=warn \
        "$root/ringup" serve --listen "127.0.0.1:$port" --workers "$workers" \
        --storage-dir "$data/ringup" --fsync "$fs" --shutdown-timeout 5000 \
        --upload-rate-limit "$rl" --global-rate-limit "$rl" \
        --enable-adaptive-rate-limiting false --max-queue-size 100000000 \
        --max-connections 100000 "$@" 2>>"$tmp/$name.log" &
    track_server "$!" "$name"
}

# start_nginx NAME: dav PUT into a fresh $data/NAME, worker_processes = workers; sets port, pid
start_nginx() {
    local name=$1
    port=$(free_port)
    mkdir -p "$data/$name/tmp" "$tmp/$name"
    # Workers write where the master (this user) made the directories; as root, that needs
    # workers running as root too (nginx's default would be "nobody").
    local user=""
    [ "$(id -u)" = 0 ] && user="user root;"
    cat >"$tmp/$name/nginx.conf" <<CONF
$user
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $tmp/$name/nginx.pid;
error_log $tmp/$name.log warn;
daemon off;
events { worker_connections 20000; multi_accept on; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_max_body_size 20m;
    client_body_buffer_size 16k;
    client_body_temp_path $data/$name/tmp;
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location /v1/files/ {
            root $data/$name;
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }
        location = /healthz { return 200 "ok\n"; }
    }
}
CONF
    nginx -c "$tmp/$name/nginx.conf" -p "$tmp/$name" 2>>"$tmp/$name.log" &
    track_server "$!" "$name"
}

# fio_mbs DIRECT EXTRA...: sequential 1 MiB writes on the data filesystem, MB/s (10^6 B/s)
fio_mbs() {
    local d=$data/fio-$1 secs=${FIO_SECS:-15}
    mkdir -p "$d"
    settle
    log "fio --direct=$1 (${secs}s)"
    timeout $((secs + 105)) fio --name=seq --rw=write --bs=1m --size=1g --numjobs=1 --direct="$1" \
        "${@:2}" --directory="$d" --runtime="$secs" --time_based --group_reporting \
        --output-format=json >"$tmp/fio-$1.json" 2>"$tmp/fio-$1.err" || {
        log "fio failed: $(tail -n 3 "$tmp/fio-$1.err")"
        echo 0
        return
    }
    rm -rf "$d"
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print("%.0f" % (j["jobs"][0]["write"]["bw_bytes"] / 1e6))' "$tmp/fio-$1.json"
}

# drop_large: delete the large files the last row stored (a few thousand inodes at most:
# cheap, unlike deleting many small files), so large-body rows do not fill the disk.
drop_large() { find "$data" -xdev -type f -size +512k -delete 2>/dev/null || true; }
