/*
 * test_transfer.c - application data over real loopback sockets between TWO
 * PROCESSES: PeerGraphSendData on direct connections (PeerGraphOpenDirect-
 * Connection) and on a neighbor connection (PeerGraphConnect), with flow
 * control (PEER_E_SEND_QUEUE_FULL / PEER_GRAPH_EVENT_SEND_READY), records
 * flooded during a transfer, and PeerGraphCloseDirectConnection with data
 * still queued.
 *
 * The second process is this program itself, re-executed with
 *     --child <test> <port> <bytes it sends> <bytes it receives>
 * (posix_spawnp on POSIX, _spawnv on Windows; no fork, so it runs under wine
 * too).  The parent creates the graph and listens; the child opens the graph
 * ID in its own database directory (build/tmp-db/xfer-child), connects to the
 * parent, runs its half of the test and exits 0 only if everything it checked
 * held (else it prints why on stderr and exits 1).  The parent keeps servicing
 * while it waits for the child, and checks its exit status.
 *
 * Streams: message i of a stream has a size and content derived from (seed,
 * i) only, so the receiver knows what must arrive and reports the first
 * message that differs.  Sizes: 1 B .. 256 KB at random, every 37th message
 * empty, the frame boundaries around 16379/16384/32768 bytes, one message just
 * over the default 1 MiB queue limit and one large one (PEER_MAX_DATA_SIZE in
 * a 100 MB run, else a quarter of the stream).  The sender also keeps a
 * running FNV-1a 64 over (length as 8 LE bytes, bytes) of every message and
 * sends it, with the message and byte counts, as a final message of another
 * type; the receiver compares it with its own, then answers with an ACK
 * message carrying its verdict.  Each SendData is checked against the queue
 * bound (GetDataQueue <= max(limit, one message)); after QUEUE_FULL the sender
 * waits for SEND_READY (and only for it) before it retries.
 *
 * The tests:
 *  1. one-way: 100 MB parent -> child on a direct connection the child opened;
 *     the parent closes it after the ACK, the child must see DISCONNECTED.
 *  2. both: 100 MB each way at once on one direct connection, ACKs both ways,
 *     then the child (the opener) closes.
 *  3. neighbor: 20 MB parent -> child on a neighbor link.  The child says when
 *     it is SYNCHRONIZED (a 0-byte message); the parent then adds 5 records at
 *     5, 15, .. 45% of the data and sends the final message only after a
 *     quarter of the data more has followed the last record, so records that
 *     waited for the data queue to drain would arrive after it: the child
 *     requires every record (RECORD_CHANGED + GetRecord) before the final
 *     message.  The parent then closes its graph; the child sees it leave.
 *  4. close-parent: the parent queues 16 MiB (queue limit raised to 64 MiB)
 *     without servicing and closes at once; the child, which stopped reading
 *     at CONNECTED until the parent's signal file appears, must get every byte
 *     and then DISCONNECTED (S_OK).  Also: the local DISCONNECTED is queued at
 *     once, SendData and a second close then give CONNECTION_NOT_FOUND.
 *  5. close-child: the same with the roles swapped (the opener closes).
 * The close tests use 16 MiB at any scale: a paused loopback receiver's kernel
 * still takes a few MB, and at least 4 MiB must still be queued at the close.
 *
 * Environment: P2PG_TEST_SCALE, a factor in (0, 20] for tests 1-3 (default 1;
 * 0.1 under valgrind, detected by "vgpreload" in LD_PRELOAD; 0.25 under
 * wine); P2PG_TEST_TIMEOUT_MS, the wall-clock limit of every wait (default
 * 60 s, 180 s when scaled down); P2PG_TEST_VERBOSE=1 prints per-test figures.
 */
#include "testutil.h"
#include <errno.h>
#include <time.h>
#ifdef _WIN32
#include <process.h>
#else
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
extern char **environ;
#endif

/* ------------------------------------------------------------------------- */
/* Parameters                                                                 */
/* ------------------------------------------------------------------------- */
#define MIB (1024ul * 1024ul)
#define T_ONE_WAY   1 /* the tests, as numbered in the comment above */
#define T_BOTH      2
#define T_NEIGHBOR  3
#define T_CLOSE_P   4
#define T_CLOSE_C   5
#define NREC        5 /* records added during T_NEIGHBOR */
#define CLOSE_QUEUE_LIMIT (64ul * MIB)
#define BOTH_CHILD_LIMIT (256ul * 1024ul) /* T_BOTH: the child's graph-wide default queue limit */

static const char *const test_names[] = {"", "one-way", "both", "neighbor", "close-parent", "close-child"};
static const wchar_t *const graph_ids[] = {L"", L"xfer-one-way", L"xfer-both", L"xfer-neighbor", L"xfer-close-p",
                                           L"xfer-close-c"};
#define CHILD_DBDIR_N TU_DBDIR_N "/xfer-child"
#define CHILD_DBDIR_W TU_DBDIR_W L"/xfer-child"

static const GUID TYPE_DATA = {0x7a1e0001, 0x5e4d, 0x4c3b, {0x91, 0x2a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}};
static const GUID TYPE_FINAL = {0x7a1e0002, 0x5e4d, 0x4c3b, {0x91, 0x2a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}};
static const GUID TYPE_ACK = {0x7a1e0003, 0x5e4d, 0x4c3b, {0x91, 0x2a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}};
static const GUID TYPE_REC = {0x7a1e0004, 0x5e4d, 0x4c3b, {0x91, 0x2a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}};
static const GUID TYPE_SYNCED = {0x7a1e0005, 0x5e4d, 0x4c3b, {0x91, 0x2a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}};

static uint64_t seed_parent(int test) { return 0x5EED000000000001ull ^ ((uint64_t)test << 40); }
static uint64_t seed_child(int test) { return 0xC41D000000000002ull ^ ((uint64_t)test << 40); }

static double g_scale = 1.0;
static ULONGLONG g_timeout_ms = 60000;
static int g_verbose;

static unsigned long scaled(unsigned long n)
{
    double v = (double)n * g_scale;
    return v < 65536.0 ? 65536ul : (unsigned long)v;
}

/* T_CLOSE_*: 16 MiB whatever the scale: a paused loopback receiver's kernel
 * still takes a few MB, and most of it must still be queued at the close. */
static unsigned long close_size(void) { return 16 * MIB; }

static int guid_eq(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof *a) == 0; }

static void sleep_ms(unsigned ms)
{
#ifdef _WIN32
    Sleep(ms);
#else
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
#endif
}

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

static void signal_path(char *out, size_t n, int test)
{
    snprintf(out, n, "%s/signal-%d", CHILD_DBDIR_N, test);
}

/* ------------------------------------------------------------------------- */
/* Deterministic streams and the checksum                                     */
/* ------------------------------------------------------------------------- */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Size of message idx of the stream (seed, total). */
static ULONG msg_size(uint64_t seed, uint64_t idx, unsigned long total)
{
    static const ULONG edges[] = {0,     1,     2,     16378, 16379, 16380, 16383, 16384,
                                  16385, 32757, 32758, 32767, 32768, 32769, 65536, 262144};
    uint64_t s = seed ^ (idx * 0xD1B54A32D192ED03ull), r;
    if (idx >= 1 && idx <= sizeof edges / sizeof edges[0]) return edges[idx - 1];
    if (idx == 20) return PEER_DEFAULT_DATA_QUEUE + 1; /* more than the default queue limit */
    if (idx == 40) return total >= 64ul * MIB ? PEER_MAX_DATA_SIZE : (ULONG)(total / 4);
    if (idx % 37 == 0) return 0;
    r = splitmix(&s);
    switch (r % 10) {
    case 0: case 1: case 2: case 3: return (ULONG)(1 + (r >> 8) % 256);
    case 4: case 5: case 6: return (ULONG)(1 + (r >> 8) % 40000);
    default: return (ULONG)(16385 + (r >> 8) % (262144 - 16385 + 1));
    }
}

