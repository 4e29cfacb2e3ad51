/*
 * tests/test_slab.c - the core's record slab (section 1c of p2pgraph.c,
 * extracted to build/gen/slab_module.inc and included here: its functions
 * are static), driven against a reference: random allocations and frees of
 * every size class and of big records, each block filled with its own
 * pattern and checked after every change; handles and pointers checked both
 * ways; the heap the slab holds checked against what it stores; every chunk
 * back on the heap once empty; allocation failures and the chunk limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* The heap under the slab: counted, sized, and failing on demand. */
static long g_live;            /* blocks */
static long long g_bytes;      /* bytes in them */
static int g_fail;             /* the next g_fail-th allocation fails (1: the next) */
typedef struct hdr { size_t n; size_t pad; } hdr;
static int fail_now(void) { return g_fail && !--g_fail; }
static void *raw_alloc(size_t n)
{
    hdr *h = (hdr *)malloc(sizeof *h + n);
    if (!h) return NULL;
    h->n = n;
    g_live++;
    g_bytes += (long long)n;
    return h + 1;
}
static void *pg_alloc(size_t n) { return fail_now() ? NULL : raw_alloc(n); }
static void pg_free(void *p)
{
    hdr *h;
    if (!p) return;
    h = (hdr *)p - 1;
    g_live--;
    g_bytes -= (long long)h->n;
    free(h);
}
static void *pg_realloc(void *p, size_t n)
{
    void *q;
    if (fail_now() || !(q = raw_alloc(n))) return NULL;
    if (p) {
        size_t o = ((hdr *)p - 1)->n;
        memcpy(q, p, o < n ? o : n);
        pg_free(p);
    }
    return q;
}

static unsigned g_max_chunks = 1u << 18;
#define RS_MAX_CHUNKS g_max_chunks /* test_chunk_limit makes it small, to reach it */
#include "slab_module.inc"

#include "splitmix.h"

typedef struct blk { uint8_t *p; uint32_t h; size_t n; uint8_t tag; } blk;

static void fill(blk *b) { memset(b->p, b->tag, b->n); }
static void check(const blk *b)
{
    size_t i;
    assert_true(((uintptr_t)b->p & (RS_UNIT - 1)) == 0);
    assert_true(b->h > 1); /* 0 and 1 are the table's empty and tombstone */
    assert_ptr_equal(rs_ptr(b->h), b->p);
    assert_int_equal(rs_handle(b->p), b->h);
    for (i = 0; i < b->n; i++)
        if (b->p[i] != b->tag) fail_msg("block of %lu bytes overwritten at %lu", (unsigned long)b->n, (unsigned long)i);
}

/* Every chunk and table back on the heap. */
static void assert_empty(void)
{
    rs_release();
    assert_int_equal(RS.nsorted, 0);
    assert_int_equal(g_live, 0);
    assert_int_equal(g_bytes, 0);
}

/* Random sizes (every class, and big records), freed in random order,
 * every live block checked now and then and all at the end. */
static void test_random_against_reference(void **st)
{
    enum { N = 600, OPS = 20000 };
    static blk b[N];
    int i, k, live = 0;
    (void)st;
    memset(b, 0, sizeof b);
    for (k = 0; k < OPS; k++) {
        i = (int)(rnd() % N);
        if (b[i].p) {
            check(&b[i]);
            rs_free(b[i].p);
            b[i].p = NULL;
            live--;
        } else {
            uint64_t r = rnd();
            b[i].n = r % 8 == 0 ? RS_MAX_SLOT + 1 + (size_t)(r >> 8) % 6000 : 1 + (size_t)(r >> 8) % RS_MAX_SLOT;
            b[i].tag = (uint8_t)(k * 31 + 1);
            assert_non_null(b[i].p = (uint8_t *)rs_alloc(b[i].n, &b[i].h));
            fill(&b[i]);
            live++;
        }
        if (k % 997 == 0)
            for (i = 0; i < N; i++)
                if (b[i].p) check(&b[i]);
    }
    assert_true(live > N / 4);
    for (i = 0; i < N; i++)
        if (b[i].p) {
            check(&b[i]);
            rs_free(b[i].p);
        }
    assert_empty();
}

