/* Unit tests for engine/store.c: ids (UUIDv7), object keys and shard directories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/store/store.c"
#include "proto/ids.h"

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The 48-bit timestamp of a UUIDv7 text: hex digits 0-7 and 9-12. */
static uint64_t id_ms(const char *id)
{
    char hex[13];

    memcpy(hex, id, 8);
    memcpy(hex + 8, id + 9, 4);
    hex[12] = '\0';
    return strtoull(hex, NULL, 16);
}

static void test_id_is_v7(void **state)
{
    char id[STORE_ID_LEN + 1];
    uint64_t before;
    uint64_t after;
    int i;

    (void)state;
    for (i = 0; i < 1000; i++) {
        before = now_ms();
        store_new_id(id);
        after = now_ms();
        assert_int_equal(strlen(id), STORE_ID_LEN);
        assert_true(ids_uuid_ok(id, strlen(id)));
        assert_int_equal(id[14], '7');
        assert_non_null(strchr("89ab", id[19]));
        assert_true(id_ms(id) >= before && id_ms(id) <= after);
    }
}

static void test_ids_differ_and_sort_by_time(void **state)
{
    char a[STORE_ID_LEN + 1];
    char b[STORE_ID_LEN + 1];
    struct timespec pause = {0, 3 * 1000 * 1000};
    int i;

    (void)state;
    for (i = 0; i < 20; i++) {
        store_new_id(a);
        nanosleep(&pause, NULL);
        store_new_id(b);
        assert_string_not_equal(a, b);
        /* A later millisecond sorts after, as text and so as uuid. */
        assert_true(strcmp(a, b) < 0);
    }
}

static void test_key_and_shards(void **state)
{
    const char *id = "01a229e9-fe94-70b5-ae7b-ee0e5a7770cd";
    char key[STORE_KEY_MAX];
    char top[16];
    char sub[16];

    (void)state;
    store_key(id, key);
    assert_string_equal(key, "objects/cd/9f/01a229e9-fe94-70b5-ae7b-ee0e5a7770cd");
    store_shard_dirs(id, top, sub);
    assert_string_equal(top, "objects/cd");
    assert_string_equal(sub, "objects/cd/9f");
    assert_memory_equal(key, sub, strlen(sub));
}

/* At one moment every id falls in one of 256 leaf directories; the first level is random. */
static void test_shards_at_one_moment(void **state)
{
    char id[STORE_ID_LEN + 1];
    char top[16];
    char sub[16];
    char seconds[2][3] = {"", ""};
    bool tops[256] = {false};
    int nsecond = 0;
    int distinct = 0;
    int i;

    (void)state;
    for (i = 0; i < 2000; i++) {
        unsigned v;

        store_new_id(id);
        store_shard_dirs(id, top, sub);
        v = (unsigned)strtoul(top + 8, NULL, 16);
        if (!tops[v]) {
            tops[v] = true;
            distinct++;
        }
        /* The second level changes every 4.1 s: at most once in this loop. */
        if (nsecond == 0 || strcmp(seconds[nsecond - 1], sub + 11) != 0) {
            assert_true(nsecond < 2);
            memcpy(seconds[nsecond++], sub + 11, 3);
        }
    }
    /* 2000 draws over 256 values: all but a handful appear. */
    assert_true(distinct > 240);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_is_v7),
        cmocka_unit_test(test_ids_differ_and_sort_by_time),
        cmocka_unit_test(test_key_and_shards),
        cmocka_unit_test(test_shards_at_one_moment),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