static void msg_fill(unsigned char *p, ULONG n, uint64_t seed, uint64_t idx)
{
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + idx, v;
    ULONG i = 0;
    for (; i + 8 <= n; i += 8) {
        v = splitmix(&s);
        memcpy(p + i, &v, 8);
    }
    if (i < n) {
        v = splitmix(&s);
        memcpy(p + i, &v, n - i);
    }
}

static void put64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

#define FNV_OFFSET 0xCBF29CE484222325ull
static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
    while (n--) {
        h ^= *p++;
        h *= 0x100000001B3ull;
    }
    return h;
}
/* The running checksum over message boundaries and bytes. */
static uint64_t hash_msg(uint64_t h, const unsigned char *p, ULONG n)
{
    unsigned char len[8];
    put64(len, n);
    return fnv(fnv(h, len, 8), p, n);
}

/* ------------------------------------------------------------------------- */
/* One endpoint of a transfer (the same code runs in both processes)          */
/* ------------------------------------------------------------------------- */
typedef struct {
    const char *who;
    int test;
    HGRAPH g;
    HPEEREVENT ev;
    int neighbor;             /* the link is a neighbor connection (else direct) */
    ULONGLONG conn;           /* 0 until known (accepting side) */
    int connected, closed, gone;
    PEER_CONNECTION_STATUS closeStatus;
    HRESULT closeHr;
    int hold;                 /* do not send yet (set by ep_init; the test releases it) */
    const char *pauseFile;    /* when connected: stop servicing until this file exists */
    /* sending */
    int txOn, txFinalSent, txHave, blocked, wantAck;
    uint64_t txSeed, txMsgs, txBytes, txHash;
    unsigned long txTotal;
    ULONG txSize;             /* size of the generated message not yet accepted */
    ULONG blockedSize, blockedQueued, blockedLimit;
    unsigned long queueFull, sendReady, spuriousReady;
    ULONG maxQueued;
    /* receiving */
    int rxOn, rxFinal, ackDue, ackSent, ackReceived;
    uint64_t rxSeed, rxMsgs, rxBytes, rxHash;
    unsigned long rxTotal;
    /* records (T_NEIGHBOR) */
    int recAdd, recAdded;     /* sender: how many to add, added so far */
    int peerSynced;           /* sender: the receiver said it is synchronized */
    uint64_t peerSyncedAt, recLastAt; /* txBytes then, and when the last record was added */
    int notifySynced, syncedDue, syncedSent; /* receiver: tell the sender once synchronized */
    int recWant, recSeen;     /* receiver */
    int recSeenMask;
    GUID recIds[NREC];
    uint64_t recLag[NREC];    /* bytes received after the sender added it */
    GUID recPending[4 * NREC]; /* RECORD_CHANGED seen while GetRecord said GRAPH_NOT_READY */
    int recPendingN;
    unsigned char *buf, *cmp;
    ULONGLONG startMs;
    char err[1024];
} ep_t;

static void ep_fail(ep_t *e, const char *fmt, ...)
{
    va_list ap;
    size_t n;
    if (e->err[0]) return; /* keep the first */
    snprintf(e->err, sizeof e->err, "[%s, test %s] ", e->who, test_names[e->test]);
    n = strlen(e->err);
    va_start(ap, fmt);
    vsnprintf(e->err + n, sizeof e->err - n, fmt, ap);
    va_end(ap);
}

static void file_create(const char *path, ep_t *e)
{
    FILE *f = fopen(path, "wb");
    if (!f || fclose(f) != 0) ep_fail(e, "cannot create %s", path);
}

static void ep_init(ep_t *e, const char *who, int test)
{
    memset(e, 0, sizeof *e);
    e->who = who;
    e->test = test;
    e->buf = (unsigned char *)malloc(PEER_MAX_DATA_SIZE);
    e->cmp = (unsigned char *)malloc(PEER_MAX_DATA_SIZE);
    e->txHash = e->rxHash = FNV_OFFSET;
    e->startMs = PeerGraphGetTickCount();
    e->hold = 1;
    if (!e->buf || !e->cmp) ep_fail(e, "out of memory");
}

static void ep_free(ep_t *e)
{
    free(e->buf);
    free(e->cmp);
    e->buf = e->cmp = NULL;
}

static HPEEREVENT ep_register(ep_t *e)
{
    PEER_GRAPH_EVENT_REGISTRATION r[6];
    HPEEREVENT h = NULL;
    HRESULT hr;
    int i;
    const PEER_GRAPH_EVENT_TYPE t[6] = {PEER_GRAPH_EVENT_STATUS_CHANGED,      PEER_GRAPH_EVENT_RECORD_CHANGED,
                                        PEER_GRAPH_EVENT_DIRECT_CONNECTION,   PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION,
                                        PEER_GRAPH_EVENT_INCOMING_DATA,       PEER_GRAPH_EVENT_SEND_READY};
    for (i = 0; i < 6; i++) { r[i].eventType = t[i]; r[i].pType = NULL; }
    hr = PeerGraphRegisterEvent(e->g, NULL, 6, r, &h);
    if (hr != S_OK) ep_fail(e, "PeerGraphRegisterEvent: 0x%08lx", (unsigned long)hr);
    return h;
}

/* A one-line state summary for timeout messages. */
static void ep_state(ep_t *e, char *out, size_t n)
{
    ULONG q = 0, lim = 0;
    HRESULT hq = e->conn && e->g ? PeerGraphGetDataQueue(e->g, e->conn, &q, &lim) : S_FALSE;
    snprintf(out, n,
             "connected %d closed %d gone %d conn %lu; tx %lu msgs %lu/%lu bytes final %d blocked %d (size %lu, "
             "queue %lu/%lu when refused) queueFull %lu sendReady %lu; GetDataQueue 0x%08lx queued %lu "
             "limit %lu; rx %lu msgs %lu bytes final %d; ack sent %d received %d; records added %d seen %d "
             "pending %d; peer synced %d, synced sent %d",
             e->connected, e->closed, e->gone, (unsigned long)e->conn, (unsigned long)e->txMsgs,
             (unsigned long)e->txBytes, e->txTotal, e->txFinalSent, e->blocked, (unsigned long)e->blockedSize,
             (unsigned long)e->blockedQueued, (unsigned long)e->blockedLimit, e->queueFull, e->sendReady,
             (unsigned long)hq, (unsigned long)q, (unsigned long)lim, (unsigned long)e->rxMsgs,
             (unsigned long)e->rxBytes, e->rxFinal, e->ackSent, e->ackReceived, e->recAdded, e->recSeen,
             e->recPendingN, e->peerSynced, e->syncedSent);
}