/* One class filled: slots are packed (the heap held is what is stored plus
 * the chunk headers and at most one chunk not yet full), chunks grow from
 * 1 KB to RS_CHUNK, and freeing every other record keeps every chunk that
 * still holds one; freeing the rest returns everything. */
static void test_class_packing_and_release(void **st)
{
    enum { N = 3000, SZ = 296 };
    static blk b[N];
    int i;
    long long stored = (long long)N * SZ;
    (void)st;
    for (i = 0; i < N; i++) {
        b[i].n = SZ;
        b[i].tag = (uint8_t)i;
        assert_non_null(b[i].p = (uint8_t *)rs_alloc(SZ, &b[i].h));
        fill(&b[i]);
    }
    assert_int_equal(RS.count[SZ / RS_UNIT], RS.nsorted);
    assert_true(g_bytes <= stored + (long long)RS.nsorted * (long long)RS_HDR + (long long)RS_CHUNK +
                               (long long)RS.cap * (long long)(2 * sizeof(void *) + 4));
    assert_true(g_bytes - stored < stored / 20); /* under 5% over what is stored */
    for (i = 0; i < N; i++) check(&b[i]);
    for (i = 0; i < N; i += 2) rs_free(b[i].p);
    for (i = 1; i < N; i += 2) check(&b[i]);
    /* freed slots are reused before a new chunk is cut */
    {
        uint32_t chunks = RS.nsorted;
        for (i = 0; i < N; i += 2) {
            assert_non_null(b[i].p = (uint8_t *)rs_alloc(SZ - 3, &b[i].h)); /* the same class */
            b[i].n = SZ - 3;
            fill(&b[i]);
        }
        assert_int_equal(RS.nsorted, chunks);
    }
    for (i = 0; i < N; i++) {
        check(&b[i]);
        rs_free(b[i].p);
    }
    assert_empty();
}

/* An allocation that fails (the chunk, or a table growing) returns NULL
 * and leaves the slab as it was; the next one works. */
static void test_allocation_failures(void **st)
{
    blk a[40];
    int i, k;
    (void)st;
    for (k = 1; k <= 4; k++) {
        for (i = 0; i < 40; i++) {
            uint32_t h = 0;
            g_fail = k;
            a[i].n = 100 + (size_t)i * 60; /* a new class (or a big record) nearly every time */
            a[i].tag = (uint8_t)(i + k);
            a[i].p = (uint8_t *)rs_alloc(a[i].n, &h);
            if (!a[i].p) {
                g_fail = 0;
                assert_non_null(a[i].p = (uint8_t *)rs_alloc(a[i].n, &h));
            }
            g_fail = 0;
            a[i].h = h;
            fill(&a[i]);
        }
        for (i = 0; i < 40; i++) check(&a[i]);
        for (i = 0; i < 40; i++) rs_free(a[i].p);
        assert_empty();
    }
}

/* RS_MAX_CHUNKS (48 here) chunks at most: the next allocation that needs a
 * chunk fails; once one is freed, it works again (its number is reused). */
static void test_chunk_limit(void **st)
{
    blk b[49];
    unsigned i;
    (void)st;
    g_max_chunks = 48;
    for (i = 0; i < RS_MAX_CHUNKS; i++) {
        b[i].n = RS_MAX_SLOT + 100; /* a chunk of its own each */
        b[i].tag = (uint8_t)i;
        assert_non_null(b[i].p = (uint8_t *)rs_alloc(b[i].n, &b[i].h));
        fill(&b[i]);
    }
    assert_null(rs_alloc(RS_MAX_SLOT + 100, &b[RS_MAX_CHUNKS].h));
    assert_null(rs_alloc(64, &b[RS_MAX_CHUNKS].h)); /* a small one needs a chunk too */
    rs_free(b[7].p);
    assert_non_null(b[7].p = (uint8_t *)rs_alloc(64, &b[7].h));
    b[7].n = 64;
    fill(&b[7]);
    assert_int_equal(b[7].h >> RS_OFF_BITS, 7); /* (the only free number) */
    for (i = 0; i < RS_MAX_CHUNKS; i++) {
        check(&b[i]);
        rs_free(b[i].p);
    }
    assert_empty();
    g_max_chunks = 1u << 19;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_class_packing_and_release),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_chunk_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
