/*
 * test_tls_interop.c - the p2pgraph-tls-psk provider against a TLS client
 * nobody here wrote: `openssl s_client` (OpenSSL 3) completes a TLS 1.2
 * ECDHE-PSK-CHACHA20-POLY1305 handshake with a p2pgraph listener over real
 * loopback sockets, and carries the MS-PPGRH CONNECT / WELCOME exchange
 * inside that TLS.
 *
 * MS-PPGRH has the initiator send AUTH_INFO in the clear before TLS starts
 * (PROTOCOL.md T1), which s_client cannot do, so the test runs a relay in
 * its own single-threaded loop, which also services the library:
 *
 *   s_client --TCP--> relay (127.0.0.1, ours) --TCP--> graph "Alice" ([::1])
 *
 * The relay connects to the listener and first writes one framed AUTH_INFO
 * (neighbor connection, Reserved2 = 0x41: extended reasons + "TLS follows",
 * the graph ID, source peer ID "Bob", no destination peer ID), then copies
 * bytes both ways unchanged.  s_client is spawned with its stdin on a pipe of
 * ours and its stdout/stderr in files under build/; the PSK it is given is
 * computed here as PROTOCOL.md T6 says (HMAC-SHA256, key = the graph secret,
 * message = "p2pgraph-psk-v1" NUL graph ID in UTF-8), with mbedTLS's md API.
 * We then write a framed CONNECT to s_client's stdin; s_client encrypts it
 * and prints whatever it decrypts to its stdout file.
 *
 *  1. right PSK: the graph gets a connected neighbor "Bob" (with our node ID)
 *     and s_client's stdout holds a WELCOME naming "Alice", while the bytes
 *     the relay carried from the library start with a TLS handshake record
 *     and never show "Alice" in the clear.  Closing s_client's stdin makes it
 *     send close_notify and exit 0; the graph then drops the link.
 *  2. wrong PSK (the right derivation over another secret): the handshake
 *     fails, s_client exits non-zero reporting a TLS alert from the listener,
 *     prints no WELCOME; pfnAuthFailed is called once; no neighbor.
 *  3. right PSK, but PSK identity "Mallory" while AUTH_INFO says "Bob": the
 *     listener refuses the handshake (T6); no neighbor, no WELCOME.
 *
 * s_client is started with posix_spawn rather than popen: popen gives no
 * process ID, so a hung s_client could be neither killed nor waited for with
 * a bound, and pclose would block.  Every wait is bounded by 10 s (30 s under
 * valgrind; P2PG_TEST_TIMEOUT_MS overrides); a hung s_client is killed.
 *
 * Skipped (cmocka skip(), with a message) when no `openssl` is found on PATH
 * (P2PG_OPENSSL may name one), when it lacks the cipher suite, and always on
 * Windows (wine), where the real logic is not built.
 */
#include "rawpeer.h"

#ifdef _WIN32

static void test_interop_skipped(void **st)
{
    (void)st;
    printf("openssl not found: interop test skipped (POSIX only)\n");
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interop_skipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* POSIX */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

extern char **environ;

#define GRAPH_ID   "interop-graph"
#define GRAPH_ID_W L"interop-graph"
#define DB_NAME_W  L"tlsinterop"
#define BOB_NODE   0xB0B0000012345678ULL

/* The graph secret: any bytes (a NUL and high bytes included on purpose). */
static const unsigned char SECRET[] = {'i', 'n', 't', 'e', 'r', 0x00, 'o', 'p', 0xFF, 0x80, 's', '3', 'c'};
static const unsigned char WRONG_SECRET[] = {'i', 'n', 't', 'e', 'r', 0x00, 'o', 'p', 0xFF, 0x80, 's', '3', 'C'};

static ULONGLONG g_timeout_ms = 10000;
static char g_openssl[4096];
static int g_have_openssl = -1; /* -1 not probed yet, 0 no (skip), 1 yes */
static char g_skip_why[4200];

/* ------------------------------------------------------------------------- */
/* state (global so that teardown can clean up after a failed assertion)      */
/* ------------------------------------------------------------------------- */
typedef struct {
    unsigned char b[65536];
    size_t n;
    int eof;  /* the source ended (or failed) */
    int shut; /* the destination's send side has been shut down */
} relay_buf;

static struct {
    const PEER_NET_SHIM *sh;
    HGRAPH g;
    int auth_failed;
    PEER_SOCKET lst, cli, lib;
    int lib_state; /* 0 connecting, 1 connected, -1 failed */
    relay_buf c2l, l2c;
    unsigned char wire[1 << 16]; /* the first bytes the library sent (ciphertext) */
    size_t wire_n;
    pid_t pid;
    int running, status;
    int in_fd; /* s_client's stdin, our end */
    char out_path[128], err_path[128];
} R;

static HRESULT CALLBACK on_auth_failed(HGRAPH h, PVOID ctx)
{
    (void)h;
    (void)ctx;
    R.auth_failed++;
    return S_OK;
}

/* ------------------------------------------------------------------------- */
/* the openssl child process                                                  */
/* ------------------------------------------------------------------------- */

/* Finds an executable `openssl`: $P2PG_OPENSSL, else along $PATH. */
static int find_openssl(char *out, size_t n)
{
    const char *env = getenv("P2PG_OPENSSL"), *path = getenv("PATH"), *p;
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return access(out, X_OK) == 0;
    }
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k > 0 && k + 9 < n) {
            memcpy(out, p, k);
            memcpy(out + k, "/openssl", 9);
            if (access(out, X_OK) == 0) return 1;
        }
        p += k;
        if (*p == ':') p++;
    }
    return 0;
}

