/*
 * bench/store.c - the record store on disk: add rate under the durability
 * rule, open time, bytes per record, with the machine's own ceiling measured
 * in the same run.  One process, one thread, no network.
 *
 *   add      R records (default 100000) of 256 payload bytes into one graph
 *            (PeerGraphCreate), each PeerGraphAddRecord followed by one
 *            PeerGraphService(NULL, 0, now): the durability rule is on, so
 *            every record is written to the OS before AddRecord returns and
 *            the log is fsynced by the first service at least 100 ms
 *            (PEER_DB_SYNC_MS) after a change.  Records/s and per-call
 *            latency (add + service).  A second graph gets the same records
 *            with no service at all (no fsync): the library's own cost.
 *   machine  the same bytes (one log entry per record: 21 + record bytes) to
 *            a file in the same directory with one write() each and one
 *            fsync() at least 100 ms after the previous one, and with no
 *            fsync.
 *   open     PeerGraphClose then PeerGraphOpen of the R-record database,
 *            timed (page cache warm), repeated; beside it the machine reading
 *            the file (read() into a pre-faulted buffer) and reading + MD5 of
 *            every entry (the log's checksum).
 *   size     PeerGraphGetDatabaseInfo: cbFile / cRecords, and the file's size
 *            from stat().
 *
 * Usage: bench_store [-n R] [-o OPENS]   (run from the repository root; the
 *   database goes to build/tmp-bench-store and is deleted at the end)
 */
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_store: POSIX only\n");
    return 0;
}
#else

#include <dirent.h>
#include <mbedtls/md.h>

#define BENCH_NAME "bench_store"
#include "bench_util.h"

#define DB_DIR_N "build/tmp-bench-store"
#define GRAPH_ID L"bench-store"
#define PEER_A L"nodeA"
#define PAYLOAD 256
#define SYNC_MS 100 /* PEER_DB_SYNC_MS */
#define LOG_ENTRY_OVERHEAD 21 /* u32 length + u8 kind + MD5 */

static const GUID REC_TYPE = {0x5704e000, 0xbe7c, 0x4a11, {0x90, 0x1d, 0xb3, 0x2c, 0x4e, 0x55, 0x01, 0x04}};

typedef struct add_res {
    double secs, rate;
    double p50, p99, p999, max; /* per call, us */
    long syncs;                 /* fsync()s (machine) */
} add_res;

static void summarize(add_res *r, long long *lat, int n, long long total)
{
    sort_ll(lat, n);
    r->secs = (double)total / 1e9;
    r->rate = n / r->secs;
    r->p50 = pctile(lat, n, 500) / 1e3;
    r->p99 = pctile(lat, n, 990) / 1e3;
    r->p999 = pctile(lat, n, 999) / 1e3;
    r->max = (double)lat[n - 1] / 1e3;
}

/* ------------------------------------------------------------------------- */
/* the machine                                                               */
/* ------------------------------------------------------------------------- */

/* R entries of entryBytes, one write() each; fsync() at least SYNC_MS after
 * the previous one when withSync. */
static void raw_writes(int R, size_t entryBytes, int withSync, add_res *res, long long *lat)
{
    char path[256];
    uint8_t *buf = (uint8_t *)xcalloc(entryBytes, 1);
    int fd, i;
    long long t0, last_sync, t;
    size_t k;
    snprintf(path, sizeof path, "%s/raw-%d.bin", DB_DIR_N, (int)getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd < 0) { perror(path); exit(2); }
    for (k = 0; k < entryBytes; k++) buf[k] = (uint8_t)(k * 37u);
    memset(res, 0, sizeof *res);
    t0 = last_sync = now_ns();
    for (i = 0; i < R; i++) {
        long long a = now_ns();
        buf[0] = (uint8_t)i;
        if (write(fd, buf, entryBytes) != (ssize_t)entryBytes) { perror("write"); exit(2); }
        t = now_ns();
        if (withSync && t - last_sync >= SYNC_MS * 1000000LL) {
            if (fsync(fd) != 0) { perror("fsync"); exit(2); }
            res->syncs++;
            last_sync = t = now_ns();
        }
        lat[i] = t - a;
    }
    if (withSync) { fsync(fd); res->syncs++; }
    t = now_ns();
    close(fd);
    unlink(path);
    free(buf);
    summarize(res, lat, R, t - t0);
}

/* Reads a whole file (read() in 1 MiB pieces) into a buffer allocated and
 * touched before the clock starts (the machine's floor: no page faults); with
 * md5, also checks every log entry's MD5 as the library's Open does.
 * Returns ns. */
