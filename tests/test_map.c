/*
 * tests/test_map.c - the core's hash map (section 1b of p2pgraph.c, extracted
 * to build/gen/map_module.inc and included here: its functions are static),
 * driven against a reference array: random puts, replacements and deletions
 * across many growths, checked after every change, with the growth's
 * incremental move (old and new slots side by side) checked on its own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static int g_fail_calloc; /* the next pg_calloc fails */
static void *pg_calloc(size_t n, size_t cb)
{
    if (g_fail_calloc) { g_fail_calloc = 0; return NULL; }
    return calloc(n, cb);
}
static void pg_free(void *p) { free(p); }

#include "map_module.inc"

/* The reference: value[k] for keys 1..NKEYS (0 = absent). */
#define NKEYS 3000
static uintptr_t ref[NKEYS + 1];
static size_t ref_n;

#include "splitmix.h"

/* Spread keys over 64 bits as node IDs and pointers are (an odd multiplier:
 * invertible, so a key found in the map tells its index). */
#define KEY_MUL 0x2545F4914F6CDD1DULL
static uint64_t key_of(size_t k) { return (uint64_t)k * KEY_MUL; }
static size_t index_of(uint64_t key)
{
    uint64_t inv = KEY_MUL;
    int i;
    for (i = 0; i < 6; i++) inv *= 2 - KEY_MUL * inv; /* Newton: KEY_MUL * inv == 1 mod 2^64 */
    return (size_t)(key * inv);
}

/* Every entry visited exactly once with its value, and every reference key found. */
static void check_all(const pg_map *m)
{
    static unsigned char seen[NKEYS + 1];
    size_t pos, k, visited = 0;
    memset(seen, 0, sizeof seen);
    for (pos = 0; pos < map_span(m); pos++) {
        uint64_t key = 0;
        void *obj = map_at(m, pos, &key);
        if (!obj) continue;
        k = index_of(key);
        assert_true(k >= 1 && k <= NKEYS);
        assert_int_equal(seen[k], 0);
        seen[k] = 1;
        assert_true((uintptr_t)obj == ref[k]);
        visited++;
    }
    assert_int_equal(visited, ref_n);
    assert_int_equal(m->n, ref_n);
    for (k = 1; k <= NKEYS; k++) {
        void *obj = map_get(m, key_of(k));
        if (ref[k]) assert_true((uintptr_t)obj == ref[k]);
        else assert_null(obj);
    }
}

static void ref_put(pg_map *m, size_t k, uintptr_t v)
{
    assert_int_equal(map_put(m, key_of(k), (void *)v), 1);
    if (!ref[k]) ref_n++;
    ref[k] = v;
    assert_true((uintptr_t)map_get(m, key_of(k)) == v);
}

static void ref_del(pg_map *m, size_t k)
{
    map_del(m, key_of(k));
    if (ref[k]) ref_n--;
    ref[k] = 0;
    assert_null(map_get(m, key_of(k)));
}

static void ref_reset(void)
{
    memset(ref, 0, sizeof ref);
    ref_n = 0;
}

/* Random changes: the live set swells to ~NKEYS and shrinks again, several
 * times, so the map grows through many sizes with deletions and
 * replacements landing on entries in the old slots as well as the new. */
static void test_map_random_against_reference(void **state)
{
    pg_map m;
    long op;
    int grows = 0, during = 0;
    size_t lastcap = 0;
    (void)state;
    memset(&m, 0, sizeof m);
    ref_reset();
    for (op = 0; op < 120000; op++) {
        size_t k = 1 + (size_t)(rnd() % NKEYS);
        int phase = (int)((op / 20000) % 2); /* 0: mostly puts, 1: mostly deletions */
        unsigned r = (unsigned)(rnd() % 100);
        if (r < (phase ? 30u : 75u)) ref_put(&m, k, (uintptr_t)(rnd() | 1));
        else ref_del(&m, k);
        if (m.cap != lastcap) { grows++; lastcap = m.cap; }
        if (m.old) during++;
        if (m.old || op % 997 == 0) check_all(&m);
    }
    check_all(&m);
    assert_true(grows >= 8);      /* 16 .. 8192 slots */
    assert_true(during > 300);    /* changes made while old slots were still in use */
    map_free(&m);
    assert_null(m.slots);
    assert_null(m.old);
}

/* A growth moves at most MAP_STEP old slots per change: right after the
 * put that grows, most entries are still in the old slots, all are found,
 * and the old slots are gone before the table can grow again. */
static void test_map_growth_is_spread(void **state)
{
    pg_map m;
    size_t k = 1, cap_before, puts_to_finish = 0;
    (void)state;
    memset(&m, 0, sizeof m);
    ref_reset();
    for (; m.cap < 1024; k++) ref_put(&m, k, (uintptr_t)k * 8 + 1);
    for (; (ref_n + 1) * 2 <= m.cap; k++) ref_put(&m, k, (uintptr_t)k * 8 + 1); /* the next put grows */
    cap_before = m.cap;
    assert_null(m.old);
    ref_put(&m, k++, 77);
    assert_int_equal(m.cap, 2 * cap_before);
    assert_non_null(m.old);
    assert_int_equal(m.oldcap, cap_before);
    assert_true(m.mig <= MAP_STEP);
    check_all(&m);
    /* deletions and replacements of entries still in the old slots */
    ref_del(&m, 1);
    ref_put(&m, 2, 4242);
    ref_del(&m, 3);
    ref_put(&m, 3, 4343);
    assert_non_null(m.old);
    check_all(&m);
    while (m.old) {
        ref_put(&m, k++, 99);
        puts_to_finish++;
        assert_int_equal(m.cap, 2 * cap_before); /* no growth while moving */
    }
    assert_true(puts_to_finish <= cap_before / MAP_STEP + 1);
    check_all(&m);
    map_free(&m);
}

/* Out of memory when growing: the put fails, nothing is lost. */
static void test_map_grow_failure(void **state)
{
    pg_map m;
    size_t k = 1;
    (void)state;
    memset(&m, 0, sizeof m);
    ref_reset();
    for (; m.cap < 64; k++) ref_put(&m, k, (uintptr_t)k * 8 + 1);
    for (; (ref_n + 1) * 2 <= m.cap; k++) ref_put(&m, k, (uintptr_t)k * 8 + 1);
    g_fail_calloc = 1;
    assert_int_equal(map_put(&m, key_of(k), (void *)(uintptr_t)5), 0);
    assert_null(map_get(&m, key_of(k)));
    assert_null(m.old);
    check_all(&m);
    ref_put(&m, k, 5); /* and it works once memory is back */
    check_all(&m);
    map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_random_against_reference),
        cmocka_unit_test(test_map_growth_is_spread),
        cmocka_unit_test(test_map_grow_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