/* Polls the child: 1 once it has exited (R.status = its exit code, or 128 +
 * the signal). */
static int child_done(void)
{
    int st = 0;
    pid_t r;
    if (!R.running) return 1;
    r = waitpid(R.pid, &st, WNOHANG);
    if (r == 0) return 0;
    if (r != R.pid) R.status = 255;
    else R.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    R.running = 0;
    return 1;
}

static void child_kill(void)
{
    int st;
    if (!R.running) return;
    kill(R.pid, SIGKILL);
    waitpid(R.pid, &st, 0);
    R.running = 0;
    R.status = 128 + SIGKILL;
}

/* Starts argv[] (argv[0] = the path) with stdout/stderr to the given files
 * and, when in_fd is not NULL, stdin on a pipe whose write end goes to
 * *in_fd (stdin is /dev/null otherwise). */
static void child_spawn(char *const argv[], const char *outPath, const char *errPath, int *in_fd)
{
    posix_spawn_file_actions_t fa;
    int p[2] = {-1, -1};
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    if (in_fd) {
        assert_int_equal(pipe(p), 0);
        assert_int_equal(fcntl(p[1], F_SETFD, FD_CLOEXEC), 0);
        assert_int_equal(posix_spawn_file_actions_adddup2(&fa, p[0], 0), 0);
        assert_int_equal(posix_spawn_file_actions_addclose(&fa, p[0]), 0);
    } else {
        assert_int_equal(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0), 0);
    }
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    fflush(stdout);
    fflush(stderr);
    R.status = -1;
    if (posix_spawn(&R.pid, argv[0], &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        if (in_fd) { close(p[0]); close(p[1]); }
        fail_msg("cannot start %s", argv[0]);
    }
    R.running = 1;
    posix_spawn_file_actions_destroy(&fa);
    if (in_fd) {
        close(p[0]);
        *in_fd = p[1];
    }
}

/* Reads a whole (small) file into buf; returns its length (0 if missing). */
static size_t read_file_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return 0;
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Prints s_client's stderr (for the reader of a failure). */
static void show_stderr(const char *why)
{
    static unsigned char e[8192];
    size_t n = read_file_bytes(R.err_path, e, sizeof e - 1);
    e[n] = 0;
    fprintf(stderr, "%s; openssl s_client exit status %d, stderr (%s):\n%s\n", why, R.status, R.err_path,
            (const char *)e);
}

/* Is the suite there?  (`openssl ciphers -psk -tls1_2 SUITE` exits 0.) */
static int openssl_has_suite(void)
{
    char a1[] = "ciphers", a2[] = "-psk", a3[] = "-tls1_2", a4[] = "ECDHE-PSK-CHACHA20-POLY1305";
    char *argv[6];
    ULONGLONG end = PeerGraphGetTickCount() + g_timeout_ms;
    argv[0] = g_openssl; argv[1] = a1; argv[2] = a2; argv[3] = a3; argv[4] = a4; argv[5] = NULL;
    child_spawn(argv, "/dev/null", "/dev/null", NULL);
    while (!child_done()) {
        if (PeerGraphGetTickCount() > end) { child_kill(); return 0; }
        assert_int_equal(PeerGraphRunOnce(10), S_OK);
    }
    return R.status == 0;
}

