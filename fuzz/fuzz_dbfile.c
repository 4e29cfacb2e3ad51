/*
 * fuzz_dbfile.c - libFuzzer target: the database file reader (db_load:
 * log_walk, META and REC entries, torn tails, checksums, the rewrite after
 * damage) through PeerGraphOpen, and the export file reader through
 * PeerGraphImportDatabase (PROTOCOL.md 3b).
 *
 * The file format: "P2PGLOG2", then entries u32 length (of kind + body) |
 * u8 kind | body | MD5(kind + body); kinds 1 META, 2 REC (a record's wire
 * form), 3 DROP (a record ID).  Random bytes almost never carry a right
 * MD5, so the harness can fix the checksums itself (bit 0).
 *
 * Input:
 *   byte 0  mode
 *           bit 0  fix the checksums: the harness walks the entries as the reader
 *                  does and writes each complete entry's MD5
 *           bit 1  make each REC entry's record ID match its creator (MD5 fold,
 *                  PROTOCOL.md R2), before the checksums
 *           bit 2  the file's first 8 bytes are set to the magic "P2PGLOG2"
 *           bit 3  0: the file is the database of graph "G", peer "P", name
 *                  "fuzzdb-<pid>": PeerGraphOpen, read everything back (properties,
 *                  records, nodes, searches, database info), service it for 20 s
 *                  of synthetic time, optionally export (bit 4), Close, delete
 *                  1: the file is an export: PeerGraphImportDatabase into graph
 *                  "G" / "P" / "fuzzimport-<pid>" (opened once, empty; reopened fresh
 *                  after an import changed it)
 *           bit 4  (open) PeerGraphExportDatabase of what was loaded, and that
 *                  export imported into the import graph
 *   rest    the file
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_teardown(void);

#define FD_MAX_FILE (1u << 20)
#define FD_RESTART_EVERY 1024 /* inputs; keeps the synthetic clock near the seeds' times */

static int fd_ready;
static unsigned fd_runs;
static HGRAPH fd_imp;
static char fd_db_path[600], fd_imp_path[600], fd_exp_path[600];
static wchar_t fd_imp_wpath[600], fd_exp_wpath[600];
static wchar_t fd_dbname[64], fd_impname[64]; /* "fuzzdb-<pid>", "fuzzimport-<pid>" */
static uint8_t fd_buf[FD_MAX_FILE];

/* A fresh, empty import target (PeerGraphOpen of a new database). */
static void fd_open_import_target(void)
{
    PeerGraphDelete(L"G", L"P", fd_impname);
    FZ_CHECK(PeerGraphOpen(L"G", L"P", fd_impname, NULL, 0, NULL, &fd_imp) == PEER_S_GRAPH_DATA_CREATED);
}

static void fd_setup(void)
{
    uint8_t h[16];
    const char *dir;
    char db[64], imp[64], exp[64];
    fz_lib_start();
    dir = fz_db_dir();
    fz_name(db, sizeof db, "fuzzdb");
    fz_name(imp, sizeof imp, "fuzz-import");
    fz_name(exp, sizeof exp, "fuzz-export");
    fz_wname(fd_dbname, 64, "fuzzdb");
    fz_wname(fd_impname, 64, "fuzzimport");
    fz_md5((const uint8_t *)"G\0P", 3, h);
    snprintf(fd_db_path, sizeof fd_db_path, "%s/%s.%02x%02x%02x%02x%02x%02x%02x%02x.p2pg", dir, db, h[0], h[1], h[2],
             h[3], h[4], h[5], h[6], h[7]);
    snprintf(fd_imp_path, sizeof fd_imp_path, "%s/%s.bin", dir, imp);
    snprintf(fd_exp_path, sizeof fd_exp_path, "%s/%s.bin", dir, exp);
    fz_widen(fd_imp_path, fd_imp_wpath, sizeof fd_imp_wpath / sizeof fd_imp_wpath[0]);
    fz_widen(fd_exp_path, fd_exp_wpath, sizeof fd_exp_wpath / sizeof fd_exp_wpath[0]);
    fd_open_import_target();
    fd_ready = 1;
    fd_runs = 0;
}

void fuzz_teardown(void)
{
    if (!fd_ready) return;
    fz_close_delete(fd_imp, L"G", L"P", fd_impname);
    fz_lib_stop();
    remove(fd_imp_path);
    remove(fd_exp_path);
    remove(fd_db_path);
    fd_ready = 0;
}

static void fd_write(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f != NULL);
    FZ_CHECK(fwrite(p, 1, n, f) == n);
    FZ_CHECK(fclose(f) == 0);
}

