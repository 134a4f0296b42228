/* Unit tests for engine/routes/progress.c: the X-Progress-Id check and the record keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/routes/progress.c"

static bool ok(const char *s)
{
    return progress_id_ok(s, strlen(s));
}

static void test_id_ok(void **state)
{
    char max[PROGRESS_ID_MAX + 2];

    (void)state;
    assert_true(ok("a"));
    assert_true(ok("upload-1.part_2"));
    assert_true(ok("ABCxyz019._-"));
    memset(max, 'x', sizeof(max));
    assert_true(progress_id_ok(max, PROGRESS_ID_MAX));
    assert_false(progress_id_ok(max, PROGRESS_ID_MAX + 1));
    assert_false(ok(""));
    assert_false(ok("a b"));
    assert_false(ok("a:b")); /* would blur the key's owner:id split */
    assert_false(ok("a/b"));
    assert_false(ok("caf\xc3\xa9"));
    assert_false(progress_id_ok("a\0b", 3));
}

static void test_key(void **state)
{
    char key[PROGRESS_KEY_MAX];
    char user[AUTH_USER_MAX + 1];
    char id[PROGRESS_ID_MAX + 1];

    (void)state;
    assert_int_equal(progress_key(key, "alice", "up-1xyz", 4),
                     strlen("ringup:progress:alice:up-1"));
    assert_string_equal(key, "ringup:progress:alice:up-1");
    /* The longest user and id still fit whole. */
    memset(user, 'u', AUTH_USER_MAX);
    user[AUTH_USER_MAX] = '\0';
    memset(id, 'i', PROGRESS_ID_MAX);
    assert_int_equal(progress_key(key, user, id, PROGRESS_ID_MAX),
                     strlen("ringup:progress:") + AUTH_USER_MAX + 1 + PROGRESS_ID_MAX);
    assert_int_equal(key[strlen(key) - 1], 'i');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_ok),
        cmocka_unit_test(test_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