/* ------------------------------------------------------------------------- */
/* the relay and the service loop                                             */
/* ------------------------------------------------------------------------- */

static void buf_put(relay_buf *b, const unsigned char *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->b);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

/* Reads what `from` has into b (while there is room), writes what b holds to
 * `to`, and shuts down `to`'s send side once `from` ended and b is empty. */
static void relay_dir(PEER_SOCKET from, PEER_SOCKET to, relay_buf *b, int capture)
{
    const PEER_NET_SHIM *sh = R.sh;
    while (from != PEER_INVALID_SOCKET && !b->eof && b->n < sizeof b->b) {
        long k = sh->pfnRecv(sh->pvContext, from, b->b + b->n, (ULONG)(sizeof b->b - b->n));
        if (k == PEER_NET_WOULDBLOCK) break;
        if (k <= 0) { b->eof = 1; break; } /* end of stream or reset */
        if (capture && R.wire_n < sizeof R.wire) {
            size_t c = (size_t)k < sizeof R.wire - R.wire_n ? (size_t)k : sizeof R.wire - R.wire_n;
            memcpy(R.wire + R.wire_n, b->b + b->n, c);
            R.wire_n += c;
        }
        b->n += (size_t)k;
    }
    if (to == PEER_INVALID_SOCKET) return;
    while (b->n > 0) {
        long k = sh->pfnSend(sh->pvContext, to, b->b, (ULONG)b->n);
        if (k == PEER_NET_WOULDBLOCK) break;
        if (k <= 0) { b->n = 0; b->eof = 1; break; } /* the destination is gone: drop */
        memmove(b->b, b->b + k, b->n - (size_t)k);
        b->n -= (size_t)k;
    }
    if (b->eof && b->n == 0 && !b->shut) {
        sh->pfnShutdownSend(sh->pvContext, to);
        b->shut = 1;
    }
}

static void relay_io(void)
{
    const PEER_NET_SHIM *sh = R.sh;
    if (R.cli == PEER_INVALID_SOCKET && R.lst != PEER_INVALID_SOCKET) {
        SOCKADDR_IN6 from;
        PEER_SOCKET s;
        if (sh->pfnAccept(sh->pvContext, R.lst, &s, &from) == S_OK) R.cli = s;
    }
    if (R.lib_state == 0) {
        HRESULT hr = sh->pfnConnectResult(sh->pvContext, R.lib);
        if (hr == S_OK) R.lib_state = 1;
        else if (hr != S_FALSE) fail_msg("relay: connecting to the listener failed (0x%08lx)", (unsigned long)hr);
    }
    if (R.lib_state != 1) return;
    /* AUTH_INFO was put in c2l first: whatever s_client sends follows it */
    relay_dir(R.cli, R.lib, &R.c2l, 0);
    if (R.cli != PEER_INVALID_SOCKET) relay_dir(R.lib, R.cli, &R.l2c, 1);
}

static void add_fd(PEER_POLL_FD *w, ULONG *n, PEER_SOCKET s, DWORD ev)
{
    if (s == PEER_INVALID_SOCKET || !ev) return;
    w[*n].s = s;
    w[*n].dwEvents = ev;
    (*n)++;
}

/* One round: waits (at most maxMs) on the library's sockets and the relay's
 * together, services the library with what is ready, then moves relay
 * bytes. */
