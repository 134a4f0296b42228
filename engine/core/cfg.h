/*
 * cfg: the settings of API.md, read from defaults, an env file, the process
 * environment and --kebab-case flags (in rising precedence), validated once
 * at start-up. After cfg_load() returns the struct is read-only and shared
 * by every worker.
 */
#ifndef ENGINE_CORE_CFG_H
#define ENGINE_CORE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_STR_MAX 1024 /* longest string setting, bytes incl. NUL */
#define CFG_ERR_MAX 512  /* room for one error line */

enum cfg_log_level { CFG_LOG_DEBUG, CFG_LOG_INFO, CFG_LOG_WARN, CFG_LOG_ERROR };
enum cfg_log_format { CFG_LOG_JSON, CFG_LOG_TEXT };

/* Where a setting's value came from, weakest first. */
enum cfg_src { CFG_SRC_DEFAULT, CFG_SRC_FILE, CFG_SRC_ENV, CFG_SRC_FLAG };

struct cfg {
    char listen[CFG_STR_MAX];           /* LISTEN, as given ("0.0.0.0:8080", "[::1]:80") */
    char listen_host[CFG_STR_MAX];      /* LISTEN host part, brackets removed */
    uint16_t listen_port;               /* LISTEN port part */
    uint32_t workers;                   /* WORKERS, 1..256; default: online CPUs */
    char storage_dir[CFG_STR_MAX];      /* STORAGE_DIR */
    char database_url[CFG_STR_MAX];     /* DATABASE_URL */
    char db_read_url[CFG_STR_MAX];      /* DB_READ_URL, "" = DATABASE_URL */
    char redis_url[CFG_STR_MAX];        /* REDIS_URL */
    uint32_t db_max_connections;        /* DB_MAX_CONNECTIONS */
    uint32_t db_pool_min;               /* DB_POOL_MIN */
    uint32_t db_pool_max;               /* DB_POOL_MAX */
    uint32_t db_connection_timeout;     /* DB_CONNECTION_TIMEOUT, ms */
    uint32_t db_query_timeout;          /* DB_QUERY_TIMEOUT, ms */
    uint32_t db_pool_idle_timeout;      /* DB_POOL_IDLE_TIMEOUT, ms */
    uint32_t redis_max_connections;     /* REDIS_MAX_CONNECTIONS */
    uint32_t redis_pool_min;            /* REDIS_POOL_MIN */
    uint32_t redis_pool_max;            /* REDIS_POOL_MAX */
    uint32_t redis_retry_attempts;      /* REDIS_RETRY_ATTEMPTS */
    uint32_t redis_retry_delay;         /* REDIS_RETRY_DELAY, ms */
    uint32_t redis_command_timeout;     /* REDIS_COMMAND_TIMEOUT, ms */
    uint32_t max_concurrent_jobs;       /* MAX_CONCURRENT_JOBS */
    uint32_t queue_concurrency;         /* QUEUE_CONCURRENCY */
    uint32_t max_queue_size;            /* MAX_QUEUE_SIZE */
    uint32_t processing_timeout;        /* PROCESSING_TIMEOUT, ms */
    bool enable_queue_priority;         /* ENABLE_QUEUE_PRIORITY */
    bool enable_backpressure;           /* ENABLE_BACKPRESSURE */
    uint64_t max_file_size;             /* MAX_FILE_SIZE, bytes */
    uint32_t max_files_per_request;     /* MAX_FILES_PER_REQUEST */
    bool enable_streaming_upload;       /* ENABLE_STREAMING_UPLOAD */
    bool enable_memory_monitoring;      /* ENABLE_MEMORY_MONITORING */
    uint32_t memory_threshold;          /* MEMORY_THRESHOLD, percent 1..100 */
    uint32_t upload_rate_limit;         /* UPLOAD_RATE_LIMIT, per user per minute, 0: off */
    uint32_t global_rate_limit;         /* GLOBAL_RATE_LIMIT, per minute, 0: off */
    bool enable_adaptive_rate_limiting; /* ENABLE_ADAPTIVE_RATE_LIMITING */
    uint32_t connection_timeout;        /* CONNECTION_TIMEOUT, ms */
    uint32_t shutdown_timeout;          /* SHUTDOWN_TIMEOUT, ms */
    uint32_t job_lease;                 /* JOB_LEASE, ms */
    char cors_origins[CFG_STR_MAX];     /* CORS_ORIGINS, comma list */
    char instance_id[CFG_STR_MAX];      /* INSTANCE_ID; default hostname:pid */
    uint32_t max_connections;           /* MAX_CONNECTIONS, whole process */
    bool fsync;                         /* FSYNC */
    bool splice_uploads;                /* SPLICE_UPLOADS: raw bodies spliced socket -> file */
    uint64_t
        direct_io_threshold; /* DIRECT_IO_THRESHOLD: raw bodies this large use O_DIRECT; 0 off */
    char allowed_types[CFG_STR_MAX]; /* ALLOWED_TYPES, comma list, "" = any */
    char processor_cmd[CFG_STR_MAX]; /* PROCESSOR_CMD, "" = none */
    bool allow_anonymous;            /* ALLOW_ANONYMOUS */
    uint64_t tus_expiration;         /* TUS_EXPIRATION, ms */
    enum cfg_log_level log_level;    /* LOG_LEVEL: debug, info, warn, error */
    enum cfg_log_format log_format;  /* LOG_FORMAT: json, text */
    char signing_key[CFG_STR_MAX];   /* SIGNING_KEY, "" = signed links off */
};