static void ep_add_record(ep_t *e)
{
    PEER_RECORD r;
    FILETIME u, pt;
    GUID id;
    unsigned char d[16];
    HRESULT hr;
    u.dwLowDateTime = 0;
    u.dwHighDateTime = 0x7FFFFFFF;
    hr = PeerGraphUniversalTimeToPeerTime(e->g, &u, &pt);
    if (hr != S_OK) { ep_fail(e, "PeerGraphUniversalTimeToPeerTime: 0x%08lx", (unsigned long)hr); return; }
    memcpy(d, "XREC", 4);
    d[4] = (unsigned char)e->recAdded;
    d[5] = d[6] = d[7] = 0;
    put64(d + 8, e->txBytes);
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = TYPE_REC;
    r.ftExpiration = pt;
    r.data.cbData = sizeof d;
    r.data.pbData = d;
    hr = PeerGraphAddRecord(e->g, &r, &id);
    if (hr != S_OK) { ep_fail(e, "PeerGraphAddRecord #%d: 0x%08lx", e->recAdded, (unsigned long)hr); return; }
    e->recAdded++;
    e->recLastAt = e->txBytes;
}

/* Reads a record announced by RECORD_CHANGED ADDED; 0 if the graph is not
 * synchronized yet (retried later). */
static int ep_read_record(ep_t *e, const GUID *id)
{
    PPEER_RECORD r = NULL;
    HRESULT hr;
    unsigned k;
    hr = PeerGraphGetRecord(e->g, id, &r);
    if (hr == PEER_E_GRAPH_NOT_READY) return 0;
    if (hr != S_OK) { ep_fail(e, "PeerGraphGetRecord after RECORD_CHANGED ADDED: 0x%08lx", (unsigned long)hr); return 1; }
    if (r->data.cbData != 16 || memcmp(r->data.pbData, "XREC", 4) != 0 || r->data.pbData[4] >= NREC ||
        !guid_eq(&r->type, &TYPE_REC) || wcscmp(r->pwzCreatorId, L"parent") != 0) {
        ep_fail(e, "test record with unexpected content (%lu bytes)", (unsigned long)r->data.cbData);
        PeerGraphFreeData(r);
        return 1;
    }
    k = r->data.pbData[4];
    if (e->recSeenMask & (1 << k)) {
        ep_fail(e, "record #%u reported ADDED twice", k);
    } else {
        uint64_t at = get64(r->data.pbData + 8);
        e->recSeenMask |= 1 << k;
        e->recIds[k] = *id;
        e->recLag[k] = e->rxBytes > at ? e->rxBytes - at : 0;
        e->recSeen++;
    }
    PeerGraphFreeData(r);
    return 1;
}

static void ep_on_record(ep_t *e, const PEER_EVENT_RECORD_CHANGE_DATA *rc)
{
    if (!guid_eq(&rc->recordType, &TYPE_REC)) return;
    if (rc->changeType != PEER_RECORD_ADDED) {
        ep_fail(e, "RECORD_CHANGED type %d for a test record (expected ADDED only)", (int)rc->changeType);
        return;
    }
    if (ep_read_record(e, &rc->recordId)) return;
    if (e->recPendingN == 4 * NREC) { ep_fail(e, "too many RECORD_CHANGED events"); return; }
    e->recPending[e->recPendingN++] = rc->recordId;
}

static void ep_retry_records(ep_t *e)
{
    int i = 0;
    while (i < e->recPendingN && !e->err[0]) {
        if (!ep_read_record(e, &e->recPending[i])) { i++; continue; }
        e->recPending[i] = e->recPending[--e->recPendingN];
    }
}

static void ep_on_final(ep_t *e, const PEER_DATA *d)
{
    uint64_t m, b, h;
    if (d->cbData != 24) { ep_fail(e, "final message of %lu bytes (expected 24)", (unsigned long)d->cbData); return; }
    m = get64(d->pbData);
    b = get64(d->pbData + 8);
    h = get64(d->pbData + 16);
    if (m != e->rxMsgs || b != e->rxBytes || h != e->rxHash) {
        ep_fail(e, "checksum mismatch: sender says %lu msgs %lu bytes hash %016lx%08lx, received %lu msgs %lu bytes "
                   "hash %016lx%08lx",
                (unsigned long)m, (unsigned long)b, (unsigned long)(h >> 32), (unsigned long)(h & 0xFFFFFFFFu),
                (unsigned long)e->rxMsgs, (unsigned long)e->rxBytes, (unsigned long)(e->rxHash >> 32),
                (unsigned long)(e->rxHash & 0xFFFFFFFFu));
        return;
    }
    if (e->rxBytes < e->rxTotal) {
        ep_fail(e, "final message after only %lu of %lu bytes", (unsigned long)e->rxBytes, e->rxTotal);
        return;
    }
    if (e->recWant && e->recSeen != e->recWant) {
        ep_fail(e, "only %d of %d records (mask 0x%x) arrived before the end of the data (%lu bytes; the last was "
                   "added at <= 45%% of it): records starved by data",
                e->recSeen, e->recWant, (unsigned)e->recSeenMask, (unsigned long)e->rxBytes);
        return;
    }
    e->rxFinal = 1;
    if (e->wantAck) e->ackDue = 1;
}

static void ep_on_ack(ep_t *e, const PEER_DATA *d)
{
    if (d->cbData != 25) { ep_fail(e, "ACK of %lu bytes (expected 25)", (unsigned long)d->cbData); return; }
    if (!e->txOn || !e->txFinalSent) { ep_fail(e, "ACK before our final message was sent"); return; }
    if (d->pbData[0] != 1 || get64(d->pbData + 1) != e->txMsgs || get64(d->pbData + 9) != e->txBytes ||
        get64(d->pbData + 17) != e->txHash) {
        ep_fail(e, "peer's ACK says verdict %d, %lu msgs %lu bytes; we sent %lu msgs %lu bytes", d->pbData[0],
                (unsigned long)get64(d->pbData + 1), (unsigned long)get64(d->pbData + 9), (unsigned long)e->txMsgs,
                (unsigned long)e->txBytes);
        return;
    }
    if (e->ackReceived) { ep_fail(e, "second ACK"); return; }
    e->ackReceived = 1;
}

static void ep_on_data(ep_t *e, const PEER_EVENT_INCOMING_DATA *in)
{
    if (!e->connected || in->ullConnectionId != e->conn) {
        ep_fail(e, "INCOMING_DATA on connection %lu (ours: %lu, connected %d)", (unsigned long)in->ullConnectionId,
                (unsigned long)e->conn, e->connected);
        return;
    }
    if (e->closed) { ep_fail(e, "INCOMING_DATA after DISCONNECTED"); return; }
    if (in->data.cbData > 0 && !in->data.pbData) { ep_fail(e, "INCOMING_DATA with cbData > 0 and pbData NULL"); return; }
    if (guid_eq(&in->type, &TYPE_DATA)) {
        ULONG want;
        if (!e->rxOn) { ep_fail(e, "data message but this side receives none"); return; }
        if (e->rxFinal) { ep_fail(e, "data message after the final message"); return; }
        want = msg_size(e->rxSeed, e->rxMsgs, e->rxTotal);
        if (in->data.cbData != want) {
            ep_fail(e, "message #%lu has %lu bytes, expected %lu (after %lu bytes)", (unsigned long)e->rxMsgs,
                    (unsigned long)in->data.cbData, (unsigned long)want, (unsigned long)e->rxBytes);
            return;
        }
        msg_fill(e->cmp, want, e->rxSeed, e->rxMsgs);
        if (want && memcmp(e->cmp, in->data.pbData, want) != 0) {
            ULONG i = 0;
            while (e->cmp[i] == in->data.pbData[i]) i++;
            ep_fail(e, "message #%lu (%lu bytes) differs from byte %lu on (stream offset %lu)",
                    (unsigned long)e->rxMsgs, (unsigned long)want, (unsigned long)i,
                    (unsigned long)(e->rxBytes + i));
            return;
        }
        e->rxHash = hash_msg(e->rxHash, in->data.pbData, want);
        e->rxMsgs++;
        e->rxBytes += want;
    } else if (guid_eq(&in->type, &TYPE_FINAL)) {
        if (!e->rxOn || e->rxFinal) { ep_fail(e, "unexpected final message"); return; }
        ep_on_final(e, &in->data);
    } else if (guid_eq(&in->type, &TYPE_ACK)) {
        ep_on_ack(e, &in->data);
    } else if (guid_eq(&in->type, &TYPE_SYNCED)) {
        if (!e->recAdd || e->peerSynced || in->data.cbData) { ep_fail(e, "unexpected SYNCED message"); return; }
        e->peerSynced = 1;
        e->peerSyncedAt = e->txBytes;
    } else {
        ep_fail(e, "INCOMING_DATA of an unknown type %08lx", (unsigned long)in->type.Data1);
    }
}