static void pump(DWORD maxMs)
{
    enum { CAP = 64 };
    PEER_POLL_FD want[CAP + 3], ready[CAP + 3], libReady[CAP + 3];
    ULONG n = 0, nw, nr = 0, nl = 0, i;
    ULONGLONG dl, now = PeerGraphGetTickCount();
    DWORD wait = maxMs;
    assert_int_equal(PeerGraphGetPollFds(want, CAP, &n, &dl), S_OK);
    if (dl != PEER_NO_DEADLINE) wait = dl <= now ? 0 : (dl - now < maxMs ? (DWORD)(dl - now) : maxMs);
    nw = n;
    if (R.cli == PEER_INVALID_SOCKET) add_fd(want, &nw, R.lst, PEER_POLL_READ);
    if (R.lib_state == 0) add_fd(want, &nw, R.lib, PEER_POLL_WRITE);
    if (R.lib_state == 1) {
        add_fd(want, &nw, R.cli, (!R.c2l.eof && R.c2l.n < sizeof R.c2l.b ? PEER_POLL_READ : 0) |
                                     (R.l2c.n ? PEER_POLL_WRITE : 0));
        add_fd(want, &nw, R.lib, (!R.l2c.eof && R.l2c.n < sizeof R.l2c.b ? PEER_POLL_READ : 0) |
                                     (R.c2l.n ? PEER_POLL_WRITE : 0));
    }
    assert_int_equal(R.sh->pfnWait(R.sh->pvContext, want, nw, ready, &nr, wait), S_OK);
    for (i = 0; i < nr; i++) /* only the library's own sockets go to Service */
        if (ready[i].s != R.lst && ready[i].s != R.cli && ready[i].s != R.lib) libReady[nl++] = ready[i];
    assert_int_equal(PeerGraphService(libReady, nl, PeerGraphGetTickCount()), S_OK);
    relay_io();
}

/* Pumps until cond() holds or the timeout passes; returns cond(). */
static int run_until(int (*cond)(void))
{
    ULONGLONG end = PeerGraphGetTickCount() + g_timeout_ms;
    while (PeerGraphGetTickCount() < end) {
        if (cond()) return 1;
        pump(20);
    }
    return cond();
}

/* Pumps for ms of wall time. */
static void pump_for(ULONGLONG ms)
{
    ULONGLONG end = PeerGraphGetTickCount() + ms;
    while (PeerGraphGetTickCount() < end) pump(10);
}

/* ------------------------------------------------------------------------- */
/* what went over the wire                                                    */
/* ------------------------------------------------------------------------- */

/* The PSK as PROTOCOL.md T6 defines it, in hex for s_client's -psk. */
static void psk_hex(const unsigned char *secret, size_t cb, char hex[65])
{
    unsigned char msgb[64], key[32];
    const size_t lp = 16, lg = strlen(GRAPH_ID); /* "p2pgraph-psk-v1" and its NUL */
    int i;
    memcpy(msgb, "p2pgraph-psk-v1", lp);
    memcpy(msgb + lp, GRAPH_ID, lg);
    assert_int_equal(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), secret, cb, msgb, lp + lg, key), 0);
    for (i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
}

/* Parses s_client's stdout as an MS-PPGRH stream (frames of a 2-byte length
 * and payload, reassembled into messages) and returns 1 if it holds a WELCOME
 * naming peerId.  *nMsgs receives the number of whole messages. */
static int stdout_has_welcome(const char *peerId, int *nMsgs)
{
    static unsigned char out[1 << 18];
    static unsigned char m[1 << 18];
    size_t n = read_file_bytes(R.out_path, out, sizeof out), off = 0, mn = 0;
    int found = 0;
    *nMsgs = 0;
    while (off + 2 <= n) {
        size_t fl = ((size_t)out[off] << 8) | out[off + 1];
        assert_true(fl >= 1 && fl <= PEER_FRAME_MAX_SIZE);
        if (off + 2 + fl > n) break; /* not all there yet */
        assert_true(mn + fl <= sizeof m);
        memcpy(m + mn, out + off + 2, fl);
        mn += fl;
        off += 2 + fl;
        while (mn >= 8) {
            size_t sz = ((size_t)m[0] << 24) | ((size_t)m[1] << 16) | ((size_t)m[2] << 8) | m[3];
            assert_true(sz >= 8);
            if (mn < sz) break;
            assert_int_equal(m[4], 0x10); /* version */
            (*nMsgs)++;
            if (m[5] == 0x03 && sz >= 32) { /* WELCOME: the peer ID at the offset in bytes 28..29 */
                size_t po = g16(m + 28), k = strlen(peerId);
                if (po >= 32 && po + k + 1 <= sz && !memcmp(m + po, peerId, k + 1)) found = 1;
            }
            memmove(m, m + sz, mn - sz);
            mn -= sz;
        }
    }
    return found;
}

