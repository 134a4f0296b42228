"""Integration tests for `ringup migrate`, `ringup token create|revoke` and `ringup fsck`
against the devstack's PostgreSQL.

Every test gets a database of its own, ringup_it_<pid>_<n>, created over the devstack's
socket (the host= of DATABASE_URL) and dropped when the test ends, so tests never see each
other's schema or tokens. DATABASE_URL must be set (tools/run-tests exports it from
`tools/devstack env`); without it every test here fails and says so.

run.py registers these tests with register(test), after its own.
"""

import hashlib
import itertools
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import uuid

from harness import Fail, clean_env, describe_rc, expect, expect_eq, http, short, tmpdir

TOKEN_RE = re.compile(r"^rgu_[A-Za-z0-9_-]{43}$")
TABLES = ["api_tokens", "files", "schema_migrations"]
INDEXES = ["api_tokens_prefix", "files_owner_created", "files_job_sweep", "files_job_queue"]

_seq = itertools.count(1)


# --------------------------------------------------------------------------
# the database of one test

def _psql_bin():
    found = shutil.which("psql")
    if found:
        return found
    fallback = "/usr/lib/postgresql/15/bin/psql"
    if os.access(fallback, os.X_OK):
        return fallback
    raise Fail("psql not found (install postgresql-client or run tools/bootstrap)")


