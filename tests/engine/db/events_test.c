/* Unit tests for engine/db/events.c: the events' JSON and time stamps, the backlog's bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/db/events.c"

#define ID "0b6f4a3e-8d2c-4f1a-9e7b-5c3d2a1f0e9d"

static void test_time(void **state)
{
    char at[EVENTS_TIME_MAX];

    (void)state;
    assert_int_equal(events_format_time(at, 0), 27);
    assert_string_equal(at, "1970-01-01T00:00:00.000000Z");
    /* 2026-12-05T16:01:24.000042Z */
    assert_int_equal(events_format_time(at, 1796486484000042LL), 27);
    assert_string_equal(at, "2026-12-05T16:01:24.000042Z");
}

/* API.md's fields, in its order; sha256 and mime null until known. */
static void test_json(void **state)
{
    struct events_file f = {ID, "alice", 1234, NULL, NULL};
    char *s;

    (void)state;
    s = events_json(EVENTS_FILE_QUEUED, &f, 0);
    assert_string_equal(s, "{\"type\":\"file.queued\",\"id\":\"" ID "\",\"owner\":\"alice\","
                           "\"size\":1234,\"sha256\":null,\"mime\":null,"
                           "\"at\":\"1970-01-01T00:00:00.000000Z\"}");
    free(s);
    f.sha256 = "ab";
    f.mime = "text/plain";
    s = events_json(EVENTS_FILE_DELETED, &f, 0);
    assert_non_null(strstr(s, "\"type\":\"file.deleted\""));
    assert_non_null(strstr(s, "\"sha256\":\"ab\",\"mime\":\"text/plain\""));
    free(s);
}

/* A name that needs escaping stays valid JSON. */
static void test_json_escapes(void **state)
{
    struct events_file f = {ID, "a\"b\\c", 0, NULL, NULL};
    char *s;

    (void)state;
    s = events_json(EVENTS_FILE_READY, &f, 0);
    assert_non_null(strstr(s, "\"owner\":\"a\\\"b\\\\c\""));
    free(s);
}

/* Without Redis every event waits; past the bound the oldest go, and are counted. */
static void test_backlog_bound(void **state)
{
    struct ring r;
    struct events *e;
    struct events_file f = {ID, "alice", 0, NULL, NULL};
    uint32_t i;

    (void)state;
    memset(&r, 0, sizeof(r));
    tmr_heap_init(&r.timers);
    e = events_new(&r, NULL);
    for (i = 0; i < EVENTS_BACKLOG_MAX + 5; i++) {
        f.size = i;
        events_emit(e, EVENTS_FILE_QUEUED, &f);
    }
    assert_int_equal(events_pending(e), EVENTS_BACKLOG_MAX);
    assert_int_equal(r.met.events_backlog, EVENTS_BACKLOG_MAX);
    assert_int_equal(r.met.events_dropped, 5);
    /* The oldest left is the sixth emitted. */
    assert_non_null(strstr(e->q[e->head], "\"size\":5,"));
    /* With a batch in flight, the drop skips it: the in-flight events stay at the head. */
    e->inflight = 2;
    f.size = 999999;
    events_emit(e, EVENTS_FILE_QUEUED, &f);
    assert_non_null(strstr(e->q[e->head], "\"size\":5,"));
    assert_non_null(strstr(e->q[slot(e, 1)], "\"size\":6,"));
    assert_non_null(strstr(e->q[slot(e, 2)], "\"size\":8,"));
    assert_int_equal(r.met.events_dropped, 6);
    e->inflight = 0;
    events_free(e);
    tmr_heap_free(&r.timers);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_escapes),
        cmocka_unit_test(test_backlog_bound),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
