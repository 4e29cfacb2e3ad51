/*
 * fuzz_wire.c - libFuzzer target: the bytes a remote peer sends to a graph
 * over the fake network (frame parser, every message decoder, the handshake
 * in both roles, sync in both roles, records, application data and the
 * p2pgraph extensions BATCH 0x80 and DEPARTED 0x81).
 *
 * Two graphs listen: "G" (compat profile) and "F" (fast profile: keepalive,
 * dead links, DEPARTED).  A third, "S", secured with the TLS-PSK provider,
 * shares G's port: an AUTH_INFO naming it (with or without bit 0x40) in a
 * payload of handshake mode 0 sends what follows into the TLS layer
 * (PROTOCOL.md 6; the fuzzer cannot know the key, so this exercises the
 * switch to TLS, the refusals and the TLS failure paths).  Each holds two application records with
 * attributes.  Per input, in the responder role a raw peer connects to the
 * graph; in the initiator role the graph connects to a raw listener (the
 * decoders of WELCOME, REFUSE, sync answers, ADVERTISE...).  The harness
 * optionally completes the handshake, the payload is written (in pieces,
 * with a service between them), the library is serviced on an advancing
 * synthetic clock, the raw peer closes and the closing is serviced to the
 * end.
 *
 * Input:
 *   byte 0   mode
 *            bits 0-1  handshake done by the harness.
 *                      Responder role: 0 none (the payload starts at the frame
 *                      layer), 1 AUTH_INFO, 2 AUTH_INFO + CONNECT (the link is
 *                      CONNECTED: FLOOD, SOLICIT_*, ADVERTISE, REQUEST, ACK,
 *                      PT2PT, SYNC_END, BATCH, DEPARTED...), 3 the same for a
 *                      direct connection (AUTH_INFO type 2, CONNECT with D).
 *                      Initiator role (the library's AUTH_INFO and CONNECT are
 *                      read and dropped): 0 none (the payload answers them),
 *                      1 WELCOME (the library then solicits a time-based
 *                      sync), 2 WELCOME and a SYNC_END for each of its three
 *                      SOLICITs (it then sends SOLICIT_HASH and waits for
 *                      ADVERTISE), 3 a direct connection
 *                      (PeerGraphOpenDirectConnection) and WELCOME
 *            bit 2     graph: 0 "G" (compat), 1 "F" (fast profile)
 *            bit 3     the payload is message bytes; the harness cuts it into
 *                      frames of 16,379 bytes
 *            bits 4-5  split points (0-3): the payload goes in pieces
 *            bit 6     role: 0 the library responds (a raw peer connects to its
 *                      listener), 1 the library initiates (PeerGraphConnect to
 *                      a raw listener)
 *            bit 7     the raw peer ends with a reset, not an orderly close
 *   byte 1   (handshake modes only) capability bits of AUTH_INFO, or of WELCOME
 *            in the initiator role (PROTOCOL.md 4)
 *   then     2 bytes per split point (big-endian, modulo the stream length)
 *   then     the payload
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_teardown(void);

#define FW_RESTART_EVERY 2048 /* inputs between restarts even when nothing changed */
#define FW_MAX_STREAM (1u << 20)
#define FW_NODE 0x5EED00000001ULL

static int fw_ready, fw_dirty;
static unsigned fw_runs;
static HGRAPH fw_g[2], fw_s;
static HPEEREVENT fw_e[2];
static SOCKADDR_IN6 fw_addr[2];
static PEER_SOCKET fw_raw_l; /* the raw listener the graphs connect to (initiator role) */
static SOCKADDR_IN6 fw_raw_addr;
static ULONG fw_base_records[2];
static DWORD fw_base_status[2];
static fz_out fw_out; /* checks what the library sends on the input's link */
static uint8_t fw_stream[FW_MAX_STREAM + 2 * (FW_MAX_STREAM / PEER_FRAME_SEND_SIZE + 1)];

