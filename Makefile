# ringup: plain Makefile. `make run` serves on :8080, `make test` runs the suite.
# Other targets: all, asan, fuzz, check, format, check-format, bench-healthz, clean.

CC       ?= cc
BUILD    ?= build
SANITIZER ?=
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

WARN   := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wformat=2 -Wvla -Wimplicit-fallthrough
CFLAGS ?= -O2 -g
BASE_CFLAGS := -std=gnu11 -D_GNU_SOURCE -pthread -I. -I$(LLHTTP_INC) -I/usr/include/postgresql \
               -MMD -MP
ifneq ($(SANITIZER),)
CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=$(SANITIZER)
endif
LIBS := -luring -lpq -lhiredis -lcjson -lcrypto -lmagic -lm -pthread

ENGINE_SRC := $(sort $(wildcard engine/*.c engine/*/*.c))
PROTO_SRC  := $(sort $(wildcard proto/*.c))
LIB_SRC    := $(filter-out engine/main.c,$(ENGINE_SRC)) $(PROTO_SRC)
SQL_SRC    := $(sort $(wildcard engine/sql/*.sql))
# The migrations, compiled in (engine/admin.h); generated, so it lives in the build folder.
GEN_OBJ    := $(BUILD)/gen/migrations.o
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o) $(GEN_OBJ)
LLHTTP_OBJ := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
BIN        := $(BUILD)/ringup

UNIT_SRC   := $(sort $(wildcard tests/engine/*/*_test.c tests/proto/*_test.c tests/bench/*_test.c))
UNIT_BIN   := $(UNIT_SRC:%.c=$(BUILD)/%)
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
REPLAY_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/replay/%)
FUZZ_BIN   := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

.PHONY: all run test asan test-suite units fuzz check format check-format bench-healthz bench-db bench-put bench bench-scale clean \
        devstack-start devstack-stop

all: ringup

ringup: $(BIN)
	@if [ "$(BIN)" != "ringup" ]; then cp $(BIN) ringup; fi

$(BIN): $(BUILD)/engine/main.o $(LIB_OBJ) $(LLHTTP_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(WARN) -c -o $@ $<

# engine/sql/*.sql as C strings, so `ringup migrate` needs no files beside the binary.
%/gen/migrations.c: $(SQL_SRC) tools/embed-sql
	@mkdir -p $(dir $@)
	tools/embed-sql $(SQL_SRC) >$@.tmp && mv $@.tmp $@

$(GEN_OBJ): $(BUILD)/gen/migrations.c
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(WARN) -c -o $@ $<

# llhttp comes from Debian's node-llhttp, compiled strict and without -Werror.
$(BUILD)/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -I$(LLHTTP_INC) -DLLHTTP_STRICT_MODE=1 $(CFLAGS) -w -c -o $@ $<

# Unit tests may #include the module under test; they link the rest of the tree.
$(BUILD)/tests/%_test: tests/%_test.c $(LIB_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< \
	    $(filter-out $(BUILD)/$*.o,$(LIB_OBJ)) $(LLHTTP_OBJ) -lcmocka $(LIBS)

# Fuzz targets built with a plain driver replay their corpus in every test run.
$(BUILD)/replay/%: tests/fuzz/%.c tests/fuzz/replay.c $(LIB_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< tests/fuzz/replay.c \
	    $(LIB_OBJ) $(LLHTTP_OBJ) $(LIBS)

units: $(BIN) $(UNIT_BIN) $(REPLAY_BIN) $(BUILD)/bench/dbload $(BUILD)/bench/ringup-load \
       $(BUILD)/bench/fsops

# Serve against the devstack: migrate its database, keep a token for user "dev" in
# var/dev-token (created once, mode 0600; delete the file for a new one), then serve.
run:
	tools/bootstrap
	$(MAKE) ringup
	tools/devstack start
	@tools/devstack banner
	@eval "$$(tools/devstack env)" && export DATABASE_URL REDIS_URL && \
	./ringup migrate && ./ringup init-storage && \
	if [ ! -s var/dev-token ]; then \
	    (umask 077 && ./ringup token create --user dev >var/dev-token.new) && \
	        mv var/dev-token.new var/dev-token || { rm -f var/dev-token.new; exit 1; }; \
	fi && \
	echo "ringup: token of user dev (in var/dev-token): $$(cat var/dev-token)" && \
	echo "ringup: serving on :8080 (Ctrl-C stops it). Try:" && \
	echo '  TOKEN=$$(cat var/dev-token)' && \
	echo '  curl -i http://127.0.0.1:8080/healthz' && \
	echo '  curl -s http://127.0.0.1:8080/metrics | head' && \
	echo '  curl -H "Authorization: Bearer $$TOKEN" http://127.0.0.1:8080/v1/files' && \
	exec ./ringup serve

# The suite: unit tests and corpus replay under ASan+UBSan, integration tests
# against the release binary with a private PostgreSQL and Redis.
test:
	tools/bootstrap
	$(MAKE) ringup build/bench/dbload build/bench/ringup-load build/bench/fsops
	$(MAKE) check
	$(MAKE) check-format
	$(MAKE) BUILD=build/asan SANITIZER=address,undefined units
	tools/run-tests --units build/asan --bin ./ringup

# The whole suite, integration tests included, against an ASan+UBSan binary.
asan:
	tools/bootstrap
	$(MAKE) BUILD=build/asan SANITIZER=address,undefined units
	tools/run-tests --units build/asan --bin build/asan/ringup

fuzz: $(FUZZ_BIN)

build/fuzz/%: tests/fuzz/%.c $(LIB_SRC) build/gen/migrations.c
	@mkdir -p $(dir $@) build/fuzz/llhttp
	for f in llhttp api http; do \
	    clang -std=gnu11 -I$(LLHTTP_INC) -DLLHTTP_STRICT_MODE=1 -O1 -g -w \
	        -fsanitize=fuzzer-no-link,address,undefined -c -o build/fuzz/llhttp/$$f.o \
	        $(LLHTTP_SRC)/$$f.c; done
	clang $(BASE_CFLAGS) -O1 -g $(WARN) -fsanitize=fuzzer,address,undefined -o $@ $< \
	    $(LIB_SRC) build/gen/migrations.c build/fuzz/llhttp/*.o $(LIBS)

# Layering rules of STYLE.md (tools/check-deps: no include or call cycles between modules,
# each room includes only what it may; it reads the objects), and every header compiling alone.
check: $(BIN)
	tools/check-deps $(BUILD)
	@for h in engine/*.h engine/*/*.h proto/*.h; do \
	    echo "#include \"$$h\"" | $(CC) $(BASE_CFLAGS) $(WARN) -fsyntax-only -x c - \
	        || { echo "check: $$h is not self-contained"; exit 1; }; done
	@echo "check: ok"

FORMAT_SRC = $(wildcard engine/*.[ch] engine/*/*.[ch] proto/*.[ch] tests/*/*.[ch] tests/*/*/*.[ch] \
                        bench/*.[ch] bench/load/*.[ch])
format:
	clang-format -i $(FORMAT_SRC)

check-format:
	clang-format --dry-run --Werror $(FORMAT_SRC)

# Benchmark drivers that link the engine (one ring on the calling thread).
$(BUILD)/bench/%: bench/%.c $(LIB_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(LLHTTP_OBJ) $(LIBS)

# The load generator (bench/load): its own modules only, no engine; liburing from Debian.
LOAD_SRC := $(sort $(wildcard bench/load/*.c))
$(BUILD)/bench/ringup-load: $(LOAD_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -luring -lm -pthread

bench-db: ringup $(BUILD)/bench/dbload
	bench/dbload.sh

bench-put: ringup
	tools/bootstrap --bench
	bench/put.sh

# The matrix against nginx with the project's load generator (under 15 minutes), and the
# scale run (10,000 slow uploads, then idle connections past the descriptor limit).
bench: ringup $(BUILD)/bench/ringup-load $(BUILD)/bench/fsops
	tools/bootstrap --bench
	bench/bench.sh

bench-scale: ringup $(BUILD)/bench/ringup-load
	tools/bootstrap --bench
	bench/scale.sh

bench-healthz: ringup
	tools/bootstrap --bench
	bench/healthz.sh

clean:
	rm -rf build ringup

-include $(shell find build -name '*.d' 2>/dev/null)
