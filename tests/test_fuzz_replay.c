/*
 * test_fuzz_replay.c - runs every file of the committed libFuzzer corpora
 * (fuzz/corpus/<target>/) through its fuzz target, as a plain cmocka test:
 * no fuzzer runtime, so the corpora are checked in every build (native,
 * ASan + UBSan, valgrind, mingw-w64 under wine).  The four target files are
 * included here with their entry points renamed; each target keeps its
 * library instance between inputs, as under libFuzzer, and is torn down
 * after its corpus.  Files are replayed in name order.
 *
 * Run from the repository root (as `make test` does).  P2PG_FUZZ_CORPUS
 * names another corpus root (e.g. a fuzzer's output directory).
 */
#include "testutil.h"

#ifdef _WIN32
#include <io.h>
#else
#include <dirent.h>
#endif

#define FUZZ_REPLAY 1

#define LLVMFuzzerTestOneInput fuzz_wire_one
#define fuzz_teardown fuzz_wire_teardown
#include "fuzz/fuzz_wire.c"
#undef LLVMFuzzerTestOneInput
#undef fuzz_teardown

#define LLVMFuzzerTestOneInput fuzz_record_one
#define fuzz_teardown fuzz_record_teardown
#include "fuzz/fuzz_record.c"
#undef LLVMFuzzerTestOneInput
#undef fuzz_teardown

#define LLVMFuzzerTestOneInput fuzz_search_one
#define fuzz_teardown fuzz_search_teardown
#include "fuzz/fuzz_search.c"
#undef LLVMFuzzerTestOneInput
#undef fuzz_teardown

#define LLVMFuzzerTestOneInput fuzz_dbfile_one
#define fuzz_teardown fuzz_dbfile_teardown
#include "fuzz/fuzz_dbfile.c"
#undef LLVMFuzzerTestOneInput
#undef fuzz_teardown

typedef struct { char **v; size_t n, cap; } namelist;

static void names_add(namelist *l, const char *name)
{
    if (name[0] == '.') return; /* ., .., .gitkeep */
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = (char **)realloc(l->v, l->cap * sizeof *l->v);
        assert_non_null(l->v);
    }
    l->v[l->n] = (char *)malloc(strlen(name) + 1);
    assert_non_null(l->v[l->n]);
    strcpy(l->v[l->n++], name);
}

static int names_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files of dir, sorted by name (_findfirst on Windows, opendir
 * elsewhere). */
static void list_dir(const char *dir, namelist *l)
{
#ifdef _WIN32
    struct _finddata_t fd;
    intptr_t h;
    char pat[600];
    snprintf(pat, sizeof pat, "%s/*", dir);
    h = _findfirst(pat, &fd);
    if (h != -1) {
        do
            if (!(fd.attrib & _A_SUBDIR)) names_add(l, fd.name);
        while (_findnext(h, &fd) == 0);
        _findclose(h);
    }
#else
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d) {
        while ((e = readdir(d)) != NULL) {
            char path[1200];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) names_add(l, e->d_name);
        }
        closedir(d);
    }
#endif
    if (l->n) qsort(l->v, l->n, sizeof *l->v, names_cmp);
}

static unsigned char *read_file(const char *path, size_t *pn)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long len;
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    b = (unsigned char *)malloc((size_t)len + 1); /* + 1: never malloc(0) */
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *pn = (size_t)len;
    return b;
}

/* Feeds every file of <root>/<target>/ to fn; then tears the target down. */
static void replay(const char *target, int (*fn)(const uint8_t *, size_t), void (*teardown_fn)(void))
{
    const char *root = getenv("P2PG_FUZZ_CORPUS");
    char dir[600];
    namelist l = {NULL, 0, 0};
    size_t i, bytes = 0;
    snprintf(dir, sizeof dir, "%s/%s", root && *root ? root : "fuzz/corpus", target);
    list_dir(dir, &l);
    print_message("%s: %u inputs from %s\n", target, (unsigned)l.n, dir);
    assert_true(l.n > 0); /* the corpus is committed: an empty one means a wrong directory */
    for (i = 0; i < l.n; i++) {
        char path[1200];
        size_t n;
        unsigned char *b;
        snprintf(path, sizeof path, "%s/%s", dir, l.v[i]);
        b = read_file(path, &n);
        if (getenv("P2PG_FUZZ_VERBOSE")) print_message("  %s (%u bytes)\n", l.v[i], (unsigned)n);
        assert_int_equal(fn(b, n), 0);
        bytes += n;
        free(b);
        free(l.v[i]);
    }
    free(l.v);
    teardown_fn();
    print_message("%s: %u bytes replayed\n", target, (unsigned)bytes);
}

/* After a failed assertion the target may still hold the library. */
static int down_wire(void **st) { (void)st; fuzz_wire_teardown(); return 0; }
static int down_record(void **st) { (void)st; fuzz_record_teardown(); return 0; }
static int down_search(void **st) { (void)st; fuzz_search_teardown(); return 0; }
static int down_dbfile(void **st) { (void)st; fuzz_dbfile_teardown(); return 0; }

static void test_replay_wire(void **st) { (void)st; replay("fuzz_wire", fuzz_wire_one, fuzz_wire_teardown); }
static void test_replay_record(void **st) { (void)st; replay("fuzz_record", fuzz_record_one, fuzz_record_teardown); }
static void test_replay_search(void **st) { (void)st; replay("fuzz_search", fuzz_search_one, fuzz_search_teardown); }
static void test_replay_dbfile(void **st) { (void)st; replay("fuzz_dbfile", fuzz_dbfile_one, fuzz_dbfile_teardown); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_replay_wire, down_wire),
        cmocka_unit_test_teardown(test_replay_record, down_record),
        cmocka_unit_test_teardown(test_replay_search, down_search),
        cmocka_unit_test_teardown(test_replay_dbfile, down_dbfile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