static void fw_restart(void)
{
    wchar_t name[64];
    int i;
    if (fw_ready) fz_lib_stop();
    fw_ready = 0;
    fz_lib_start();
    fw_raw_addr = fake_net_addr_loopback6(0);
    fw_raw_l = fake_net_raw_listen(&fw_raw_addr);
    FZ_CHECK(fw_raw_l != PEER_INVALID_SOCKET && fake_net_raw_local_address(fw_raw_l, &fw_raw_addr));
    fw_g[0] = fz_create(L"G", L"Bob", fz_wname(name, 64, "fuzzwire0"), 0);
    fw_g[1] = fz_create(L"F", L"Bob", fz_wname(name, 64, "fuzzwire1"), 0);
    FZ_CHECK(PeerGraphSetMaintenanceProfile(fw_g[1], PEER_MAINTENANCE_FAST) == S_OK);
    for (i = 0; i < 2; i++) {
        fw_e[i] = fz_register_all(fw_g[i]);
        fz_add_record(fw_g[i], 1, "first record", fz_attrs1, 30);
        fz_add_record(fw_g[i], 2, "second", fz_attrs2, 30);
        fw_addr[i] = fz_listen(fw_g[i]);
    }
    {   /* the secured graph on G's port */
        PEER_GRAPH_PROPERTIES p;
        PEER_SECURITY_INTERFACE sec;
        memset(&p, 0, sizeof p);
        p.dwSize = sizeof p;
        p.pwzGraphId = (PWSTR)L"S";
        p.pwzCreatorId = (PWSTR)L"Bob";
        memset(&sec, 0, sizeof sec);
        sec.dwSize = sizeof sec;
        sec.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_PSK;
        sec.cbSecurityInfo = 6;
        sec.pbSecurityInfo = (PBYTE) "secret";
        fz_wname(name, 64, "fuzzwire2");
        PeerGraphDelete(L"S", L"Bob", name);
        FZ_CHECK(PeerGraphCreate(&p, name, &sec, &fw_s) == S_OK);
        FZ_CHECK(PeerGraphListen(fw_s, PEER_GRAPH_SCOPE_ANY, 0, fake_net_port(&fw_addr[0])) == S_OK);
    }
    fz_pump(2, 1);
    fz_pump(40, 5000); /* until the signature and contact records are there (contact timer: 10-180 s) */
    for (i = 0; i < 2; i++) {
        fz_drain(fw_e[i]);
        fw_base_records[i] = fz_record_count(fw_g[i]);
        FZ_CHECK(PeerGraphGetStatus(fw_g[i], &fw_base_status[i]) == S_OK);
    }
    fw_ready = 1;
    fw_dirty = 0;
    fw_runs = 0;
}

void fuzz_teardown(void)
{
    wchar_t name[64];
    if (!fw_ready) return;
    fz_close_delete(fw_g[0], L"G", L"Bob", fz_wname(name, 64, "fuzzwire0"));
    fz_close_delete(fw_g[1], L"F", L"Bob", fz_wname(name, 64, "fuzzwire1"));
    fz_close_delete(fw_s, L"S", L"Bob", fz_wname(name, 64, "fuzzwire2"));
    fz_pump(2, PEER_LINGER_MS + 1);
    fz_lib_stop();
    fw_ready = 0;
}

static unsigned fw_service(PEER_SOCKET s, int n, ULONGLONG step)
{
    unsigned mask = 0;
    int i;
    for (i = 0; i < n; i++) {
        PEER_SOCKET x;
        fz_pump(1, step);
        if (s != PEER_INVALID_SOCKET) fz_raw_drain(s, &fw_out);
        else /* cleanup: connections the graphs open to the raw listener meanwhile are closed */
            while ((x = fake_net_raw_accept(fw_raw_l)) != PEER_INVALID_SOCKET) fake_net_raw_close(x);
        mask |= fz_drain(fw_e[0]) | fz_drain(fw_e[1]);
    }
    return mask;
}