static void ep_on_conn(ep_t *e, const PEER_EVENT_CONNECTION_CHANGE_DATA *c, int isNeighbor)
{
    if (isNeighbor != e->neighbor) {
        ep_fail(e, "%s connection event (status %d) on a test of %s connections", isNeighbor ? "neighbor" : "direct",
                (int)c->status, e->neighbor ? "neighbor" : "direct");
        return;
    }
    if (c->status == PEER_CONNECTED) {
        if (e->connected) { ep_fail(e, "second CONNECTED event (id %lu)", (unsigned long)c->ullConnectionId); return; }
        if (e->conn && c->ullConnectionId != e->conn) {
            ep_fail(e, "CONNECTED for id %lu, ours is %lu", (unsigned long)c->ullConnectionId, (unsigned long)e->conn);
            return;
        }
        e->conn = c->ullConnectionId;
        e->connected = 1;
        return;
    }
    if (!e->connected) {
        ep_fail(e, "connection %s before CONNECTED: status %d, hr 0x%08lx",
                c->status == PEER_CONNECTION_FAILED ? "failed" : "closed", (int)c->status,
                (unsigned long)c->hrConnectionFailedReason);
        return;
    }
    if (c->ullConnectionId != e->conn) {
        ep_fail(e, "close event for id %lu, ours is %lu", (unsigned long)c->ullConnectionId, (unsigned long)e->conn);
        return;
    }
    if (e->closed) { ep_fail(e, "second close event"); return; }
    e->closed = 1;
    e->closeStatus = c->status;
    e->closeHr = c->hrConnectionFailedReason;
    if (e->rxOn && !e->rxFinal)
        ep_fail(e, "DISCONNECTED (status %d, hr 0x%08lx) after only %lu msgs %lu bytes, before the final message",
                (int)c->status, (unsigned long)c->hrConnectionFailedReason, (unsigned long)e->rxMsgs,
                (unsigned long)e->rxBytes);
    else if (e->wantAck && e->txOn && !e->ackReceived)
        ep_fail(e, "DISCONNECTED (status %d, hr 0x%08lx) before the peer's ACK", (int)c->status,
                (unsigned long)c->hrConnectionFailedReason);
}

static void ep_on_send_ready(ep_t *e, const PEER_EVENT_SEND_READY_DATA *s)
{
    if (s->ullConnectionId != e->conn) {
        ep_fail(e, "SEND_READY for connection %lu, ours is %lu", (unsigned long)s->ullConnectionId,
                (unsigned long)e->conn);
        return;
    }
    if (s->cbQueued > s->cbLimit / 2) {
        ep_fail(e, "SEND_READY with %lu bytes queued, more than half the limit %lu", (unsigned long)s->cbQueued,
                (unsigned long)s->cbLimit);
        return;
    }
    if (!e->blocked) { e->spuriousReady++; return; }
    if (s->cbLimit != e->blockedLimit) {
        ep_fail(e, "SEND_READY says limit %lu, GetDataQueue said %lu", (unsigned long)s->cbLimit,
                (unsigned long)e->blockedLimit);
        return;
    }
    e->blocked = 0;
    e->sendReady++;
}

