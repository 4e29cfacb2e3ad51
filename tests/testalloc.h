/*
 * testalloc.h - a test allocator for PeerGraphSetAllocator: counts the
 * allocations made and the blocks and bytes alive, and fails the N-th
 * allocation (or every one from the N-th on).  test_alloc, test_limits.
 */
#ifndef TESTALLOC_H
#define TESTALLOC_H
#include "testutil.h"

static long long a_count;  /* allocations made (alloc + realloc) */
static long long a_fail;   /* fail the allocation with this number (0: never) */
static int a_sticky;       /* 1: fail every allocation from a_fail on */
static long long a_live;   /* blocks not freed */
static long long a_bytes;  /* ... and their bytes */
static long long a_peak;   /* the most bytes alive at once since a_reset_peak */

typedef union { size_t n; long double ld; void *p; long long ll; } a_hdr; /* keeps the block aligned */

static int a_should_fail(void)
{
    ++a_count;
    return a_fail && (a_count == a_fail || (a_sticky && a_count > a_fail));
}

static void a_grew(long long d)
{
    a_bytes += d;
    if (a_bytes > a_peak) a_peak = a_bytes;
}

static void *a_alloc(PVOID ctx, size_t cb)
{
    a_hdr *h;
    (void)ctx;
    if (a_should_fail()) return NULL;
    if (!(h = (a_hdr *)malloc(sizeof *h + cb))) return NULL;
    h->n = cb;
    a_live++;
    a_grew((long long)cb);
    return h + 1;
}

static void *a_realloc(PVOID ctx, void *pv, size_t cb)
{
    a_hdr *h;
    size_t old;
    (void)ctx;
    if (!pv) return a_alloc(ctx, cb);
    if (a_should_fail()) return NULL;
    old = ((a_hdr *)pv - 1)->n;
    h = (a_hdr *)realloc((a_hdr *)pv - 1, sizeof *h + cb);
    if (!h) return NULL;
    h->n = cb;
    a_grew((long long)cb - (long long)old);
    return h + 1;
}

static void a_free(PVOID ctx, void *pv)
{
    (void)ctx;
    if (!pv) return;
    a_live--;
    a_bytes -= (long long)((a_hdr *)pv - 1)->n;
    free((a_hdr *)pv - 1);
}

/* Installs the allocator (the library must not be started). */
static void a_install(void)
{
    PEER_ALLOCATOR al;
    memset(&al, 0, sizeof al);
    al.dwSize = sizeof al;
    al.pfnAlloc = a_alloc;
    al.pfnRealloc = a_realloc;
    al.pfnFree = a_free;
    assert_int_equal(PeerGraphSetAllocator(&al), S_OK);
}

#endif
