-- 0001: API tokens and files (a file row in state 'queued' is a job; see DESIGN.md, Jobs).
-- Applied once by `ringup migrate` inside one transaction; never edit an applied migration,
-- add a new file with the next number instead.

-- Only the SHA-256 of a token is kept; prefix (its first 12 characters) names it to operators.
CREATE TABLE api_tokens (
    id          bigserial PRIMARY KEY,
    user_name   text        NOT NULL CHECK (user_name <> ''),
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    prefix      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
-- `ringup token revoke PREFIX` finds a token by its prefix.
CREATE INDEX api_tokens_prefix ON api_tokens (prefix);
CREATE TABLE files (
    id           uuid        PRIMARY KEY,
    owner        text        NOT NULL,
    name         text        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    mime         text,
    sha256       text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    status       text        NOT NULL CHECK (status IN ('uploading','queued','processing','ready','rejected','failed')),
    storage_key  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    error        text,
    claimed_by   text,
    lease_until  timestamptz,
    priority     smallint    NOT NULL DEFAULT 0
);
-- GET /v1/files: the caller's files newest first, keyset on (created_at, id).
CREATE INDEX files_owner_created ON files (owner, created_at DESC, id DESC);
-- The sweeper: claims whose lease ran out.
CREATE INDEX files_job_sweep ON files (lease_until) WHERE status IN ('queued', 'processing');
-- Unclaimed jobs, highest priority and oldest first.
CREATE INDEX files_job_queue ON files (priority DESC, created_at) WHERE status = 'queued' AND claimed_by IS NULL;