def _socket_host():
    """The host= of DATABASE_URL, URL or conninfo form: the devstack's socket directory."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise Fail("DATABASE_URL is not set: the database tests need the devstack's PostgreSQL",
                   "run them through tools/run-tests (make test), or export the lines of "
                   "`tools/devstack env` first")
    m = re.search(r"(?:^|[?&\s])host\s*=\s*([^&\s]+)", url)
    if not m:
        raise Fail("DATABASE_URL has no host= parameter to find the PostgreSQL socket",
                   "DATABASE_URL: %s" % short(url))
    return urllib.parse.unquote(m.group(1))


class Db:
    """A fresh, empty database for one test; use as a context manager."""

    def __init__(self):
        self.psql = _psql_bin()
        self.host = _socket_host()
        self.name = "ringup_it_%d_%d" % (os.getpid(), next(_seq))
        self.url = "postgresql:///%s?host=%s" % (self.name, urllib.parse.quote(self.host, safe="/"))

    def _run(self, db, sql):
        cmd = [self.psql, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
               "-h", self.host, "-d", db, "-c", sql]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30,
                           env=clean_env(unset=("PGHOST", "PGDATABASE", "PGUSER", "PGPORT")))
        if p.returncode != 0:
            raise Fail("psql failed: %s" % sql, "exit status %d" % p.returncode,
                       "stderr: %s" % short(p.stderr.decode("utf-8", "replace"), 600))
        return p.stdout.decode("utf-8", "replace").strip()

    def __enter__(self):
        self._run("postgres", 'CREATE DATABASE "%s"' % self.name)
        return self

    def __exit__(self, *exc):
        # FORCE: a ringup killed mid-test may still hold a connection.
        self._run("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.name)
        return False

    def sql(self, query):
        """Run query in this database; its rows as text, "|" between columns."""
        return self._run(self.name, query)

    def rows(self, query):
        out = self.sql(query)
        return [line.split("|") for line in out.splitlines()] if out else []


# --------------------------------------------------------------------------
# running ringup

def ringup(ctx, db_url, *args, timeout=30.0):
    """ringup ARGS with only DATABASE_URL among the settings."""
    return ctx.cli(*args, env={"DATABASE_URL": db_url}, timeout=timeout)


def expect_rc(r, rc, what):
    expect(r.rc == rc, "%s: exit status" % what, str(rc), describe_rc(r.rc), *r.describe())


def migrate(ctx, db):
    r = ringup(ctx, db.url, "migrate")
    expect_rc(r, 0, "migrate")
    return r


def applied_count(r):
    m = re.search(r"^migrate: schema at version (\d+) \((\d+) applied\)$", r.out, re.M)
    expect(m, "migrate prints 'migrate: schema at version N (K applied)'", "that line",
           short(r.out, 600), *r.describe())
    return int(m.group(1)), int(m.group(2))


def expect_schema(db):
    tables = [r[0] for r in db.rows(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' ORDER BY table_name")]
    expect_eq("tables in the public schema", TABLES, tables)
    indexes = [r[0] for r in db.rows("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")]
    missing = [i for i in INDEXES if i not in indexes]
    expect(not missing, "indexes missing after migrate", "%s" % INDEXES, "%s" % sorted(indexes))
    cols = [r[0] for r in db.rows(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'files'")]
    for c in ("id", "owner", "name", "size", "mime", "sha256", "status", "storage_key",
              "created_at", "processed_at", "attempts", "error", "claimed_by", "lease_until"):
        expect(c in cols, "files has no column %s" % c, c, "%s" % sorted(cols))
    versions = db.rows("SELECT version, name FROM schema_migrations ORDER BY version")
    expect_eq("schema_migrations rows", [["1", "0001_init"]], versions)


def one_line_error(r, what):
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    expect(len(lines) == 1, "%s: exactly one line on stderr" % what, "1 line",
           "%d lines" % len(lines), *r.describe())
    return lines[0]


def create_token(ctx, db, user="dev"):
    r = ringup(ctx, db.url, "token", "create", "--user", user)
    expect_rc(r, 0, "token create --user %s" % user)
    lines = r.out.splitlines()
    expect(lines and TOKEN_RE.match(lines[0]), "token create: first stdout line is the token",
           "rgu_ + 43 base64url characters", short(r.out), *r.describe())
    tok = lines[0]
    expect(("token for %s created (prefix %s)" % (user, tok[:12])) in r.err,
           "token create: the note on stderr names the user and prefix",
           "token for %s created (prefix %s); ..." % (user, tok[:12]), short(r.err))
    return tok


def revoked(db, tok):
    """revoked_at IS NOT NULL for the row of tok ("t"/"f")."""
    digest = hashlib.sha256(tok.encode()).hexdigest()
    rows = db.rows("SELECT revoked_at IS NOT NULL FROM api_tokens"
                   " WHERE token_hash = decode('%s', 'hex')" % digest)
    expect(len(rows) == 1, "one row for token %s" % tok[:12], "1", len(rows))
    return rows[0][0] == "t"


# --------------------------------------------------------------------------
# tests

def t_migrate_empty(ctx):
    with Db() as db:
        r = migrate(ctx, db)
        expect("migrate: applied version 1 (0001_init)" in r.out,
               "migrate names the migration it applied", "migrate: applied version 1 (0001_init)",
               short(r.out))
        expect_eq("migrate summary (version, applied)", (1, 1), applied_count(r))
        expect_schema(db)


def t_migrate_twice(ctx):
    with Db() as db:
        migrate(ctx, db)
        before = db.sql("SELECT applied_at FROM schema_migrations")
        r = migrate(ctx, db)
        expect_eq("second migrate summary (version, applied)", (1, 0), applied_count(r))
        expect("applied version" not in r.out, "second migrate applied something again",
               "nothing applied", short(r.out))
        expect_eq("schema_migrations.applied_at after the second run", before,
                  db.sql("SELECT applied_at FROM schema_migrations"))
        expect_schema(db)


def t_migrate_concurrent(ctx):
    with Db() as db:
        d = tmpdir()
        env = clean_env({"DATABASE_URL": db.url}, keep_settings=False)
        procs = [subprocess.Popen([ctx.bin, "migrate"], cwd=d, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(3)]
        results = []
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise Fail("concurrent migrate did not finish within 30 s")
            results.append((p.returncode, out.decode("utf-8", "replace"),
                            err.decode("utf-8", "replace")))
        detail = ["process %d: exit %s, stdout %s, stderr %s"
                  % (i, describe_rc(rc), short(o), short(e)) for i, (rc, o, e) in enumerate(results)]
        expect(all(rc == 0 for rc, _, _ in results), "every concurrent migrate exits 0",
               "0, 0, 0", ", ".join(describe_rc(rc) for rc, _, _ in results), *detail)
        applied = sum(o.count("migrate: applied version") for _, o, _ in results)
        expect_eq("migrations applied across the concurrent runs", 1, applied, *detail)
        expect_schema(db)


def t_migrate_unreachable(ctx):
    url = "postgresql://ringup:sekrit-pw@/ringup?host=/nonexistent"
    r = ringup(ctx, url, "migrate")
    expect_rc(r, 1, "migrate with an unreachable database")
    line = one_line_error(r, "migrate with an unreachable database")
    expect("DATABASE_URL" in line and "/nonexistent" in line,
           "the error names DATABASE_URL and where it tried", "DATABASE_URL ... /nonexistent",
           short(line))
    expect("sekrit-pw" not in r.err + r.out, "the error shows the password", "redacted",
           short(line))
    expect_eq("stdout of a failed migrate", "", r.out)


def t_token_create(ctx):
    with Db() as db:
        migrate(ctx, db)
        tok = create_token(ctx, db, "alice@example.org")
        rows = db.rows("SELECT user_name, encode(token_hash, 'hex'), prefix, revoked_at IS NULL"
                       " FROM api_tokens")
        expect_eq("api_tokens rows", [["alice@example.org", hashlib.sha256(tok.encode()).hexdigest(),
                                       tok[:12], "t"]], rows)
        expect_eq("rows whose hash holds token text", "0", db.sql(
            "SELECT count(*) FROM api_tokens WHERE encode(token_hash, 'escape') LIKE '%rgu_%'"))
        expect_eq("rows holding the token's secret part anywhere", "0", db.sql(
            "SELECT count(*) FROM api_tokens t WHERE t::text LIKE '%%%s%%'" % tok[12:]))
        tok2 = create_token(ctx, db, "alice@example.org")
        expect(tok2 != tok, "two token create runs printed the same token", "different", tok2)
        expect_eq("api_tokens rows after two creates", "2", db.sql("SELECT count(*) FROM api_tokens"))


def t_token_bad_users(ctx):
    with Db() as db:
        migrate(ctx, db)
        for args in (["--user", ""], ["--user", "x" * 65], ["--user", "bad name"],
                     ["--user", "a/b"], ["--user", "b\u00e9a"], ["--user", "semi;colon"], []):
            r = ringup(ctx, db.url, "token", "create", *args)
            expect_rc(r, 2, "token create %s" % " ".join(repr(a) for a in args))
            one_line_error(r, "token create %r" % args)
            expect_eq("stdout of a refused token create", "", r.out)
        r = ringup(ctx, db.url, "token", "create", "--user", "x" * 64)
        expect_rc(r, 0, "token create with a 64-character user")
        expect_eq("tokens stored after the refused creates", "1",
                  db.sql("SELECT count(*) FROM api_tokens"))


def t_token_revoke(ctx):
    with Db() as db:
        migrate(ctx, db)
        a = create_token(ctx, db, "alice")
        b = create_token(ctx, db, "bob")
        r = ringup(ctx, db.url, "token", "revoke", a[:12])
        expect_rc(r, 0, "token revoke PREFIX")
        expect_eq("token revoke PREFIX output", "revoked token %s of alice" % a[:12], r.out.strip())
        expect(revoked(db, a), "revoked_at of the token revoked by prefix", "set", "NULL")
        expect(not revoked(db, b), "revoked_at of the other token", "NULL", "set")
        r = ringup(ctx, db.url, "token", "revoke", b)
        expect_rc(r, 0, "token revoke TOKEN")
        expect_eq("token revoke TOKEN output", "revoked token %s of bob" % b[:12], r.out.strip())
        expect(revoked(db, b), "revoked_at of the token revoked whole", "set", "NULL")
        r = ringup(ctx, db.url, "token", "revoke", a[:12])
        expect_rc(r, 1, "token revoke of an already revoked prefix")
        expect("no such token" in one_line_error(r, "revoking twice"),
               "revoking twice says 'no such token'", "no such token", short(r.err))


def t_token_revoke_errors(ctx):
    with Db() as db:
        migrate(ctx, db)
        create_token(ctx, db, "carol")
        # Two tokens sharing a prefix would take ~2^24 random draws; plant them instead.
        db.sql("INSERT INTO api_tokens (user_name, token_hash, prefix) VALUES"
               " ('x', sha256('one'::bytea), 'rgu_AAAAAAAA'),"
               " ('y', sha256('two'::bytea), 'rgu_AAAAAAAA')")
        r = ringup(ctx, db.url, "token", "revoke", "rgu_AAAAAAAA")
        expect_rc(r, 1, "token revoke of an ambiguous prefix")
        expect("ambiguous" in one_line_error(r, "ambiguous prefix"),
               "an ambiguous prefix is called ambiguous", "... ambiguous ...", short(r.err))
        r = ringup(ctx, db.url, "token", "revoke", "rgu_zzzzzzzz")
        expect_rc(r, 1, "token revoke of an unknown prefix")
        expect("no such token" in one_line_error(r, "unknown prefix"),
               "an unknown prefix says 'no such token'", "no such token", short(r.err))
        r = ringup(ctx, db.url, "token", "revoke", "rgu_" + "Q" * 43)
        expect_rc(r, 1, "token revoke of an unknown whole token")
        for bad in ("rgu_abc", "xyz_AAAAAAAA", "rgu_AAAA+AAA", "rgu_" + "A" * 20):
            r = ringup(ctx, db.url, "token", "revoke", bad)
            expect_rc(r, 2, "token revoke %r (neither a token nor a prefix)" % bad)
        r = ringup(ctx, db.url, "token", "revoke")
        expect_rc(r, 2, "token revoke without an argument")
        expect_eq("revoked tokens after the failed revokes", "0",
                  db.sql("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL"))


def t_token_no_schema(ctx):
    with Db() as db:
        r = ringup(ctx, db.url, "token", "create", "--user", "dev")
        expect_rc(r, 1, "token create before migrate")
        expect("migrate" in one_line_error(r, "token create before migrate"),
               "token create before migrate says to run migrate", "... ringup migrate ...",
               short(r.err))
        expect_eq("stdout of a failed token create", "", r.out)


def t_token_anonymous(ctx):
    with Db() as db:
        migrate(ctx, db)
        for user in ("anonymous", "Anonymous", "ANONYMOUS"):
            r = ringup(ctx, db.url, "token", "create", "--user", user)
            expect_rc(r, 2, "token create --user %s" % user)
            line = one_line_error(r, "token create --user %s" % user)
            expect("anonymous" in line and "reserved" in line,
                   "the refusal says the name anonymous is reserved",
                   "... anonymous ... reserved ...", short(line))
            expect_eq("stdout of a refused token create", "", r.out)
        expect_eq("tokens stored after the refused creates", "0",
                  db.sql("SELECT count(*) FROM api_tokens"))
        create_token(ctx, db, "anonymous2")


# --------------------------------------------------------------------------
# ringup fsck

FSCK_SUMMARY_RE = re.compile(
    r"^fsck: (\d+) rows, (\d+) objects; findings (\d+): orphan (\d+), missing (\d+), "
    r"size (\d+), badkey (\d+), misplaced (\d+), unknown (\d+); skipped: young (\d+), "
    r"uploading (\d+), marked (\d+); repaired (\d+)$", re.M)
FSCK_FIELDS = ("rows", "objects", "findings", "orphan", "missing", "size", "badkey",
               "misplaced", "unknown", "young", "uploading", "marked", "repaired")


def new_id():
    """A UUIDv7 the way the server makes them: 48-bit milliseconds, then random bits."""
    b = bytearray(int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(b)))


def obj_key(fid):
    return "objects/%s/%s%s/%s" % (fid[34:36], fid[7], fid[9], fid)


def new_storage():
    d = os.path.join(tmpdir(), "store")
    os.makedirs(os.path.join(d, "objects"))
    return d


def put_file(storage, rel, data):
    path = os.path.join(storage, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def put_row(db, fid, size, status="ready", key=None):
    db.sql("INSERT INTO files (id, owner, name, size, status, storage_key) VALUES"
           " ('%s', 'fsck', 'f.bin', %d, '%s', '%s')" % (fid, size, status, key or obj_key(fid)))


def fsck(ctx, db, storage, *args):
    return ctx.cli("fsck", *args, env={"DATABASE_URL": db.url, "STORAGE_DIR": storage},
                   timeout=60.0)


def fsck_summary(r, what):
    m = FSCK_SUMMARY_RE.search(r.out)
    expect(m, "%s: the summary line" % what,
           "fsck: N rows, N objects; findings N: orphan N, ...; repaired N", short(r.out, 900),
           *r.describe())
    expect(r.out.rstrip("\n").endswith(m.group(0)), "%s: the summary is the last line" % what,
           m.group(0), short(r.out[-300:]))
    return dict(zip(FSCK_FIELDS, (int(g) for g in m.groups())))


def fsck_lines(r, kind):
    return [ln for ln in r.out.splitlines() if ln.startswith(kind + " ")]


def expect_line(r, kind, subject, what, extra=None):
    """The one finding line of kind about subject; extra must occur in it."""
    lines = [ln for ln in fsck_lines(r, kind) if ln.split(" ", 2)[1].rstrip(":") == subject]
    expect(len(lines) == 1, "%s: one '%s' line for %s" % (what, kind, subject),
           "%s %s: ..." % (kind, subject), short(r.out, 900), *r.describe())
    if extra is not None:
        expect(extra in lines[0], "%s: the '%s' line for %s says '%s'" % (what, kind, subject,
                                                                          extra),
               extra, short(lines[0], 400))
    return lines[0]


def expect_counts(got, what, **want):
    sub = {k: got[k] for k in want}
    expect_eq("%s: summary counts" % what, want, sub)


def file_rows(db):
    return {r[0]: r[1:] for r in db.rows(
        "SELECT id, size, status, coalesce(error, ''), storage_key FROM files ORDER BY id")}


def tree(storage):
    """Every entry under storage: relative path -> size (None for a directory)."""
    out = {}
    for root, dirs, files in os.walk(storage):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), storage)] = None
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, storage)] = os.lstat(p).st_size
    return out


def t_fsck_live_server(ctx):
    """What a real server stores is what fsck expects: clean while serving, and after a
    DELETE; exit 0, nothing changed."""
    with Db() as db:
        migrate(ctx, db)
        storage = new_storage()
        tok = create_token(ctx, db, "fsck-live")
        srv = ctx.server("--storage-dir", storage, env={"DATABASE_URL": db.url},
                         unset=("ALLOW_ANONYMOUS",))
        ids = []
        for name, body in (("a.txt", b"alpha\n"), ("b.bin", os.urandom(70000)), ("c", b"")):
            resp = http(srv.port, "PUT", "/v1/files/" + name,
                        [("Authorization", "Bearer " + tok),
                         ("Content-Length", str(len(body)))], body, timeout=10.0)
            expect_eq("PUT /v1/files/%s status" % name, 201, resp.status, short(resp.body))
            ids.append(resp.json()["id"])
        resp = http(srv.port, "DELETE", "/v1/files/" + ids[0],
                    [("Authorization", "Bearer " + tok)])
        expect_eq("DELETE status", 204, resp.status, short(resp.body))
        before = (file_rows(db), tree(storage))
        r = fsck(ctx, db, storage, "--repair")
        expect_rc(r, 0, "fsck --repair of what a live server stored")
        got = fsck_summary(r, "fsck of a live server's storage")
        expect_counts(got, "fsck of a live server's storage", rows=2, objects=2, findings=0,
                      young=0, repaired=0)
        expect_eq("stdout of a clean fsck: the summary alone", 1, len(r.out.splitlines()),
                  short(r.out, 600))
        expect_eq("rows and files after a clean fsck --repair", before,
                  (file_rows(db), tree(storage)))


def t_fsck_findings(ctx):
    with Db() as db:
        migrate(ctx, db)
        storage = new_storage()
        # The old orphan first: it must be older than --grace when fsck runs.
        orphan = new_id()
        put_file(storage, obj_key(orphan), b"nobody's bytes")
        t_orphan = time.monotonic()
        good, missing, wrong, young = new_id(), new_id(), new_id(), new_id()
        put_row(db, good, 5)
        put_file(storage, obj_key(good), b"12345")
        put_row(db, missing, 10, status="queued")
        put_row(db, wrong, 10)
        put_file(storage, obj_key(wrong), b"abc")
        uploading = new_id()
        put_row(db, uploading, 0, status="uploading", key="partial/" + uploading)

        # With the default grace (an hour or so) even the orphan is too new to judge.
        r = fsck(ctx, db, storage)
        expect_rc(r, 1, "fsck with rows whose bytes are missing or of the wrong size")
        got = fsck_summary(r, "fsck (default grace)")
        expect_counts(got, "fsck (default grace)", rows=4, objects=3, findings=2, orphan=0,
                      missing=1, size=1, young=1, uploading=1, repaired=0)
        expect_line(r, "young", obj_key(orphan), "fsck (default grace)", "left alone")

        time.sleep(max(0.0, 4.5 - (time.monotonic() - t_orphan)))
        put_file(storage, obj_key(young), b"still being committed")
        rows0, tree0 = file_rows(db), tree(storage)

        r = fsck(ctx, db, storage, "--grace", "3")
        expect_rc(r, 1, "fsck --grace 3 with findings")
        got = fsck_summary(r, "fsck --grace 3")
        expect_counts(got, "fsck --grace 3", rows=4, objects=4, findings=3, orphan=1,
                      missing=1, size=1, badkey=0, misplaced=0, unknown=0, young=1,
                      uploading=1, marked=0, repaired=0)
        expect_line(r, "orphan", obj_key(orphan), "fsck --grace 3", "no row")
        expect_line(r, "missing", missing, "fsck --grace 3", obj_key(missing))
        expect_line(r, "size", wrong, "fsck --grace 3", "3 bytes")
        expect_line(r, "young", obj_key(young), "fsck --grace 3", "--grace 3")
        for ln in r.out.splitlines():
            expect(good not in ln and uploading not in ln,
                   "fsck reports a sound row or an upload in progress", "nothing about them",
                   short(ln, 300))
        expect_eq("rows after fsck without --repair", rows0, file_rows(db))
        expect_eq("storage after fsck without --repair", tree0, tree(storage))

        r = fsck(ctx, db, storage, "--grace", "3", "--repair")
        expect_rc(r, 1, "fsck --grace 3 --repair, everything repairable")
        got = fsck_summary(r, "fsck --repair")
        expect_counts(got, "fsck --repair", findings=3, orphan=1, missing=1, size=1, young=1,
                      repaired=3)
        expect_line(r, "orphan", obj_key(orphan), "fsck --repair", "removed")
        expect_line(r, "missing", missing, "fsck --repair", "marked failed")
        expect_line(r, "size", wrong, "fsck --repair", "marked failed")
        expect_line(r, "young", obj_key(young), "fsck --repair", "left alone")
        t = tree(storage)
        expect(obj_key(orphan) not in t, "the old orphan after --repair", "removed", "still there")
        expect_eq("the young orphan after --repair (size)", 21, t.get(obj_key(young)))
        expect_eq("the wrong-size row's bytes after --repair (size)", 3, t.get(obj_key(wrong)))
        expect_eq("the sound row's bytes after --repair (size)", 5, t.get(obj_key(good)))
        rows = file_rows(db)
        expect_eq("the sound row after --repair", rows0[good], rows.get(good))
        expect_eq("the uploading row after --repair", rows0[uploading], rows.get(uploading))
        for fid, was in ((missing, "queued"), (wrong, "ready")):
            row = rows.get(fid)
            expect(row is not None, "a row with bad bytes after --repair", "kept", "deleted")
            expect(row[1] == "failed" and row[2].startswith("fsck:") and was in row[2],
                   "a row with bad bytes after --repair: status failed, error from fsck naming "
                   "the old status", "failed | fsck: ... (was %s)" % was, "|".join(row))

        r = fsck(ctx, db, storage, "--grace", "3")
        expect_rc(r, 0, "fsck after --repair")
        got = fsck_summary(r, "fsck after --repair")
        expect_counts(got, "fsck after --repair", rows=4, objects=3, findings=0, young=1,
                      marked=2, repaired=0)
        expect_eq("finding lines after --repair", [],
                  [ln for ln in r.out.splitlines()[:-1] if not ln.startswith("young ")])


def t_fsck_leftovers(ctx):
    with Db() as db:
        migrate(ctx, db)
        storage = new_storage()
        good = new_id()
        put_row(db, good, 3)
        put_file(storage, obj_key(good), b"abc")
        shard = os.path.dirname(obj_key(good))
        stray = new_id()
        other_top = "00" if stray[34:36] != "00" else "01"
        misplaced = "objects/%s/00/%s" % (other_top, stray)
        link = "%s/%s" % (shard, new_id())
        unknown = ["objects/README", "objects/zz", shard + "/notes.txt",
                   shard + "/" + stray + ".tmp", shard + "/" + stray.upper(), shard + "/subdir",
                   link]
        for rel in ("objects/README", "objects/zz/00/" + stray, shard + "/notes.txt",
                    shard + "/" + stray + ".tmp", shard + "/" + stray.upper(), misplaced):
            put_file(storage, rel, b"left over")
        os.makedirs(os.path.join(storage, shard, "subdir"))
        os.symlink("/etc/hostname", os.path.join(storage, link))
        before = (file_rows(db), tree(storage))

        r = fsck(ctx, db, storage, "--grace", "0")
        expect_rc(r, 1, "fsck with leftovers in the object tree")
        got = fsck_summary(r, "fsck with leftovers")
        expect_counts(got, "fsck with leftovers", rows=1, objects=1, findings=8, orphan=0,
                      missing=0, size=0, misplaced=1, unknown=7, young=0)
        expect_line(r, "misplaced", misplaced, "fsck with leftovers",
                    os.path.dirname(obj_key(stray)))
        for rel in unknown:
            expect_line(r, "unknown", rel, "fsck with leftovers", "left alone")

        r = fsck(ctx, db, storage, "--grace", "0", "--repair")
        expect_rc(r, 4, "fsck --repair with leftovers it must not touch")
        got = fsck_summary(r, "fsck --repair with leftovers")
        expect_counts(got, "fsck --repair with leftovers", findings=8, repaired=0)
        expect_eq("rows and files after fsck --repair with leftovers", before,
                  (file_rows(db), tree(storage)))


def t_fsck_errors(ctx):
    with Db() as db:
        storage = new_storage()
        for args in (["--grace"], ["--grace", "abc"], ["--grace", "-1"], ["--grace", "1.5"],
                     ["--grace", "99999999999999999999"], ["extra"], ["--repair=yes"],
                     ["--no-such-setting", "1"]):
            r = fsck(ctx, db, storage, *args)
            expect_rc(r, 2, "fsck %s" % " ".join(args))
            one_line_error(r, "fsck %s" % " ".join(args))
            expect_eq("stdout of fsck %s" % " ".join(args), "", r.out)
        r = fsck(ctx, db, storage)
        expect_rc(r, 3, "fsck before migrate")
        expect("migrate" in one_line_error(r, "fsck before migrate"),
               "fsck before migrate says to run migrate", "... ringup migrate ...", short(r.err))
        migrate(ctx, db)
        gone = os.path.join(tmpdir(), "nowhere")
        r = fsck(ctx, db, gone, "--repair")
        expect_rc(r, 3, "fsck --repair with a STORAGE_DIR that does not exist")
        expect("STORAGE_DIR" in one_line_error(r, "fsck without a storage directory"),
               "the error names STORAGE_DIR", "... STORAGE_DIR ...", short(r.err))
        expect(not os.path.exists(gone), "fsck created the missing STORAGE_DIR", "not created",
               "created")
        put_row(db, new_id(), 1)
        os.rmdir(os.path.join(storage, "objects"))
        r = fsck(ctx, db, storage, "--repair")
        expect_rc(r, 3, "fsck --repair with STORAGE_DIR but no objects/ (not mounted?)")
        expect_eq("rows marked failed without an objects/ directory", "0",
                  db.sql("SELECT count(*) FROM files WHERE status = 'failed'"))
        r = ctx.cli("fsck", env={"DATABASE_URL": "postgresql:///x?host=/nonexistent",
                                 "STORAGE_DIR": storage})
        expect_rc(r, 3, "fsck with an unreachable database")
        one_line_error(r, "fsck with an unreachable database")


def register(test):
    test("db: migrate on an empty database creates the schema at version 1")(t_migrate_empty)
    test("db: migrate twice: the second run applies nothing and exits 0")(t_migrate_twice)
    test("db: three migrate processes at once all exit 0, one applies")(t_migrate_concurrent)
    test("db: migrate with an unreachable DATABASE_URL -> exit 1, one line, no password")(
        t_migrate_unreachable)
    test("db: token create prints a token once and stores only its SHA-256")(t_token_create)
    test("db: token create with a bad or missing user -> exit 2, nothing stored")(
        t_token_bad_users)
    test("db: token revoke by prefix and by whole token sets revoked_at")(t_token_revoke)
    test("db: token revoke: ambiguous or unknown -> exit 1, malformed -> exit 2")(
        t_token_revoke_errors)
    test("db: token create before migrate -> exit 1 naming migrate")(t_token_no_schema)
    test("db: token create --user anonymous (any case) -> exit 2, nothing stored")(
        t_token_anonymous)
    test("db: fsck of what a live server stored is clean and changes nothing")(
        t_fsck_live_server)
    test("db: fsck reports orphan, missing, wrong-size; --repair fixes them, keeps young")(
        t_fsck_findings)
    test("db: fsck reports leftovers in objects/ and --repair leaves them (exit 4)")(
        t_fsck_leftovers)
    test("db: fsck usage -> 2, no schema, no storage or no database -> 3")(t_fsck_errors)
