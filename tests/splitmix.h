/*
 * tests/splitmix.h - SplitMix64, the deterministic generator of the core's
 * unit tests that include a section of p2pgraph.c (test_map, test_slab):
 * rnd() gives the same sequence in every run.
 */
#ifndef P2PG_TESTS_SPLITMIX_H
#define P2PG_TESTS_SPLITMIX_H
#include <stdint.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
#endif