static int contains(const unsigned char *h, size_t n, const char *needle)
{
    size_t k = strlen(needle), i;
    for (i = 0; i + k <= n; i++)
        if (!memcmp(h + i, needle, k)) return 1;
    return 0;
}

/* The graph's connected neighbors: how many, and whether one is Bob with
 * our node ID. */
static int neighbor_bob(ULONG *count)
{
    HPEERENUM en;
    ULONG n = 0, i;
    PEER_CONNECTION_INFO **items = NULL;
    int bob = 0;
    assert_int_equal(PeerGraphEnumConnections(R.g, PEER_CONNECTION_NEIGHBOR, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    if (n) {
        ULONG want = n;
        assert_int_equal(PeerGraphGetNextItem(en, &want, (PVOID **)&items), S_OK);
        for (i = 0; i < want; i++)
            if (wcscmp(items[i]->pwzPeerId, L"Bob") == 0 && items[i]->ullNodeId == BOB_NODE) bob = 1;
        PeerGraphFreeData(items);
    }
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    if (count) *count = n;
    return bob;
}

/* ------------------------------------------------------------------------- */
/* conditions for run_until                                                   */
/* ------------------------------------------------------------------------- */
static int cond_linked(void)
{
    int nm;
    if (child_done()) return 1; /* s_client gave up: report at once */
    return stdout_has_welcome("Alice", &nm) && neighbor_bob(NULL);
}
static int cond_child_done(void) { return child_done(); }
static int cond_alone(void)
{
    ULONG n;
    neighbor_bob(&n);
    return n == 0;
}
static int cond_lib_closed(void) { return R.l2c.eof && R.l2c.n == 0; }

/* ------------------------------------------------------------------------- */
/* setup / teardown                                                           */
/* ------------------------------------------------------------------------- */
static int setup(void **st)
{
    (void)st;
    memset(&R, 0, sizeof R);
    R.lst = R.cli = R.lib = PEER_INVALID_SOCKET;
    R.in_fd = -1;
    tu_start_real();
    R.sh = PeerGraphGetPlatformNetShim();
    return 0;
}

static void close_sock(PEER_SOCKET *s)
{
    if (*s != PEER_INVALID_SOCKET) R.sh->pfnClose(R.sh->pvContext, *s);
    *s = PEER_INVALID_SOCKET;
}

static int teardown(void **st)
{
    (void)st;
    if (R.in_fd >= 0) close(R.in_fd);
    R.in_fd = -1;
    child_kill();
    close_sock(&R.cli);
    close_sock(&R.lib);
    close_sock(&R.lst);
    if (R.g) {
        assert_int_equal(PeerGraphClose(R.g), S_OK);
        R.g = NULL;
        assert_int_equal(PeerGraphDelete(GRAPH_ID_W, L"Alice", DB_NAME_W), S_OK); /* no database left behind */
    }
    assert_int_equal(PeerGraphShutdown(), S_OK);
    return 0;
}

/* Skips the test (with the reason) when no usable openssl is there. */
static void need_openssl(void)
{
    if (g_have_openssl < 0) {
        if (!find_openssl(g_openssl, sizeof g_openssl)) {
            g_have_openssl = 0;
            snprintf(g_skip_why, sizeof g_skip_why, "openssl not found: interop test skipped");
        } else if (!openssl_has_suite()) {
            g_have_openssl = 0;
            snprintf(g_skip_why, sizeof g_skip_why,
                     "%s has no ECDHE-PSK-CHACHA20-POLY1305 (not OpenSSL 3?): interop test skipped", g_openssl);
        } else
            g_have_openssl = 1;
    }
    if (!g_have_openssl) {
        printf("%s\n", g_skip_why);
        skip();
    }
}

/* ------------------------------------------------------------------------- */
/* one run                                                                    */
/* ------------------------------------------------------------------------- */
enum { EXPECT_LINK, EXPECT_BAD_KEY, EXPECT_BAD_IDENTITY };

static void run_case(const char *name, const unsigned char *clientSecret, size_t clientSecretLen,
                     const char *identity, int expect)
{
    PEER_GRAPH_PROPERTIES p;
    PEER_SECURITY_INTERFACE sec;
    PEER_ADDRESS la;
    SOCKADDR_IN6 relayAt, bound;
    HRESULT hr;
    char hex[65], port[32];
    char a_sc[] = "s_client", a_conn[] = "-connect", a_tls[] = "-tls1_2", a_cipher[] = "-cipher",
         a_suite[] = "ECDHE-PSK-CHACHA20-POLY1305", a_psk[] = "-psk", a_id[] = "-psk_identity", a_quiet[] = "-quiet",
         a_noeof[] = "-no_ign_eof", a_nocmd[] = "-nocommands", idbuf[64];
    char *argv[16];
    int nm = 0, i = 0;
    unsigned char fh[2];
    static msg m;

    need_openssl();

    /* graph "Alice", secured with SECRET, listening */
    memset(&sec, 0, sizeof sec);
    sec.dwSize = sizeof sec;
    sec.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_PSK;
    sec.cbSecurityInfo = (ULONG)sizeof SECRET;
    sec.pbSecurityInfo = (PBYTE)SECRET;
    sec.pfnAuthFailed = on_auth_failed;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)GRAPH_ID_W;
    p.pwzCreatorId = (PWSTR)L"Alice";
    p.cPresenceMax = (ULONG)-1;
    PeerGraphDelete(GRAPH_ID_W, L"Alice", DB_NAME_W);
    assert_int_equal(PeerGraphCreate(&p, DB_NAME_W, &sec, &R.g), S_OK);
    la = tu_listen(R.g); /* [::1]:port */

    /* the relay: a listener on 127.0.0.1 for s_client, a connection to the graph */
    relayAt = fake_net_addr_v4mapped(127, 0, 0, 1, 0);
    assert_int_equal(R.sh->pfnListen(R.sh->pvContext, &relayAt, &R.lst, &bound), S_OK);
    snprintf(port, sizeof port, "127.0.0.1:%u", (unsigned)fake_net_port(&bound));
    hr = R.sh->pfnConnect(R.sh->pvContext, &la.sin6, &R.lib);
    assert_true(hr == S_OK || hr == S_FALSE);
    R.lib_state = hr == S_OK ? 1 : 0;
    m_auth(&m, 1, 0x41, GRAPH_ID, "Bob", NULL); /* neighbor; extended reasons | TLS follows */
    fh[0] = (unsigned char)(m.n >> 8);
    fh[1] = (unsigned char)m.n;
    buf_put(&R.c2l, fh, 2);
    buf_put(&R.c2l, m.b, m.n);

    /* s_client */
    psk_hex(clientSecret, clientSecretLen, hex);
    snprintf(idbuf, sizeof idbuf, "%s", identity);
    snprintf(R.out_path, sizeof R.out_path, "build/tls_interop_%s.out", name);
    snprintf(R.err_path, sizeof R.err_path, "build/tls_interop_%s.err", name);
    argv[i++] = g_openssl;
    argv[i++] = a_sc;
    argv[i++] = a_conn;
    argv[i++] = port;
    argv[i++] = a_tls;
    argv[i++] = a_cipher;
    argv[i++] = a_suite;
    argv[i++] = a_psk;
    argv[i++] = hex;
    argv[i++] = a_id;
    argv[i++] = idbuf;
    argv[i++] = a_quiet;   /* nothing but the decrypted bytes on stdout */
    argv[i++] = a_noeof;   /* -quiet implies -ign_eof: our closing stdin must end the session */
    argv[i++] = a_nocmd;   /* a line starting with Q/R/k/K is data, not a command */
    argv[i] = NULL;
    child_spawn(argv, R.out_path, R.err_path, &R.in_fd);

    /* the framed CONNECT, for s_client to send inside TLS once the handshake
     * is done (it reads stdin only then; the pipe holds it until) */
    m_connect(&m, 0x01, BOB_NODE, NULL, 0, NULL);
    {
        unsigned char f[64];
        assert_true(m.n + 2 <= sizeof f);
        f[0] = (unsigned char)(m.n >> 8);
        f[1] = (unsigned char)m.n;
        memcpy(f + 2, m.b, m.n);
        /* may fail (EPIPE, SIGPIPE ignored) if s_client is already gone */
        if (write(R.in_fd, f, m.n + 2) != (ssize_t)(m.n + 2) && expect == EXPECT_LINK)
            fail_msg("writing CONNECT to s_client's stdin: %s", strerror(errno));
    }

    if (expect == EXPECT_LINK) {
        ULONG n = 0;
        if (!run_until(cond_linked) || !R.running) {
            show_stderr("no link through s_client");
            fail_msg("s_client %s; WELCOME seen: %d; neighbor Bob: %d", R.running ? "still running (killed)" : "exited",
                     stdout_has_welcome("Alice", &nm), neighbor_bob(NULL));
        }
        assert_true(stdout_has_welcome("Alice", &nm)); /* (b) WELCOME naming Alice, decrypted by s_client */
        assert_true(neighbor_bob(&n));                  /* (a) the graph has neighbor Bob */
        assert_int_equal(n, 1);
        assert_int_equal(R.auth_failed, 0);
        /* what the relay saw from the library: TLS records, no plaintext */
        assert_true(R.wire_n > 5);
        assert_int_equal(R.wire[0], 0x16); /* handshake record (ServerHello) */
        assert_int_equal(R.wire[1], 0x03);
        assert_int_equal(R.wire[2], 0x03); /* TLS 1.2 */
        assert_false(contains(R.wire, R.wire_n, "Alice"));
        assert_false(contains(R.wire, R.wire_n, GRAPH_ID));
        /* end of stdin: s_client sends close_notify and exits 0 */
        close(R.in_fd);
        R.in_fd = -1;
        if (!run_until(cond_child_done)) {
            show_stderr("s_client did not exit after its stdin closed");
            fail_msg("s_client hung");
        }
        if (R.status != 0) {
            show_stderr("s_client failed");
            fail_msg("s_client exit status %d", R.status);
        }
        assert_true(run_until(cond_alone)); /* close_notify = end of stream: the link is gone */
        assert_int_equal(R.auth_failed, 0);
    } else {
        static unsigned char e[8192];
        size_t en;
        ULONG n = 0;
        if (!run_until(cond_child_done)) {
            show_stderr(expect == EXPECT_BAD_KEY ? "s_client hung with a wrong PSK" : "s_client hung with a wrong identity");
            fail_msg("s_client still running after %lu ms (killed)", (unsigned long)g_timeout_ms);
        }
        assert_int_not_equal(R.status, 0);
        /* the listener has closed its side; then nothing more happens */
        assert_true(run_until(cond_lib_closed));
        pump_for(200);
        assert_false(stdout_has_welcome("Alice", &nm));
        assert_int_equal(nm, 0); /* nothing at all was decrypted */
        neighbor_bob(&n);
        assert_int_equal(n, 0);
        en = read_file_bytes(R.err_path, e, sizeof e - 1);
        e[en] = 0;
        if (!strstr((const char *)e, "alert")) {
            show_stderr("s_client reports no TLS alert");
            fail_msg("the listener closed without an alert");
        }
        if (expect == EXPECT_BAD_KEY) assert_int_equal(R.auth_failed, 1);
        else assert_int_equal(R.auth_failed, 1); /* T8: an identity other than AUTH_INFO's is a bad credential */
        if (getenv("P2PG_TEST_VERBOSE")) {
            printf("%s: pfnAuthFailed called %d time(s)\n", name, R.auth_failed);
            show_stderr(name);
        }
    }
    assert_false(R.auth_failed > 1);
}

static void test_openssl_psk_link(void **st)
{
    (void)st;
    run_case("link", SECRET, sizeof SECRET, "Bob", EXPECT_LINK);
}

static void test_openssl_wrong_psk(void **st)
{
    (void)st;
    run_case("wrongkey", WRONG_SECRET, sizeof WRONG_SECRET, "Bob", EXPECT_BAD_KEY);
}

static void test_openssl_wrong_identity(void **st)
{
    (void)st;
    run_case("wrongid", SECRET, sizeof SECRET, "Mallory", EXPECT_BAD_IDENTITY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_openssl_psk_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openssl_wrong_psk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openssl_wrong_identity, setup, teardown),
    };
    const char *pre = getenv("LD_PRELOAD"), *t = getenv("P2PG_TEST_TIMEOUT_MS");
    int failed;
    signal(SIGPIPE, SIG_IGN); /* s_client may be gone when we write to its stdin */
    if (pre && strstr(pre, "vgpreload")) g_timeout_ms = 30000;
    if (t && *t) g_timeout_ms = strtoul(t, NULL, 10);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    PeerGraphSetDatabaseDirectory(NULL); /* frees the library's copy of the path */
    return failed;
}

#endif /* POSIX */