static long long raw_read(const char *path, int md5, size_t *pEntries)
{
    long long t0;
    int fd = open(path, O_RDONLY);
    struct stat st;
    uint8_t *buf;
    size_t n = 0, i, entries = 0;
    const mbedtls_md_info_t *mi = mbedtls_md_info_from_type(MBEDTLS_MD_MD5);
    if (fd < 0 || fstat(fd, &st) != 0) { perror(path); exit(2); }
    buf = (uint8_t *)xcalloc((size_t)st.st_size + 1, 1);
    memset(buf, 1, (size_t)st.st_size + 1);
    t0 = now_ns();
    for (;;) {
        ssize_t k = read(fd, buf + n, (size_t)st.st_size + 1 - n > (1u << 20) ? (1u << 20) : (size_t)st.st_size + 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
    }
    if (md5)
        for (i = 8; i + 5 <= n;) {
            uint32_t len = ((uint32_t)buf[i] << 24) | ((uint32_t)buf[i + 1] << 16) | ((uint32_t)buf[i + 2] << 8) | buf[i + 3];
            uint8_t sum[16];
            if (len == 0 || (size_t)len + 20 > n - i) break;
            mbedtls_md(mi, buf + i + 4, len, sum);
            if (memcmp(sum, buf + i + 4 + len, 16) != 0) { fprintf(stderr, "bench_store: checksum mismatch\n"); exit(2); }
            entries++;
            i += 4 + (size_t)len + 16;
        }
    t0 = now_ns() - t0;
    close(fd);
    free(buf);
    if (pEntries) *pEntries = entries;
    return t0;
}

/* The database file of the graph: the only *.p2pg file named db.* here. */
static int find_db_file(const char *dbname, char *out, size_t cap)
{
    DIR *d = opendir(DB_DIR_N);
    struct dirent *e;
    size_t nl = strlen(dbname);
    int found = 0;
    if (!d) return 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (!strncmp(e->d_name, dbname, nl) && e->d_name[nl] == '.' && l > 5 && !strcmp(e->d_name + l - 5, ".p2pg")) {
            snprintf(out, cap, "%s/%s", DB_DIR_N, e->d_name);
            found = 1;
            break;
        }
    }
    closedir(d);
    return found;
}

/* ------------------------------------------------------------------------- */
/* the library                                                               */
/* ------------------------------------------------------------------------- */

static HGRAPH create_graph(const wchar_t *db)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h;
    HRESULT hr;
    PeerGraphDelete(GRAPH_ID, PEER_A, db);
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.dwScope = PEER_GRAPH_SCOPE_LOOPBACK;
    p.pwzGraphId = (PWSTR)GRAPH_ID;
    p.pwzCreatorId = (PWSTR)PEER_A;
    p.cPresenceMax = (ULONG)-1;
    if (FAILED(hr = PeerGraphCreate(&p, db, NULL, &h))) die_hr("PeerGraphCreate", hr);
    return h;
}

/* R AddRecords into h; withService: PeerGraphService after every add, and
 * one at least SYNC_MS after the last so that the final fsync is counted. */
static void lib_adds(HGRAPH h, int R, int withService, add_res *res, long long *lat)
{
    uint8_t data[PAYLOAD];
    PEER_RECORD r;
    GUID id;
    ULONGLONG exp = peer_now(h) + 24ULL * 3600ULL * 10000000ULL;
    long long t0, t;
    int i, k;
    HRESULT hr;
    memset(res, 0, sizeof *res);
    init_record(&r, &REC_TYPE, exp, data, PAYLOAD);
    if (withService) PeerGraphService(NULL, 0, now_ms());
    t0 = now_ns();
    for (i = 0; i < R; i++) {
        long long a = now_ns();
        for (k = 0; k < PAYLOAD; k++) data[k] = (uint8_t)((unsigned)i * 2654435761u >> ((k % 4) * 8)) ^ (uint8_t)k;
        if (FAILED(hr = PeerGraphAddRecord(h, &r, &id))) die_hr("PeerGraphAddRecord", hr);
        if (withService && FAILED(hr = PeerGraphService(NULL, 0, now_ms()))) die_hr("PeerGraphService", hr);
        lat[i] = now_ns() - a;
    }
    if (withService) { /* the last change's fsync is part of the work: the service due SYNC_MS after it */
        ULONGLONG due = now_ms() + SYNC_MS + 1;
        while (now_ms() < due) {
            struct timespec ts;
            ts.tv_sec = 0;
            ts.tv_nsec = 1000000L;
            nanosleep(&ts, NULL);
        }
        PeerGraphService(NULL, 0, now_ms());
    }
    t = now_ns();
    summarize(res, lat, R, t - t0);
}

