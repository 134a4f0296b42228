#!/usr/bin/env bash
# tools/check-deps on small made-up trees, in a temporary directory: three modules that
# include and call each other in a ring fail; the same modules in a line pass; a header
# including a routes header from core, and liburing.h from a header, fail. TAP output.
set -uo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
script=$root/tools/check-deps
cc=${CC:-cc}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

n=0
failed=0

# ok COND-STATUS NAME: one TAP line; status 0 passes
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
    fi
}

# module DIR NAME CALLS...: DIR/NAME.h declares NAME_fn, DIR/NAME.c defines it and calls
# each of CALLS_fn (a module path like engine/core/b), including its header
module() {
    local dir=$1 name=$2 m
    shift 2
    mkdir -p "$dir"
    printf '#ifndef %s_H\n#define %s_H\nint %s_fn(void);\n#endif\n' "$name" "$name" "$name" \
        >"$dir/$name.h"
    {
        printf '#include "%s/%s.h"\n' "$dir" "$name"
        for m in "$@"; do printf '#include "%s.h"\n' "$m"; done
        printf 'int %s_fn(void)\n{\n    return 0' "$name"
        for m in "$@"; do printf ' + %s_fn()' "${m##*/}"; done
        printf ';\n}\n'
    } >"$dir/$name.c"
}

# build TREE: objects of TREE's .c files in TREE/build
build() {
    local c
    (
        cd "$1" || exit 1
        find engine proto -name '*.c' 2>/dev/null | while IFS= read -r c; do
            mkdir -p "build/$(dirname "$c")"
            "$cc" -I. -c -o "build/${c%.c}.o" "$c" || exit 1
        done
    )
}

# check TREE: run the script there; its output in $tmp/out
check() {
    (cd "$1" && "$script" build) >"$tmp/out" 2>&1
}

# 1. a ring a -> b -> c -> a, by includes and by calls
abca="engine/core/a -> engine/core/b -> engine/core/c -> engine/core/a"
t=$tmp/ring
(cd "$tmp" && mkdir ring && cd ring &&
    module engine/core a engine/core/b &&
    module engine/core b engine/core/c &&
    module engine/core c engine/core/a)
build "$t"
check "$t"
ok $((! $?)) "a ring of three modules fails"
grep -qx "check-deps: include cycle: $abca" "$tmp/out"
ok $? "the include cycle is printed as a -> b -> c -> a"
grep -qx "check-deps: symbol cycle: $abca" "$tmp/out"
ok $? "the symbol cycle is printed as a -> b -> c -> a"

# 2. the same modules in a line: a -> b -> c
t=$tmp/line
(cd "$tmp" && mkdir line && cd line &&
    module engine/core a engine/core/b &&
    module engine/core b engine/core/c &&
    module engine/core c)
build "$t"
check "$t"
ok $? "a line of three modules passes"
grep -q '^check-deps: ok' "$tmp/out"
ok $? "a pass says ok"

# 3. the same, with calls only (no include): the symbol graph alone finds the ring
t=$tmp/calls
cp -r "$tmp/line" "$t"
printf '#include "engine/core/c.h"\nint a_fn(void);\n' >"$t/engine/core/c.c"
printf 'int c_fn(void)\n{\n    return a_fn();\n}\n' >>"$t/engine/core/c.c"
rm -rf "$t/build"
build "$t"
check "$t"
ok $((! $?)) "a ring made by calls alone fails"
grep -qx "check-deps: symbol cycle: $abca" "$tmp/out"
ok $? "the symbol cycle is named"
! grep -q 'include cycle' "$tmp/out"
ok $? "no include cycle is claimed"

# 4. core including a routes header: a boundary violation, named by file and line
t=$tmp/room
cp -r "$tmp/line" "$t"
(cd "$t" && module engine/routes files)
sed -i '1a #include "engine/routes/files.h"' "$t/engine/core/c.h"
rm -rf "$t/build"
build "$t"
check "$t"
ok $((! $?)) "core including a routes header fails"
grep -q '^check-deps: engine/core/c.h:2: includes engine/routes/files.h' "$tmp/out"
ok $? "the violation names the file and line"

# 5. a library header included from a header
t=$tmp/lib
cp -r "$tmp/line" "$t"
sed -i '1a #include <liburing.h>' "$t/engine/core/b.h"
check "$t"
ok $((! $?)) "liburing.h in a header fails"
grep -q '^check-deps: engine/core/b.h:2: includes <liburing.h>' "$tmp/out"
ok $? "the library violation names the file and line"

# 6. --dot prints a graph with the edges
(cd "$tmp/ring" && "$script" --dot) >"$tmp/out" 2>&1
grep -q '"engine/core/a" -> "engine/core/b"' "$tmp/out" && grep -q '^digraph' "$tmp/out"
ok $? "--dot prints the module graph"

echo "1..$n"
[ "$failed" -eq 0 ]
