"""Integration tests of what a 201 promises when the database or the disk misbehave: a row
insert whose answer is lost, a form whose rows cannot all be written, and directory
entries made durable with FSYNC.

Each test makes its own database, storage directory, user and server (uploads.Env).
A PostgreSQL connection is cut in the middle of an insert by a proxy on a Unix socket
in front of the devstack's server. Outcomes only: answers, rows, files, counters.

run.py hands its @test decorator to register(); nothing runs at import.
"""

import os
import select
import socket
import threading
import time

import db_routes
import harness
from harness import expect, expect_eq
from uploads import Env, body_of, error_of, form, post

_TESTS = harness.Tests()
register = _TESTS.register
_test = _TESTS.test


class PgCut:
    """A proxy on a Unix socket in front of PostgreSQL. The first client message that holds
    marker is cut: with forward, it reaches the server and the connection is closed before
    the answer comes back (the insert commits, its answer is lost); without, it never
    reaches the server (the insert never runs). Every other byte passes through."""

    def __init__(self, db, marker, forward):
        srv = db_routes.pg_server()
        port = srv.get("port", "5432")
        self.upstream = os.path.join(srv["host"], ".s.PGSQL.%s" % port)
        self.dir = harness.tmpdir()
        self.url = "postgresql:///%s?host=%s&port=%s" % (db.name, self.dir, port)
        if "user" in srv:
            self.url += "&user=%s" % srv["user"]
        self.marker = marker
        self.forward = forward
        self.cut = threading.Event()
        self.stopping = False
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(os.path.join(self.dir, ".s.PGSQL.%s" % port))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                client, _ = self.lsock.accept()
            except (socket.timeout, OSError):
                continue
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.upstream)
            t = threading.Thread(target=self._pump, args=(client, up), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, client, up):
        try:
            while not self.stopping:
                ready, _, _ = select.select([client, up], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client and not self.cut.is_set() and self.marker in data:
                        self.cut.set()
                        if self.forward:
                            up.sendall(data)
                            time.sleep(0.5)  # the server runs and commits it meanwhile
                        return
                    (up if s is client else client).sendall(data)
        except OSError:
            return
        finally:
            client.close()
            up.close()

    def close(self):
        self.stopping = True
        for t in self.threads:
            t.join(2.0)
        self.lsock.close()


def objects(storage):
    out = []
    for root, _, files in os.walk(os.path.join(storage, "objects")):
        out += [os.path.join(root, f) for f in files]
    return out


@_test("durability: an insert whose answer is lost after it committed is looked up: 201, "
       "row and bytes both kept")
def t_insert_answer_lost(ctx):
    with db_routes.TestDb(ctx) as db:
        marker = "lost-answer-%s.bin" % os.urandom(4).hex()
        cut = PgCut(db, marker.encode(), forward=True)
        try:
            db.url = cut.url
            env = Env(ctx, db, "--fsync", "true")
            body = body_of(70000)
            r = env.put(marker, body)
            expect(cut.cut.is_set(), "the proxy saw the insert", "cut", "never seen")
            doc = env.accept(r, body, marker)
            env.check_stored(doc["id"], body, marker, what="the upload whose answer was lost",
                             check_get=False)
            m = db_routes.scrape(env.port)
            expect_eq("uploads whose commit was looked up", 1,
                      m.value("ringup_upload_commit_unknown_total"))
            expect_eq("uploads kept for fsck", 0, m.value("ringup_upload_kept_for_fsck_total"))
            env.still_serving("after the lost answer")
        finally:
            cut.close()


@_test("durability: an insert lost before it reached the database is looked up: 503, no row, "
       "no file")
def t_insert_lost(ctx):
    with db_routes.TestDb(ctx) as db:
        marker = "lost-insert-%s.bin" % os.urandom(4).hex()
        cut = PgCut(db, marker.encode(), forward=False)
        try:
            db.url = cut.url
            env = Env(ctx, db)
            r = env.put(marker, body_of(5000))
            expect(cut.cut.is_set(), "the proxy saw the insert", "cut", "never seen")
            error_of(r, 503, "database_unavailable", "the upload whose insert was lost")
            expect_eq("rows", {}, env.rows())
            expect_eq("stored objects", [], objects(env.storage))
            expect_eq("uploads whose commit was looked up", 1, db_routes.scrape(env.port).value(
                "ringup_upload_commit_unknown_total"))
            env.still_serving("after the lost insert")
        finally:
            cut.close()


@_test("durability: a form whose rows cannot all be written keeps none of them (503, no row, "
       "no file), while other uploads go on")
def t_form_all_or_none(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, workers=1)
        db.sql("ALTER TABLE files ADD CONSTRAINT test_refuse CHECK (name <> 'refused.bin')")
        body, boundary = form([("a", "good1.bin", body_of(3000), None),
                               ("b", "refused.bin", body_of(4000), None),
                               ("c", "good2.bin", body_of(5000), None)])
        ctype = ("Content-Type", "multipart/form-data; boundary=%s" % boundary)
        results = {}

        def bad():
            results["bad"] = post(env.port, body, env.token, headers=[ctype])

        def good():
            results["good"] = env.put("neighbour.bin", body_of(6000))

        # Both at once, so that their rows may share a statement.
        ts = [threading.Thread(target=bad), threading.Thread(target=good)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        error_of(results["bad"], 503, "database_unavailable", "the form with a refused row")
        doc = env.accept(results["good"], body_of(6000), "neighbour.bin")
        rows = env.rows()
        expect_eq("rows after the refused form", [doc["id"]], sorted(rows))
        expect_eq("stored objects after the refused form",
                  [os.path.join(env.storage, env.key(doc["id"]))], objects(env.storage))


@_test("durability: with FSYNC every upload syncs the directory it was linked into (and the "
       "parents it made); without FSYNC none")
def t_dir_sync(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--fsync", "true", workers=1)
        for i in range(3):
            env.put_ok("sync%d.bin" % i, body_of(1000 + i), check_get=False)
        n = db_routes.scrape(env.port).value("ringup_storage_dir_syncs_total") or 0
        # 3 links, and for each shard made on the way objects/ab/cd's two parents too.
        expect(3 <= n <= 9, "directory syncs for 3 uploads with FSYNC", "3 to 9", n)
        env2 = Env(ctx, db, "--fsync", "false", workers=1)
        env2.put_ok("nosync.bin", body_of(1000), check_get=False)
        expect_eq("directory syncs without FSYNC", 0,
                  db_routes.scrape(env2.port).value("ringup_storage_dir_syncs_total") or 0)