/* Takes every queued event. */
static void ep_events(ep_t *e)
{
    PPEER_GRAPH_EVENT_DATA d;
    int justConnected = 0;
    if (!e->ev) return;
    if (e->recPendingN) ep_retry_records(e);
    while (!e->err[0]) {
        HRESULT hr = PeerGraphGetEventData(e->ev, &d);
        if (hr == PEER_S_NO_EVENT_DATA) break;
        if (hr != S_OK) { ep_fail(e, "PeerGraphGetEventData: 0x%08lx", (unsigned long)hr); break; }
        switch (d->eventType) {
        case PEER_GRAPH_EVENT_DIRECT_CONNECTION:
        case PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION:
            if (!e->connected && d->connectionChangeData.status == PEER_CONNECTED) justConnected = 1;
            ep_on_conn(e, &d->connectionChangeData, d->eventType == PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION);
            break;
        case PEER_GRAPH_EVENT_INCOMING_DATA:
            if (e->recPendingN) ep_retry_records(e);
            ep_on_data(e, &d->incomingData);
            break;
        case PEER_GRAPH_EVENT_SEND_READY: ep_on_send_ready(e, &d->sendReadyData); break;
        case PEER_GRAPH_EVENT_RECORD_CHANGED: ep_on_record(e, &d->recordChangeData); break;
        case PEER_GRAPH_EVENT_STATUS_CHANGED:
            if (e->notifySynced && (d->dwStatus & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
                e->syncedDue = 1;
                e->notifySynced = 0;
            }
            break;
        default: break;
        }
        PeerGraphFreeData(d);
        if (justConnected && e->pauseFile) {
            /* stop reading until the sender has queued everything and closed */
            ULONGLONG end = PeerGraphGetTickCount() + g_timeout_ms;
            while (!file_exists(e->pauseFile) && PeerGraphGetTickCount() < end) sleep_ms(5);
            if (!file_exists(e->pauseFile)) ep_fail(e, "timeout waiting for the sender's signal file %s", e->pauseFile);
            e->pauseFile = NULL;
            justConnected = 0;
        }
    }
}

/* Sends until the queue is full, there is nothing left to send, or (unless
 * `all`) about 4 MiB went in this call: a single-threaded host must get back
 * to PeerGraphRunOnce even when the network is faster than it is. */
static void ep_send_ex(ep_t *e, int all)
{
    unsigned char small[32];
    unsigned long budget = 4 * MIB, msgs = 0;
    while (e->connected && !e->closed && !e->blocked && !e->hold && !e->gone && !e->err[0] &&
           (all || (budget > 0 && msgs < 64))) {
        const GUID *type;
        ULONG cb, q = 0, lim = 0;
        unsigned char *p;
        int kind; /* 0 ack, 1 data, 2 final, 3 synced */
        HRESULT hr;
        if (e->ackDue && !e->ackSent) {
            kind = 0;
            type = &TYPE_ACK;
            small[0] = 1;
            put64(small + 1, e->rxMsgs);
            put64(small + 9, e->rxBytes);
            put64(small + 17, e->rxHash);
            p = small;
            cb = 25;
        } else if (e->syncedDue && !e->syncedSent) {
            kind = 3;
            type = &TYPE_SYNCED;
            p = small;
            cb = 0;
        } else if (e->txOn && !e->txFinalSent) {
            /* records: once the receiver is synchronized, at 5, 15, .. 45% of the data; the final message
             * only when a quarter of the data more has followed the last one (so records that waited for
             * the data queue to drain would arrive after it) */
            if (e->recAdded < e->recAdd && e->peerSynced &&
                e->txBytes >= (uint64_t)e->txTotal / 100 * (uint64_t)(5 + 10 * e->recAdded)) {
                ep_add_record(e);
                continue;
            }
            if (e->txBytes >= e->txTotal &&
                (!e->recAdd || (e->recAdded == e->recAdd && e->txBytes >= e->recLastAt + e->txTotal / 4))) {
                kind = 2;
                type = &TYPE_FINAL;
                put64(small, e->txMsgs);
                put64(small + 8, e->txBytes);
                put64(small + 16, e->txHash);
                p = small;
                cb = 24;
            } else {
                kind = 1;
                type = &TYPE_DATA;
                if (!e->txHave) {
                    e->txSize = msg_size(e->txSeed, e->txMsgs, e->txTotal);
                    msg_fill(e->buf, e->txSize, e->txSeed, e->txMsgs);
                    e->txHave = 1;
                }
                p = e->buf;
                cb = e->txSize;
            }
        } else {
            return;
        }
        hr = PeerGraphSendData(e->g, e->conn, type, cb, p);
        if (hr == S_OK) {
            HRESULT hq = PeerGraphGetDataQueue(e->g, e->conn, &q, &lim);
            msgs++;
            budget = cb >= budget ? 0 : budget - cb;
            if (hq == PEER_E_CONNECTION_NOT_FOUND) {
                /* the write inside SendData failed and closed the link: its DISCONNECTED event says why */
                e->gone = 1;
                return;
            }
            if (hq != S_OK) { ep_fail(e, "PeerGraphGetDataQueue after a send: 0x%08lx", (unsigned long)hq); return; }
            if (q > (lim > cb + PEER_DATA_MSG_OVERHEAD ? lim : cb + PEER_DATA_MSG_OVERHEAD)) {
                ep_fail(e, "%lu bytes queued after a %lu-byte send, over max(limit %lu, one message)",
                        (unsigned long)q, (unsigned long)cb, (unsigned long)lim);
                return;
            }
            if (q > e->maxQueued) e->maxQueued = q;
            if (kind == 0) e->ackSent = 1;
            else if (kind == 3) e->syncedSent = 1;
            else if (kind == 2) e->txFinalSent = 1;
            else {
                e->txHash = hash_msg(e->txHash, p, cb);
                e->txMsgs++;
                e->txBytes += cb;
                e->txHave = 0;
            }
        } else if (hr == PEER_E_SEND_QUEUE_FULL) {
            HRESULT hq = PeerGraphGetDataQueue(e->g, e->conn, &q, &lim);
            if (hq != S_OK) { ep_fail(e, "PeerGraphGetDataQueue after QUEUE_FULL: 0x%08lx", (unsigned long)hq); return; }
            if (q == 0) {
                ep_fail(e, "PEER_E_SEND_QUEUE_FULL for %lu bytes with an empty queue (limit %lu)", (unsigned long)cb,
                        (unsigned long)lim);
                return;
            }
            e->blocked = 1;
            e->blockedSize = cb;
            e->blockedQueued = q;
            e->blockedLimit = lim;
            e->queueFull++;
        } else {
            ep_fail(e, "PeerGraphSendData(%lu bytes, msg #%lu) returned 0x%08lx", (unsigned long)cb,
                    (unsigned long)e->txMsgs, (unsigned long)hr);
        }
    }
}
static void ep_send(ep_t *e) { ep_send_ex(e, 0); }

/* ------------------------------------------------------------------------- */
/* The child process                                                          */
/* ------------------------------------------------------------------------- */
#ifdef _WIN32
typedef HANDLE child_t;
#else
typedef pid_t child_t;
#endif
static char self_path[4096];
static child_t child_proc;
static int child_running, child_code;

static int child_poll(void)
{
#ifdef _WIN32
    DWORD code = 0;
    if (!child_running) return 1;
    if (WaitForSingleObject(child_proc, 0) != WAIT_OBJECT_0) return 0;
    GetExitCodeProcess(child_proc, &code);
    CloseHandle(child_proc);
    child_code = (int)code;
#else
    int st = 0;
    pid_t r;
    if (!child_running) return 1;
    r = waitpid(child_proc, &st, WNOHANG);
    if (r == 0) return 0;
    if (r != child_proc) child_code = 255;
    else child_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
#endif
    child_running = 0;
    return 1;
}

static void child_kill(void)
{
    if (!child_running) return;
#ifdef _WIN32
    TerminateProcess(child_proc, 99);
    WaitForSingleObject(child_proc, 10000);
    CloseHandle(child_proc);
#else
    {
        int st;
        kill(child_proc, SIGKILL);
        waitpid(child_proc, &st, 0);
    }
#endif
    child_running = 0;
    child_code = 99;
}

static void child_spawn(int test, unsigned port, unsigned long txBytes, unsigned long rxBytes)
{
    char a0[4100], a1[] = "--child", a2[16], a3[16], a4[24], a5[24];
    char *args[7];
    snprintf(a2, sizeof a2, "%d", test);
    snprintf(a3, sizeof a3, "%u", port);
    snprintf(a4, sizeof a4, "%lu", txBytes);
    snprintf(a5, sizeof a5, "%lu", rxBytes);
#ifdef _WIN32
    snprintf(a0, sizeof a0, "\"%s\"", self_path); /* _spawnv joins arguments with spaces */
#else
    snprintf(a0, sizeof a0, "%s", self_path);
#endif
    args[0] = a0; args[1] = a1; args[2] = a2; args[3] = a3; args[4] = a4; args[5] = a5; args[6] = NULL;
    fflush(stdout);
    fflush(stderr);
#ifdef _WIN32
    {
        intptr_t h = _spawnv(_P_NOWAIT, self_path, (const char *const *)args);
        assert_true(h != -1);
        child_proc = (HANDLE)h;
    }
#else
    assert_int_equal(posix_spawnp(&child_proc, self_path, NULL, NULL, args, environ), 0);
#endif
    child_running = 1;
    child_code = -1;
}

/* ------------------------------------------------------------------------- */
/* Loops                                                                      */
/* ------------------------------------------------------------------------- */
typedef int (*cond_fn)(ep_t *);

/* Services until cond(e) holds; 0 (and e->err set) on error, on timeout, or
 * (watchChild) when the child process exits with a non-zero status. */
static int ep_run(ep_t *e, cond_fn cond, const char *what, int watchChild)
{
    ULONGLONG end = PeerGraphGetTickCount() + g_timeout_ms;
    for (;;) {
        HRESULT hr;
        ep_events(e);
        ep_send(e);
        if (e->err[0]) return 0;
        if (cond(e)) return 1;
        if (watchChild && child_running && child_poll() && child_code != 0) {
            ep_fail(e, "the child process exited with status %d while we waited for %s", child_code, what);
            return 0;
        }
        if (PeerGraphGetTickCount() > end) {
            char st[700];
            ep_state(e, st, sizeof st);
            ep_fail(e, "timeout (%lu ms) waiting for %s: %s", (unsigned long)g_timeout_ms, what, st);
            return 0;
        }
        hr = PeerGraphRunOnce(5);
        if (hr != S_OK) { ep_fail(e, "PeerGraphRunOnce: 0x%08lx", (unsigned long)hr); return 0; }
    }
}

static int c_connected(ep_t *e) { return e->connected; }
static int c_closed(ep_t *e) { return e->closed; }
static int c_rx_done(ep_t *e) { return e->rxFinal && (!e->wantAck || e->ackSent); }
static int c_tx_acked(ep_t *e) { return e->ackReceived; }
static int c_both_done(ep_t *e) { return e->txFinalSent && e->rxFinal && e->ackSent && e->ackReceived; }
static int c_no_sockets(ep_t *e)
{
    ULONG n = 1;
    ULONGLONG dl;
    HRESULT hr = PeerGraphGetPollFds(NULL, 0, &n, &dl);
    if (hr != S_OK && hr != E_NOT_SUFFICIENT_BUFFER) ep_fail(e, "PeerGraphGetPollFds: 0x%08lx", (unsigned long)hr);
    return n == 0;
}

/* Queues the whole stream (and the final message) without servicing, then
 * closes the direct connection at once (T_CLOSE_*). */
static void ep_blast_and_close(ep_t *e, const char *signalFile)
{
    ULONG q = 0, lim = 0;
    HRESULT hr = PeerGraphSetDataQueueLimit(e->g, e->conn, CLOSE_QUEUE_LIMIT);
    PPEER_GRAPH_EVENT_DATA d;
    if (hr != S_OK) { ep_fail(e, "PeerGraphSetDataQueueLimit(%lu): 0x%08lx", CLOSE_QUEUE_LIMIT, (unsigned long)hr); return; }
    hr = PeerGraphGetDataQueue(e->g, e->conn, &q, &lim);
    if (hr != S_OK || lim != CLOSE_QUEUE_LIMIT) {
        ep_fail(e, "PeerGraphGetDataQueue after SetDataQueueLimit: 0x%08lx, limit %lu", (unsigned long)hr,
                (unsigned long)lim);
        return;
    }
    e->hold = 0;
    ep_send_ex(e, 1); /* no service in between: everything lands in the queue or the socket */
    if (e->err[0]) return;
    if (!e->txFinalSent) {
        ep_fail(e, "queue refused data under a %lu-byte limit (blocked %d at %lu msgs)", CLOSE_QUEUE_LIMIT, e->blocked,
                (unsigned long)e->txMsgs);
        return;
    }
    hr = PeerGraphGetDataQueue(e->g, e->conn, &q, &lim);
    if (hr != S_OK) { ep_fail(e, "PeerGraphGetDataQueue before close: 0x%08lx", (unsigned long)hr); return; }
    if (q < 4 * MIB) {
        ep_fail(e, "only %lu bytes still queued at close (of %lu sent): the receiver was meant to be paused",
                (unsigned long)q, (unsigned long)e->txBytes);
        return;
    }
    e->maxQueued = q;
    hr = PeerGraphCloseDirectConnection(e->g, e->conn);
    if (hr != S_OK) { ep_fail(e, "PeerGraphCloseDirectConnection: 0x%08lx", (unsigned long)hr); return; }
    file_create(signalFile, e); /* the receiver resumes reading */
    /* the local DISCONNECTED is queued at once, before any service */
    hr = PeerGraphGetEventData(e->ev, &d);
    while (hr == S_OK && d->eventType != PEER_GRAPH_EVENT_DIRECT_CONNECTION) {
        PeerGraphFreeData(d);
        hr = PeerGraphGetEventData(e->ev, &d);
    }
    if (hr != S_OK) { ep_fail(e, "no local DIRECT_CONNECTION event right after the close (0x%08lx)", (unsigned long)hr); return; }
    if (d->connectionChangeData.status != PEER_DISCONNECTED || d->connectionChangeData.hrConnectionFailedReason != S_OK ||
        d->connectionChangeData.ullConnectionId != e->conn) {
        ep_fail(e, "local event after the close: status %d hr 0x%08lx id %lu (expected DISCONNECTED, S_OK, %lu)",
                (int)d->connectionChangeData.status, (unsigned long)d->connectionChangeData.hrConnectionFailedReason,
                (unsigned long)d->connectionChangeData.ullConnectionId, (unsigned long)e->conn);
        PeerGraphFreeData(d);
        return;
    }
    PeerGraphFreeData(d);
    e->closed = 1;
    e->closeStatus = PEER_DISCONNECTED;
    hr = PeerGraphSendData(e->g, e->conn, &TYPE_DATA, 1, e->buf);
    if (hr != PEER_E_CONNECTION_NOT_FOUND) {
        ep_fail(e, "SendData after the close: 0x%08lx, expected PEER_E_CONNECTION_NOT_FOUND", (unsigned long)hr);
        return;
    }
    hr = PeerGraphCloseDirectConnection(e->g, e->conn);
    if (hr != PEER_E_CONNECTION_NOT_FOUND)
        ep_fail(e, "second CloseDirectConnection: 0x%08lx, expected PEER_E_CONNECTION_NOT_FOUND", (unsigned long)hr);
}

static void ep_print_stats(ep_t *e)
{
    if (!g_verbose) return;
    fprintf(stderr,
            "  [%s %s] %lu ms: tx %lu msgs %lu bytes, rx %lu msgs %lu bytes, queueFull %lu sendReady %lu "
            "spurious %lu, max queued %lu",
            e->who, test_names[e->test], (unsigned long)(PeerGraphGetTickCount() - e->startMs),
            (unsigned long)e->txMsgs, (unsigned long)e->txBytes, (unsigned long)e->rxMsgs, (unsigned long)e->rxBytes,
            e->queueFull, e->sendReady, e->spuriousReady, (unsigned long)e->maxQueued);
    if (e->recAdd)
        fprintf(stderr, ", receiver synchronized at %lu bytes sent, last record at %lu",
                (unsigned long)e->peerSyncedAt, (unsigned long)e->recLastAt);
    if (e->recWant) {
        int k;
        fprintf(stderr, ", record lag (bytes):");
        for (k = 0; k < NREC; k++) fprintf(stderr, " %lu", (unsigned long)e->recLag[k]);
    }
    fprintf(stderr, "\n");
}

/* The child's half of every test; returns the exit status. */
static int child_main(int argc, char **argv)
{
    PEER_VERSION_DATA vd;
    PEER_ADDRESS a;
    ep_t e;
    int test;
    unsigned port;
    HRESULT hr;
    ULONGLONG id = 0;
    char sigFile[128];
    if (argc != 6) {
        fprintf(stderr, "usage: %s --child <test> <port> <bytes to send> <bytes to receive>\n", argv[0]);
        return 2;
    }
    test = atoi(argv[2]);
    port = (unsigned)strtoul(argv[3], NULL, 10);
    if (test < T_ONE_WAY || test > T_CLOSE_C || port == 0 || port > 65535) {
        fprintf(stderr, "child: bad arguments\n");
        return 2;
    }
    if (getenv("P2PG_TEST_TIMEOUT_MS")) g_timeout_ms = strtoul(getenv("P2PG_TEST_TIMEOUT_MS"), NULL, 10);
    g_verbose = getenv("P2PG_TEST_VERBOSE") != NULL;
    tu_mkdir("build");
    tu_mkdir(TU_DBDIR_N);
    tu_mkdir(CHILD_DBDIR_N);
    if (PeerGraphSetDatabaseDirectory(CHILD_DBDIR_W) != S_OK || PeerGraphStartup(PEER_GRAPH_VERSION, &vd) != S_OK) {
        fprintf(stderr, "child: startup failed\n");
        return 1;
    }
    ep_init(&e, "child", test);
    e.txTotal = strtoul(argv[4], NULL, 10);
    e.rxTotal = strtoul(argv[5], NULL, 10);
    e.txSeed = seed_child(test);
    e.rxSeed = seed_parent(test);
    e.txOn = e.txTotal > 0;
    e.rxOn = e.rxTotal > 0;
    e.neighbor = test == T_NEIGHBOR;
    e.wantAck = test <= T_NEIGHBOR;
    e.recWant = test == T_NEIGHBOR ? NREC : 0;
    e.notifySynced = test == T_NEIGHBOR;
    signal_path(sigFile, sizeof sigFile, test);
    e.pauseFile = test == T_CLOSE_P ? sigFile : NULL;
    PeerGraphDelete(graph_ids[test], L"child", L"child");
    hr = PeerGraphOpen(graph_ids[test], L"child", L"child", NULL, 0, NULL, &e.g);
    if (hr != PEER_S_GRAPH_DATA_CREATED) ep_fail(&e, "PeerGraphOpen: 0x%08lx", (unsigned long)hr);
    if (!e.err[0]) e.ev = ep_register(&e);
    if (!e.err[0] && test == T_BOTH) {
        /* a small default for this graph's future connections: QUEUE_FULL often, and messages larger
         * than the limit, which only an empty queue takes */
        hr = PeerGraphSetDataQueueLimit(e.g, 0, BOTH_CHILD_LIMIT);
        if (hr != S_OK) ep_fail(&e, "PeerGraphSetDataQueueLimit(graph default): 0x%08lx", (unsigned long)hr);
    }
    memset(&a, 0, sizeof a);
    a.dwSize = sizeof a;
    a.sin6.sin6_family = AF_INET6;
    a.sin6.sin6_port = htons((unsigned short)port);
    a.sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
    if (!e.err[0]) {
        hr = e.neighbor ? PeerGraphConnect(e.g, L"parent", &a, &id) : PeerGraphOpenDirectConnection(e.g, L"parent", &a, &id);
        if (hr != S_OK) ep_fail(&e, "%s: 0x%08lx", e.neighbor ? "PeerGraphConnect" : "PeerGraphOpenDirectConnection",
                                (unsigned long)hr);
        e.conn = id;
    }
    if (!e.err[0] && ep_run(&e, c_connected, "CONNECTED", 0)) {
        ULONG q = 1, lim = 0;
        hr = PeerGraphGetDataQueue(e.g, e.conn, &q, &lim);
        if (hr != S_OK || q != 0 || lim != (test == T_BOTH ? BOTH_CHILD_LIMIT : PEER_DEFAULT_DATA_QUEUE))
            ep_fail(&e, "GetDataQueue on the new connection: 0x%08lx, queued %lu, limit %lu", (unsigned long)hr,
                    (unsigned long)q, (unsigned long)lim);
        if (test != T_CLOSE_C) e.hold = 0;
        switch (test) {
        case T_ONE_WAY:
            /* receive all, ACK, then the parent closes */
            if (ep_run(&e, c_rx_done, "the data and the ACK queued", 0) && ep_run(&e, c_closed, "DISCONNECTED", 0) &&
                (e.closeStatus != PEER_DISCONNECTED || e.closeHr != S_OK))
                ep_fail(&e, "close event status %d hr 0x%08lx, expected DISCONNECTED S_OK", (int)e.closeStatus,
                        (unsigned long)e.closeHr);
            break;
        case T_BOTH:
            /* send and receive, exchange ACKs, then this side closes */
            if (ep_run(&e, c_both_done, "both transfers and both ACKs", 0)) {
                hr = PeerGraphCloseDirectConnection(e.g, e.conn);
                if (hr != S_OK) ep_fail(&e, "PeerGraphCloseDirectConnection: 0x%08lx", (unsigned long)hr);
                else if (ep_run(&e, c_closed, "the local DISCONNECTED", 0) &&
                         (e.closeStatus != PEER_DISCONNECTED || e.closeHr != S_OK))
                    ep_fail(&e, "local close event status %d hr 0x%08lx", (int)e.closeStatus, (unsigned long)e.closeHr);
                else ep_run(&e, c_no_sockets, "the closed link's socket to go", 0);
            }
            break;
        case T_NEIGHBOR:
            /* receive all and the records, ACK, then the parent leaves */
            if (ep_run(&e, c_rx_done, "the data, the records and the ACK queued", 0) &&
                ep_run(&e, c_closed, "the parent's DISCONNECT", 0)) {
                int k;
                for (k = 0; k < NREC && !e.err[0]; k++) {
                    PPEER_RECORD r = NULL;
                    hr = PeerGraphGetRecord(e.g, &e.recIds[k], &r);
                    if (hr != S_OK) ep_fail(&e, "record #%d: PeerGraphGetRecord 0x%08lx at the end", k, (unsigned long)hr);
                    PeerGraphFreeData(r);
                }
            }
            break;
        case T_CLOSE_P:
            /* paused at CONNECTED (in ep_events); then everything, then DISCONNECTED */
            if (ep_run(&e, c_rx_done, "the data", 0) && ep_run(&e, c_closed, "DISCONNECTED", 0) &&
                (e.closeStatus != PEER_DISCONNECTED || e.closeHr != S_OK))
                ep_fail(&e, "close event status %d hr 0x%08lx, expected DISCONNECTED S_OK", (int)e.closeStatus,
                        (unsigned long)e.closeHr);
            break;
        case T_CLOSE_C:
            ep_blast_and_close(&e, sigFile);
            if (!e.err[0]) ep_run(&e, c_no_sockets, "the closing link to flush and go", 0);
            break;
        default: break;
        }
    }
    ep_print_stats(&e);
    if (e.g) PeerGraphClose(e.g);
    {
        /* let a DISCONNECT go out (T_BOTH/T_NEIGHBOR are over; best effort) */
        ULONGLONG end = PeerGraphGetTickCount() + 200;
        ep_t dummy;
        memset(&dummy, 0, sizeof dummy);
        while (PeerGraphGetTickCount() < end && !c_no_sockets(&dummy)) PeerGraphRunOnce(5);
    }
    PeerGraphShutdown();
    PeerGraphSetDatabaseDirectory(NULL);
    ep_free(&e);
    if (e.err[0]) {
        fprintf(stderr, "CHILD FAILED: %s\n", e.err);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* The parent: cmocka tests                                                   */
/* ------------------------------------------------------------------------- */
static ep_t P;

static int setup(void **st)
{
    (void)st;
    tu_start_real();
    memset(&P, 0, sizeof P);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    child_kill();
    if (P.g) PeerGraphClose(P.g);
    ep_free(&P);
    memset(&P, 0, sizeof P);
    assert_int_equal(PeerGraphShutdown(), S_OK);
    return 0;
}

#define P_CHECK(x)                                                                                                     \
    do {                                                                                                               \
        if (!(x) || P.err[0]) fail_msg("%s", P.err[0] ? P.err : #x);                                                   \
    } while (0)

/* Creates the graph as "parent", listens, registers, starts the child. */
static char parentSigFile[128];
static void parent_start(int test, unsigned long parentSends, unsigned long childSends)
{
    PEER_ADDRESS a;
    tu_mkdir(CHILD_DBDIR_N);
    signal_path(parentSigFile, sizeof parentSigFile, test);
    remove(parentSigFile);
    ep_init(&P, "parent", test);
    P_CHECK(1);
    P.g = tu_create(graph_ids[test], L"parent");
    P.ev = ep_register(&P);
    P_CHECK(P.ev != NULL);
    a = tu_listen(P.g);
    P.txTotal = parentSends;
    P.rxTotal = childSends;
    P.txOn = parentSends > 0;
    P.rxOn = childSends > 0;
    P.txSeed = seed_parent(test);
    P.rxSeed = seed_child(test);
    P.neighbor = test == T_NEIGHBOR;
    P.wantAck = test <= T_NEIGHBOR;
    child_spawn(test, ntohs(a.sin6.sin6_port), childSends, parentSends);
}

/* After the connection is up: the documented default queue, and argument
 * checks that need a live connection. */
static void parent_check_fresh_connection(void)
{
    ULONG q = 1, lim = 0;
    assert_int_equal(PeerGraphGetDataQueue(P.g, P.conn, &q, &lim), S_OK);
    assert_int_equal(q, 0);
    assert_int_equal(lim, PEER_DEFAULT_DATA_QUEUE);
    assert_int_equal(PeerGraphGetDataQueue(P.g, P.conn, NULL, NULL), S_OK);
    assert_int_equal(PeerGraphSendData(P.g, P.conn, NULL, 1, P.buf), E_INVALIDARG);
    assert_int_equal(PeerGraphSendData(P.g, P.conn, &TYPE_DATA, 1, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphSendData(P.g, P.conn, &TYPE_DATA, PEER_MAX_DATA_SIZE + 1, P.buf), E_INVALIDARG);
    assert_int_equal(PeerGraphSendData(P.g, P.conn + 1000, &TYPE_DATA, 1, P.buf), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphGetDataQueue(P.g, P.conn + 1000, &q, &lim), PEER_E_CONNECTION_NOT_FOUND);
    if (!P.neighbor) {
        HPEERENUM en;
        ULONG n = 0;
        assert_int_equal(PeerGraphEnumConnections(P.g, PEER_CONNECTION_DIRECT, &en), S_OK);
        assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
        assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
        assert_int_equal(n, 1);
        assert_int_equal(tu_neighbors(P.g), 0); /* a direct link is not a neighbor */
        assert_int_equal(PeerGraphCloseDirectConnection(P.g, P.conn + 1000), PEER_E_CONNECTION_NOT_FOUND);
    } else {
        assert_int_equal(PeerGraphCloseDirectConnection(P.g, P.conn), PEER_E_CONNECTION_NOT_FOUND);
    }
}

static int c_child_gone(ep_t *e)
{
    (void)e;
    return child_poll();
}

/* Keeps servicing until the child exits; it must exit 0. */
static void parent_wait_child(void)
{
    P_CHECK(ep_run(&P, c_child_gone, "the child to exit", 0));
    if (child_code != 0) fail_msg("the child process exited with status %d (its stderr says why)", child_code);
    ep_print_stats(&P);
}

/* 1. 100 MB parent -> child on a direct connection the child opened. */
static void test_direct_one_way(void **st)
{
    (void)st;
    parent_start(T_ONE_WAY, scaled(100 * MIB), 0);
    P_CHECK(ep_run(&P, c_connected, "the child's direct connection", 1));
    parent_check_fresh_connection();
    P.hold = 0;
    P_CHECK(ep_run(&P, c_tx_acked, "the child's ACK of the data", 1));
    assert_true(P.sendReady >= P.queueFull);
    assert_int_equal(PeerGraphCloseDirectConnection(P.g, P.conn), S_OK);
    P_CHECK(ep_run(&P, c_closed, "the local DISCONNECTED", 1));
    assert_int_equal(P.closeStatus, PEER_DISCONNECTED);
    assert_int_equal(P.closeHr, S_OK);
    parent_wait_child();
}

/* 2. 100 MB each way at once on one direct connection. */
static void test_direct_both_ways(void **st)
{
    (void)st;
    parent_start(T_BOTH, scaled(100 * MIB), scaled(100 * MIB));
    P_CHECK(ep_run(&P, c_connected, "the child's direct connection", 1));
    P.hold = 0;
    P_CHECK(ep_run(&P, c_both_done, "both transfers and both ACKs", 1));
    P_CHECK(ep_run(&P, c_closed, "the child's close", 1));
    assert_int_equal(P.closeStatus, PEER_DISCONNECTED);
    assert_int_equal(P.closeHr, S_OK);
    parent_wait_child();
}

/* 3. 20 MB over a neighbor link while records are added and flooded. */
static void test_neighbor_with_records(void **st)
{
    (void)st;
    parent_start(T_NEIGHBOR, scaled(20 * MIB), 0);
    P.recAdd = NREC;
    P_CHECK(ep_run(&P, c_connected, "the child's neighbor connection", 1));
    parent_check_fresh_connection();
    P.hold = 0;
    P_CHECK(ep_run(&P, c_tx_acked, "the child's ACK of the data and the records", 1));
    assert_int_equal(P.recAdded, NREC);
    /* the parent leaves: the child sees its neighbor go and exits */
    assert_int_equal(PeerGraphClose(P.g), S_OK);
    P.g = NULL;
    P.ev = NULL;
    parent_wait_child();
}

/* 4. The parent queues 16 MB and closes at once; the child (paused at first)
 * gets every byte, then DISCONNECTED. */
static void test_close_with_queued_data_parent(void **st)
{
    (void)st;
    parent_start(T_CLOSE_P, close_size(), 0);
    P.wantAck = 0;
    P_CHECK(ep_run(&P, c_connected, "the child's direct connection", 1));
    ep_blast_and_close(&P, parentSigFile);
    P_CHECK(1);
    parent_wait_child();
}

/* 5. The same with the roles swapped: the side that opened the connection
 * queues and closes; the parent (paused at first) checks. */
static void test_close_with_queued_data_child(void **st)
{
    (void)st;
    parent_start(T_CLOSE_C, 0, close_size());
    P.wantAck = 0;
    P.hold = 0;
    P.pauseFile = parentSigFile;
    P_CHECK(ep_run(&P, c_connected, "the child's direct connection", 1));
    P_CHECK(ep_run(&P, c_rx_done, "all the data", 1));
    P_CHECK(ep_run(&P, c_closed, "DISCONNECTED", 1));
    assert_int_equal(P.closeStatus, PEER_DISCONNECTED);
    assert_int_equal(P.closeHr, S_OK);
    parent_wait_child();
}

static void pick_scale(void)
{
    const char *s = getenv("P2PG_TEST_SCALE"), *pre = getenv("LD_PRELOAD");
    if (s && *s) {
        double v = strtod(s, NULL);
        if (v > 0.0 && v <= 20.0) g_scale = v;
    } else if (pre && strstr(pre, "vgpreload")) {
        g_scale = 0.1;
    }
#ifdef _WIN32
    else {
        HMODULE nt = GetModuleHandleA("ntdll.dll");
        if (nt && GetProcAddress(nt, "wine_get_version")) g_scale = 0.25;
    }
#endif
    if (g_scale < 1.0) g_timeout_ms = 180000;
    if (getenv("P2PG_TEST_TIMEOUT_MS")) g_timeout_ms = strtoul(getenv("P2PG_TEST_TIMEOUT_MS"), NULL, 10);
    g_verbose = getenv("P2PG_TEST_VERBOSE") != NULL;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_one_way, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_neighbor_with_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_queued_data_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_queued_data_child, setup, teardown),
    };
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) return child_main(argc, argv);
#ifdef _WIN32
    {
        DWORD n = GetModuleFileNameA(NULL, self_path, sizeof self_path);
        if (n == 0 || n >= sizeof self_path) snprintf(self_path, sizeof self_path, "%s", argv[0]);
    }
#else
    snprintf(self_path, sizeof self_path, "%s", argv[0]);
#endif
    pick_scale();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