static void print_add(const char *what, const add_res *r, const char *extra)
{
    printf("  %-44s %10.0f %8.2f %8.1f %8.1f %8.1f %9.1f  %s\n", what, r->rate, r->secs, r->p50, r->p99, r->p999, r->max,
           extra);
}

int main(int argc, char **argv)
{
    int R = 100000, OPENS = 5, i;
    PEER_VERSION_DATA vd;
    HGRAPH h, h2;
    HRESULT hr;
    long long *lat, tstart = now_ns();
    add_res libSvc, libNo, rawSync, rawNo;
    double *openMs, *closeMs, recBytes, entryBytes;
    long long readNs[16], md5Ns[16];
    PEER_DATABASE_INFO di;
    char path[512];
    struct stat st;
    size_t entries = 0;
    ULONG cRecordsOpen = 0;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) R = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) OPENS = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [-n R] [-o OPENS]   (defaults 100000 5)\n", argv[0]);
            return 2;
        }
    }
    if (R < 1) R = 1;
    if (OPENS < 1) OPENS = 1;
    if (OPENS > 16) OPENS = 16;
    lat = (long long *)xcalloc((size_t)R, sizeof *lat);
    openMs = (double *)xcalloc((size_t)OPENS, sizeof *openMs);
    closeMs = (double *)xcalloc((size_t)OPENS, sizeof *closeMs);

    printf("bench_store: the record store on disk (add rate with the durability rule, open, size), one thread\n");
    print_command_machine(argc, argv);
    printf("records: %d x %d-byte payload; graph ID \"%ls\", creator \"%ls\"; database dir %s\n", R, PAYLOAD, GRAPH_ID,
           PEER_A, DB_DIR_N);

    if (setup_db_dir(DB_DIR_N) != 0) return 2;
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) die_hr("PeerGraphStartup", hr);

    /* record size as the library stores it: from a first record */
    h = create_graph(L"st");
    {
        add_res tmp;
        long long l1[1];
        PEER_DATABASE_INFO d0 = db_info(h), d1;
        lib_adds(h, 1, 0, &tmp, l1);
        d1 = db_info(h);
        recBytes = (double)(d1.cbRecords - d0.cbRecords);
        entryBytes = (double)(d1.cbFile - d0.cbFile);
    }
    PeerGraphClose(h);
    PeerGraphDelete(GRAPH_ID, PEER_A, L"st");

    /* --- add rate: the machine, then the library, then the machine again --- */
    raw_writes(R, (size_t)entryBytes, 1, &rawSync, lat);
    raw_writes(R, (size_t)entryBytes, 0, &rawNo, lat);
    h = create_graph(L"st");
    lib_adds(h, R, 1, &libSvc, lat);
    h2 = create_graph(L"st2");
    lib_adds(h2, R, 0, &libNo, lat);
    PeerGraphClose(h2);
    PeerGraphDelete(GRAPH_ID, PEER_A, L"st2");
    {
        add_res again;
        raw_writes(R, (size_t)entryBytes, 1, &again, lat); /* the disk may have changed pace */
        if (again.rate > rawSync.rate) rawSync = again;
    }

    /* --- size --- */
    di = db_info(h);
    if (!find_db_file("st", path, sizeof path) || stat(path, &st) != 0) {
        fprintf(stderr, "bench_store: database file not found\n");
        return 1;
    }

    /* --- open: Close, then Open, timed; the machine reading the file --- */
    for (i = 0; i < OPENS; i++) {
        long long t = now_ns();
        if (FAILED(hr = PeerGraphClose(h))) die_hr("PeerGraphClose", hr);
        closeMs[i] = (double)(now_ns() - t) / 1e6;
        readNs[i] = raw_read(path, 0, NULL);
        md5Ns[i] = raw_read(path, 1, &entries);
        t = now_ns();
        hr = PeerGraphOpen(GRAPH_ID, PEER_A, L"st", NULL, 0, NULL, &h);
        openMs[i] = (double)(now_ns() - t) / 1e6;
        if (hr != S_OK) die_hr("PeerGraphOpen", hr);
        cRecordsOpen = db_info(h).cRecords;
    }
    PeerGraphClose(h);
    PeerGraphDelete(GRAPH_ID, PEER_A, L"st");
    PeerGraphShutdown();

    /* ------------------------------- report ------------------------------- */
    printf("\nAdd rate: %d records, each one PeerGraphAddRecord (+ one PeerGraphService(NULL, 0, now) in the\n"
           "durable row).  Machine: one write() of the same %.0f bytes per record (one log entry = 21 + %.0f record\n"
           "bytes) to a file in the same directory, one fsync() at least %d ms after the previous.  Per call in us.\n\n",
           R, entryBytes, recBytes, SYNC_MS);
    printf("  %-44s %10s %8s %8s %8s %8s %9s\n", "", "records/s", "s", "p50", "p99", "p99.9", "max");
    {
        char ex[96];
        snprintf(ex, sizeof ex, "(%ld fsyncs)", rawSync.syncs);
        print_add("machine: write() + fsync() every 100 ms", &rawSync, ex);
        print_add("machine: write() only", &rawNo, "");
        print_add("p2pgraph: AddRecord + Service (durable)", &libSvc, "");
        print_add("p2pgraph: AddRecord only (no fsync)", &libNo, "");
        printf("  %-44s %9.2fx %8s %7.1fx %7.1fx %7.1fx %8.1fx\n", "ratio durable p2pgraph / machine (rate)",
               rawSync.rate / libSvc.rate, "", libSvc.p50 / rawSync.p50, libSvc.p99 / rawSync.p99,
               libSvc.p999 / rawSync.p999, libSvc.max / rawSync.max);
        printf("  (ratio of records/s is machine / p2pgraph: how many times slower; latency ratios p2pgraph / machine)\n");
    }

    printf("\nOpen of the %lu-record database (file %.1f MB, page cache warm); %d times, ms:\n",
           (unsigned long)di.cRecords, (double)st.st_size / 1e6, OPENS);
    {
        double o[16], c[16], rd[16], md[16];
        for (i = 0; i < OPENS; i++) {
            o[i] = openMs[i];
            c[i] = closeMs[i];
            rd[i] = (double)readNs[i] / 1e6;
            md[i] = (double)md5Ns[i] / 1e6;
        }
        sort_d(o, OPENS);
        sort_d(c, OPENS);
        sort_d(rd, OPENS);
        sort_d(md, OPENS);
        printf("  %-44s %9s %9s %9s\n", "", "min", "median", "max");
        printf("  %-44s %9.1f %9.1f %9.1f\n", "machine: read() the file (buffer pre-faulted)", rd[0], rd[OPENS / 2], rd[OPENS - 1]);
        printf("  %-44s %9.1f %9.1f %9.1f\n", "machine: read() + MD5 of every entry", md[0], md[OPENS / 2], md[OPENS - 1]);
        printf("  %-44s %9.1f %9.1f %9.1f   (%lu records loaded)\n", "p2pgraph: PeerGraphOpen", o[0], o[OPENS / 2],
               o[OPENS - 1], (unsigned long)cRecordsOpen);
        printf("  %-44s %9.1f %9.1f %9.1f\n", "p2pgraph: PeerGraphClose", c[0], c[OPENS / 2], c[OPENS - 1]);
        printf("  ratio Open / (read + MD5), medians: %.1fx;  Open / read: %.1fx;  %.2f us per record\n",
               o[OPENS / 2] / md[OPENS / 2], o[OPENS / 2] / rd[OPENS / 2], o[OPENS / 2] * 1e3 / di.cRecords);
        printf("  (the checksum pass covered %lu entries)\n", (unsigned long)entries);
    }

    printf("\nBytes on disk (PeerGraphGetDatabaseInfo after the durable adds):\n");
    printf("  cRecords %lu (%d application records + the Graph Info record), cbRecords %llu, cbFile %llu"
           " (stat: %lld)\n", (unsigned long)di.cRecords, R, (unsigned long long)di.cbRecords,
           (unsigned long long)di.cbFile, (long long)st.st_size);
    printf("  cbFile / cRecords = %.1f bytes per record = %.2fx the %d-byte payload, %.2fx payload + 16-byte ID;\n"
           "  of which record wire form %.1f (90 fixed + UTF-16 creator %d + graph ID %d + payload) and log entry %d\n",
           (double)di.cbFile / di.cRecords, (double)di.cbFile / di.cRecords / PAYLOAD, PAYLOAD,
           (double)di.cbFile / di.cRecords / (PAYLOAD + 16), (double)di.cbRecords / di.cRecords,
           (int)(2 * (wcslen(PEER_A) + 1)), (int)(2 * (wcslen(GRAPH_ID) + 1)), LOG_ENTRY_OVERHEAD);
    printf("\ntotal run time %.1f s\n", (double)(now_ns() - tstart) / 1e9);
    free(lat); free(openMs); free(closeMs);
    return 0;
}
#endif