static int fw_cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned mode, ext = 0, nsplit, i, mask = 0;
    int hs, gi;
    size_t cut[5], ncut = 0, len, pos, k;
    const uint8_t *stream;
    PEER_SOCKET s;
    DWORD status;

    if (size < 1) return 0;
    if (!fw_ready || fw_dirty || fw_runs >= FW_RESTART_EVERY) fw_restart();
    fw_runs++;

    mode = data[0];
    data++, size--;
    hs = (int)(mode & 3);
    gi = (int)((mode >> 2) & 1);
    if (hs) {
        if (!size) return 0;
        ext = data[0];
        data++, size--;
    }
    nsplit = (mode >> 4) & 3;
    if (size < 2 * nsplit) nsplit = (unsigned)(size / 2);
    for (i = 0; i < nsplit; i++) cut[ncut++] = ((size_t)data[2 * i] << 8) | data[2 * i + 1];
    data += 2 * nsplit, size -= 2 * nsplit;
    if (size > FW_MAX_STREAM) size = FW_MAX_STREAM;

    /* the byte stream the raw peer writes */
    if (mode & 0x08) {
        len = 0;
        for (pos = 0; pos < size; pos += k) {
            k = size - pos < PEER_FRAME_SEND_SIZE ? size - pos : PEER_FRAME_SEND_SIZE;
            fw_stream[len++] = (uint8_t)(k >> 8);
            fw_stream[len++] = (uint8_t)k;
            memcpy(fw_stream + len, data + pos, k);
            len += k;
        }
        stream = fw_stream;
    } else {
        stream = data;
        len = size;
    }
    for (i = 0; i < ncut; i++) cut[i] %= len + 1;
    cut[ncut++] = len;
    qsort(cut, ncut, sizeof cut[0], fw_cmp_size);

    memset(&fw_out, 0, sizeof fw_out);
    if (!(mode & 0x40)) { /* responder */
        s = fz_raw_join(&fw_addr[gi], hs >= 2 ? 2 : hs, hs == 3, ext, gi ? "F" : "G", FW_NODE);
        if (hs) mask |= fw_service(s, 2, 1);
    } else { /* initiator */
        static msg m;
        PEER_ADDRESS pa;
        ULONGLONG cid, utc = FZ_UTC_BASE + fake_net_now() * 10000ULL;
        HRESULT hr;
        memset(&pa, 0, sizeof pa);
        pa.dwSize = sizeof pa;
        pa.sin6 = fw_raw_addr;
        hr = hs == 3 ? PeerGraphOpenDirectConnection(fw_g[gi], L"Alice", &pa, &cid)
                     : PeerGraphConnect(fw_g[gi], NULL, &pa, &cid);
        if (hr != S_OK) { fw_dirty = 1; return 0; }
        fz_pump(2, 1);
        s = fake_net_raw_accept(fw_raw_l);
        FZ_CHECK(s != PEER_INVALID_SOCKET);
        fz_raw_drain(s, &fw_out); /* AUTH_INFO, CONNECT */
        if (hs) {
            m_welcome(&m, FW_NODE, utc, NULL, 0, "Alice", ext);
            fz_send(s, &m);
            mask |= fw_service(s, 1, 1);
        }
        for (i = 0; hs == 2 && i < 3; i++) { /* Graph Info, Presence, everything else */
            m_sync_end(&m);
            fz_send(s, &m);
            mask |= fw_service(s, 1, 1);
        }
    }
    for (pos = 0, i = 0; i < ncut; i++) {
        if (cut[i] > pos) fake_net_raw_write(s, stream + pos, cut[i] - pos);
        pos = cut[i];
        mask |= fw_service(s, 1, 1);
    }
    mask |= fw_service(s, 3, 40);
    mask |= fw_service(s, 1, 2100); /* keepalive, dead-link and handshake timers */
    if (mode & 0x80) fake_net_raw_reset(s);
    else fake_net_raw_close(s);
    mask |= fw_service(PEER_INVALID_SOCKET, 1, 1);
    mask |= fw_service(PEER_INVALID_SOCKET, 2, PEER_LINGER_MS + 1);

    /* anything the input changed makes the next input start afresh */
    if (fake_net_open_sockets() != 2) fw_dirty = 1; /* more than the two listeners */
    for (i = 0; i < 2; i++) {
        if (fz_connections(fw_g[i]) || fz_record_count(fw_g[i]) != fw_base_records[i]) fw_dirty = 1;
        FZ_CHECK(PeerGraphGetStatus(fw_g[i], &status) == S_OK);
        if (status != fw_base_status[i]) fw_dirty = 1;
    }
    if (mask & FZ_STATE_EVENTS) {
        /* read what the input left in the graphs before they go */
        for (i = 0; i < 2; i++) {
            fz_read_all_records(fw_g[i]);
            fz_read_nodes(fw_g[i]);
        }
        fw_dirty = 1;
    }
    return 0;
}
