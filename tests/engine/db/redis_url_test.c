/* Unit tests for engine/db/redis_url.c: every REDIS_URL form and its refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The module under test is compiled in (the Makefile links the rest of the tree). */
#include "engine/db/redis_url.c"

static void ok(const char *url, struct redis_addr *a)
{
    char err[256];

    if (redis_url_parse(url, a, err, sizeof(err)) != 0)
        fail_msg("%s: %s", url, err);
}

/* The url is refused with a reason naming REDIS_URL. */
static void bad(const char *url)
{
    struct redis_addr a;
    char err[256] = "";

    assert_int_equal(redis_url_parse(url, &a, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "REDIS_URL"));
    assert_null(strchr(err, '\n'));
}

static void test_tcp(void **state)
{
    struct redis_addr a;

    (void)state;
    ok("redis://localhost", &a);
    assert_false(a.is_unix);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_string_equal(a.user, "");
    assert_string_equal(a.password, "");
    ok("redis://10.0.0.1:6380/3", &a);
    assert_string_equal(a.host, "10.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 3);
    ok("redis://[::1]:7000/", &a);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 7000);
    assert_int_equal(a.db, 0);
}

static void test_credentials(void **state)
{
    struct redis_addr a;

    (void)state;
    ok("redis://alice:s%40cret%3A@h:1/2", &a);
    assert_string_equal(a.user, "alice");
    assert_string_equal(a.password, "s@cret:");
    ok("redis://:pw@h", &a);
    assert_string_equal(a.user, "");
    assert_string_equal(a.password, "pw");
    /* userinfo without ':' is a bare password (redis-cli reads it so too). */
    ok("redis://onlypw@h", &a);
    assert_string_equal(a.user, "");
    assert_string_equal(a.password, "onlypw");
    /* The last '@' ends the userinfo. */
    ok("redis://u:p@x@h", &a);
    assert_string_equal(a.password, "p@x");
    assert_string_equal(a.host, "h");
}

static void test_unix(void **state)
{
    struct redis_addr a;
    char cwd[512];
    char want[600];

    (void)state;
    ok("unix:///run/redis.sock", &a);
    assert_true(a.is_unix);
    assert_string_equal(a.path, "/run/redis.sock");
    ok("unix:///tmp/r%20s.sock?db=5&password=p%26w&user=bob", &a);
    assert_string_equal(a.path, "/tmp/r s.sock");
    assert_int_equal(a.db, 5);
    assert_string_equal(a.password, "p&w");
    assert_string_equal(a.user, "bob");
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    ok("unix://./var/run/redis.sock", &a);
    snprintf(want, sizeof(want), "%s/var/run/redis.sock", cwd);
    assert_string_equal(a.path, want);
    ok("unix://r.sock", &a);
    snprintf(want, sizeof(want), "%s/r.sock", cwd);
    assert_string_equal(a.path, want);
}

static void test_refused(void **state)
{
    char longpath[300];

    (void)state;
    bad("rediss://h");
    bad("http://h");
    bad("");
    bad("redis://");
    bad("redis://:pw@");
    bad("redis://h:0");
    bad("redis://h:65536");
    bad("redis://h:12x");
    bad("redis://h:");
    bad("redis://h/x");
    bad("redis://h/1?x=1");
    bad("redis://[::1");
    bad("redis://[::1]x");
    bad("redis://u:%zz@h");
    bad("redis://u:%00@h");
    bad("unix://");
    bad("unix:///s?db=x");
    bad("unix:///s?db");
    bad("unix:///s?color=red");
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    {
        char url[320];
        snprintf(url, sizeof(url), "unix://%s", longpath);
        bad(url);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_unix),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