/* The harness's own walk of the entries: fixes record IDs and checksums. */
static void fd_fix(uint8_t *b, size_t n, unsigned mode)
{
    size_t i;
    for (i = 8; i < n;) {
        size_t len;
        if (n - i < 5) break;
        len = fz_get32(b + i);
        if (len == 0 || len > n - i - 4 || n - i - 4 - len < 16) break;
        if ((mode & 2) && b[i + 4] == 2) {
            fz_rec_layout l;
            if (fz_rec_parse(b + i + 5, len - 1, &l)) fz_rec_fix_id(b + i + 5, &l);
        }
        if (mode & 1) fz_md5(b + i + 4, len, b + i + 4 + len);
        i += 4 + len + 16;
    }
}

/* Reads a graph through the API. */
static void fd_read(HGRAPH h)
{
    PPEER_GRAPH_PROPERTIES pp = NULL;
    PEER_DATABASE_INFO di;
    DWORD st;
    HRESULT hr = PeerGraphGetProperties(h, &pp);
    FZ_CHECK(hr == S_OK || hr == PEER_E_GRAPH_NOT_READY); /* never synchronized */
    if (hr == S_OK) {
        fz_touch_wcs(pp->pwzGraphId);
        fz_touch_wcs(pp->pwzCreatorId);
        fz_touch_wcs(pp->pwzFriendlyName);
        fz_touch_wcs(pp->pwzComment);
        PeerGraphFreeData(pp);
    }
    FZ_CHECK(PeerGraphGetStatus(h, &st) == S_OK);
    memset(&di, 0, sizeof di);
    di.dwSize = sizeof di;
    FZ_CHECK(PeerGraphGetDatabaseInfo(h, &di) == S_OK);
    fz_fixed_searches(h); /* first: the matcher walks stored attribute XML itself */
    fz_read_all_records(h);
    fz_read_nodes(h);
}

/* Imports a file into the import target; reopens that fresh if it changed. */
static void fd_import(const wchar_t *path)
{
    HRESULT hr = PeerGraphImportDatabase(fd_imp, path);
    DWORD st = 0;
    FZ_CHECK(hr == S_OK || hr == PEER_E_INVALID_DATABASE || hr == PEER_E_DATABASE_NOT_PRESENT || hr == E_OUTOFMEMORY);
    FZ_CHECK(PeerGraphGetStatus(fd_imp, &st) == S_OK);
    if (hr == S_OK && (fz_record_count(fd_imp) || (st & PEER_GRAPH_STATUS_SYNCHRONIZED))) {
        fd_read(fd_imp);
        FZ_CHECK(PeerGraphClose(fd_imp) == S_OK);
        fd_open_import_target();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned mode;
    HGRAPH h = NULL;
    HRESULT hr;
    if (size < 1) return 0;
    if (fd_ready && fd_runs >= FD_RESTART_EVERY) fuzz_teardown();
    if (!fd_ready) fd_setup();
    fd_runs++;
    mode = data[0];
    data++, size--;
    if (size > FD_MAX_FILE) size = FD_MAX_FILE;
    memcpy(fd_buf, data, size);
    if ((mode & 4) && size >= 8) memcpy(fd_buf, "P2PGLOG2", 8);
    if (mode & 3) fd_fix(fd_buf, size, mode);

    if (mode & 8) {
        fd_write(fd_imp_path, fd_buf, size);
        fd_import(fd_imp_wpath);
        remove(fd_imp_path);
        return 0;
    }
    fd_write(fd_db_path, fd_buf, size);
    hr = PeerGraphOpen(L"G", L"P", fd_dbname, NULL, 0, NULL, &h);
    FZ_CHECK(hr == S_OK || hr == PEER_S_GRAPH_DATA_CREATED || hr == PEER_E_INVALID_DATABASE || hr == E_OUTOFMEMORY ||
             hr == PEER_E_DATABASE_ACCESSDENIED);
    if (SUCCEEDED(hr)) {
        fd_read(h);
        fz_pump(2, 1);
        fz_pump(1, 20000); /* expiry pass, refreshes, metadata writes */
        fd_read(h);
        if (mode & 16) {
            FZ_CHECK(PeerGraphExportDatabase(h, fd_exp_wpath) == S_OK);
            fd_import(fd_exp_wpath);
            remove(fd_exp_path);
        }
        FZ_CHECK(PeerGraphClose(h) == S_OK);
    }
    remove(fd_db_path);
    return 0;
}
