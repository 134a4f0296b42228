/* Unit tests for engine/log.c: line formatting in both formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The module under test is compiled in, so the test reaches its statics. */
#include "engine/core/log.c"

static size_t fmt(char *out, size_t cap, enum cfg_log_level level, const char *msg, const char *f,
                  ...) __attribute__((format(printf, 5, 6)));

static size_t fmt(char *out, size_t cap, enum cfg_log_level level, const char *msg, const char *f,
                  ...)
{
    va_list ap;
    size_t n;

    va_start(ap, f);
    n = log_format(out, cap, level, msg, f, ap);
    va_end(ap);
    return n;
}

/* The part of a line after the timestamp field. */
static const char *after_ts(const char *line)
{
    const char *p = strstr(line, "\"level\"");

    return p != NULL ? p : line;
}

static void test_json_fields(void **state)
{
    char line[LOG_LINE_MAX];
    size_t n;

    (void)state;
    log_setup(CFG_LOG_INFO, CFG_LOG_JSON, "host:1");
    n = fmt(line, sizeof(line), CFG_LOG_INFO, "access", "method=%s path=%.*s status=%d dur_us=%llu",
            "GET", 3, "/abcdef", 200, 42ull);
    line[n] = '\0';
    assert_int_equal(line[n - 1], '\n');
    assert_memory_equal(line, "{\"ts\":\"", 7);
    assert_string_equal(after_ts(line), "\"level\":\"info\",\"msg\":\"access\",\"instance\":"
                                        "\"host:1\",\"method\":\"GET\",\"path\":\"/ab\","
                                        "\"status\":200,\"dur_us\":42}\n");
}

static void test_json_escapes(void **state)
{
    char line[LOG_LINE_MAX];
    size_t n;

    (void)state;
    log_setup(CFG_LOG_INFO, CFG_LOG_JSON, "i");
    n = fmt(line, sizeof(line), CFG_LOG_WARN, "m\"sg", "v=%s", "a\"b\\c\n\x01");
    line[n] = '\0';
    assert_string_equal(after_ts(line), "\"level\":\"warn\",\"msg\":\"m\\\"sg\",\"instance\":"
                                        "\"i\",\"v\":\"a\\\"b\\\\c\\n\\u0001\"}\n");
}

static void test_text(void **state)
{
    char line[LOG_LINE_MAX];
    size_t n;

    (void)state;
    log_setup(CFG_LOG_DEBUG, CFG_LOG_TEXT, "i");
    n = fmt(line, sizeof(line), CFG_LOG_ERROR, "listen failed", "addr=%s error=%s n=%zu",
            "0.0.0.0:80", "Address in use", (size_t)3);
    line[n] = '\0';
    assert_non_null(strstr(line, " error listen failed addr=0.0.0.0:80 error=\"Address in use\" "
                                 "n=3\n"));
    assert_null(strchr(line, '{'));
}

static void test_cut_long_line(void **state)
{
    char big[LOG_LINE_MAX * 2];
    char line[256];
    size_t n;

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_setup(CFG_LOG_INFO, CFG_LOG_TEXT, "i");
    n = fmt(line, sizeof(line), CFG_LOG_INFO, "m", "v=%s", big);
    assert_true(n <= sizeof(line));
    assert_int_equal(line[n - 1], '\n');
}

static void test_levels(void **state)
{
    (void)state;
    log_setup(CFG_LOG_WARN, CFG_LOG_JSON, "i");
    assert_false(log_enabled(CFG_LOG_INFO));
    assert_true(log_enabled(CFG_LOG_WARN));
    assert_true(log_enabled(CFG_LOG_ERROR));
}

/* A worker's sink collects lines instead of writing them, and counts what it drops. */
static void test_sink(void **state)
{
    static char a[LOG_BUF_SIZE];
    static char b[LOG_BUF_SIZE];
    struct log_buf lb = {{a, b}, 0, 0, 0};
    unsigned i;

    (void)state;
    log_setup(CFG_LOG_INFO, CFG_LOG_JSON, "i");
    log_attach(&lb);
    log_info("one", "k=%d", 1);
    assert_true(lb.len > 0);
    assert_non_null(memchr(a, '\n', lb.len));
    for (i = 0; i < LOG_BUF_SIZE; i++)
        log_info("fill", "k=%u", i);
    assert_true(lb.dropped > 0);
    assert_true(lb.len <= LOG_BUF_SIZE);
    log_attach(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_fields), cmocka_unit_test(test_json_escapes),
        cmocka_unit_test(test_text),        cmocka_unit_test(test_cut_long_line),
        cmocka_unit_test(test_levels),      cmocka_unit_test(test_sink),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