/*
 * Fill every field with its default (WORKERS = online CPUs, INSTANCE_ID =
 * hostname:pid). Never fails.
 */
void cfg_defaults(struct cfg *c);

/*
 * Set one setting by its variable name (e.g. "MAX_FILE_SIZE") from text.
 * Returns 0, or -ENOENT for an unknown name, -EINVAL for a bad value; either
 * way err gets one line naming the variable and what is wrong.
 */
int cfg_set(struct cfg *c, const char *name, const char *value, char *err, size_t errlen);

/*
 * Parse dotenv text (KEY=value lines, '#' comments, blank lines, optional
 * "export ", single or double quotes, \n \" \\ escapes in double quotes) and
 * call fn for each assignment, in order. Pure: no I/O, no allocation beyond
 * the caller's scratch. Returns 0, or -EBADMSG with err naming the line.
 */
typedef int (*cfg_kv_fn)(void *ud, const char *key, const char *value, char *err, size_t errlen);
int cfg_parse_env_text(const char *text, size_t len, cfg_kv_fn fn, void *ud, char *err,
                       size_t errlen);

/*
 * Load the whole configuration for one command: defaults, then the file named
 * by --env-file (if any), then the environment (only the names API.md lists),
 * then the flags in argv[0..argc) (--kebab-name VALUE or --kebab-name=VALUE,
 * plus --env-file FILE), then cross-field checks (pool min <= max <= cap...).
 * Returns 0, or -EINVAL with one line in err naming the variable or flag.
 */
int cfg_load(struct cfg *c, int argc, char **argv, char *err, size_t errlen);

/*
 * Make what must be absolute at run time so: a relative socket directory in
 * DATABASE_URL / DB_READ_URL ("host=./var/run", the default) is resolved
 * against the working directory, since libpq takes only absolute ones.
 * check-config prints the values as given; serve and the database commands
 * call this. Returns 0 or -EINVAL with err naming the variable.
 */
int cfg_resolve_paths(struct cfg *c, char *err, size_t errlen);

/*
 * Print the effective configuration, one "NAME=value" line per setting in
 * API.md's order, secrets (passwords in URLs, SIGNING_KEY) redacted.
 */
void cfg_print(const struct cfg *c, FILE *out);

#endif /* ENGINE_CORE_CFG_H */
