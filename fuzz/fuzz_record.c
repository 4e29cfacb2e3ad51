/*
 * fuzz_record.c - libFuzzer target: the record decoder and validator
 * (rec_parse, rec_validate with attribute XML, conflict order, storing,
 * flooding on, presence / contact / signature / Graph Info handling) and the
 * compact record decoder of BATCH (PROTOCOL.md section 4, bit 0x10).
 *
 * Graph "G" (peer "Bob", compat profile) listens and holds two application
 * records.  Per input a raw peer "Alice" completes the handshake and sends
 * the input as the record of a FLOOD (or several FLOODs, or a BATCH), then
 * optionally asks for a sync so the stored record is encoded back, and reads
 * the graph through the API.
 *
 * Input:
 *   byte 0  mode
 *           bits 0-1  0 one FLOOD: the rest is one record (PEER_RECORD wire form)
 *                     1 FLOODs: the rest is records back to back, each cut
 *                       where its own lengths end (at most 8; any remainder last)
 *                     2 one BATCH (type 0x80) of byte 2 records: the rest is
 *                       compact records; AUTH_INFO offers 0x10
 *                     3 as 1, with a service and a 1 s step between FLOODs
 *           bit 2     (FLOOD) the record ID's upper half is made to match the
 *                     creator (MD5 fold, PROTOCOL.md R2)
 *           bit 3     (FLOOD) the three times are signed offsets from the
 *                     graph's peer time
 *           bit 4     then SOLICIT_NEW for every type: the library sends its
 *                     records back (FLOODs, or BATCHes when 0x10 was offered)
 *           bit 5     then the records and nodes are read through the API
 *                     (EnumRecords, EnumNodes, GetNodeInfo, searches)
 *           bit 6     then SOLICIT_HASH (one range, MD5 of nothing): the
 *                     library sorts its records and sends ADVERTISE
 *           bit 7     the raw peer resets the link at the end instead of closing
 *   byte 1  AUTH_INFO capability bits (PROTOCOL.md section 4)
 *   byte 2  BATCH count (mode 2)
 *   rest    the record bytes
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_teardown(void);

#define FR_RESTART_EVERY 2048
#define FR_MAX_RECORD 65000u
#define FR_NODE 0x5EED00000002ULL

static int fr_ready, fr_dirty;
static unsigned fr_runs;
static HGRAPH fr_g;
static HPEEREVENT fr_e;
static SOCKADDR_IN6 fr_addr;
static ULONG fr_base_records;
static DWORD fr_base_status;
static uint8_t fr_buf[FR_MAX_RECORD];
static fz_out fr_out; /* checks what the library sends on the input's link */

static void fr_restart(void)
{
    wchar_t name[64];
    if (fr_ready) fz_lib_stop();
    fr_ready = 0;
    fz_lib_start();
    fr_g = fz_create(L"G", L"Bob", fz_wname(name, 64, "fuzzrecord"), 0);
    fr_e = fz_register_all(fr_g);
    fz_add_record(fr_g, 1, "first record", fz_attrs1, 30);
    fz_add_record(fr_g, 2, "second", fz_attrs2, 30);
    fr_addr = fz_listen(fr_g);
    fz_pump(40, 5000); /* until the signature and contact records are there (contact timer: 10-180 s) */
    fz_drain(fr_e);
    fr_base_records = fz_record_count(fr_g);
    FZ_CHECK(PeerGraphGetStatus(fr_g, &fr_base_status) == S_OK);
    fr_ready = 1;
    fr_dirty = 0;
    fr_runs = 0;
}

void fuzz_teardown(void)
{
    wchar_t name[64];
    if (!fr_ready) return;
    fz_close_delete(fr_g, L"G", L"Bob", fz_wname(name, 64, "fuzzrecord"));
    fz_pump(2, PEER_LINGER_MS + 1);
    fz_lib_stop();
    fr_ready = 0;
}

static unsigned fr_service(PEER_SOCKET s, int n, ULONGLONG step)
{
    unsigned mask = 0;
    int i;
    for (i = 0; i < n; i++) {
        fz_pump(1, step);
        if (s != PEER_INVALID_SOCKET) fz_raw_drain(s, &fr_out);
        mask |= fz_drain(fr_e);
    }
    return mask;
}

static void fr_flood(PEER_SOCKET s, uint8_t *rec, size_t n, unsigned mode)
{
    static msg m;
    fz_rec_layout l;
    if (n > sizeof m.b - 12) return;
    if ((mode & 0x0C) && fz_rec_parse(rec, n, &l)) {
        if (mode & 0x04) fz_rec_fix_id(rec, &l);
        if (mode & 0x08) fz_rec_fix_times(rec, &l, fz_peer_now(fr_g));
    }
    hdr(&m, 0x0B);
    p16(&m, 12);
    p16(&m, 0);
    memcpy(m.b + m.n, rec, n);
    m.n += n;
    fin(&m);
    fz_send(s, &m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static msg m;
    unsigned mode, ext, count, kind, mask = 0;
    size_t pos, k;
    PEER_SOCKET s;
    DWORD status;

    if (size < 3) return 0;
    if (!fr_ready || fr_dirty || fr_runs >= FR_RESTART_EVERY) fr_restart();
    fr_runs++;
    mode = data[0];
    ext = data[1];
    count = data[2];
    data += 3, size -= 3;
    if (size > FR_MAX_RECORD) size = FR_MAX_RECORD;
    memcpy(fr_buf, data, size);
    kind = mode & 3;
    if (kind == 2) ext |= 0x10;

    memset(&fr_out, 0, sizeof fr_out);
    s = fz_raw_join(&fr_addr, 2, 0, ext, "G", FR_NODE);
    mask |= fr_service(s, 2, 1);
    if (kind == 0) {
        fr_flood(s, fr_buf, size, mode);
    } else if (kind == 2) {
        if (size <= sizeof m.b - 12) {
            hdr(&m, 0x80);
            p16(&m, count);
            p16(&m, 0);
            memcpy(m.b + m.n, fr_buf, size);
            m.n += size;
            fin(&m);
            fz_send(s, &m);
        }
    } else {
        int i;
        for (pos = 0, i = 0; pos < size; pos += k, i++) {
            fz_rec_layout l;
            k = i < 7 && fz_rec_parse(fr_buf + pos, size - pos, &l) ? l.len : size - pos;
            fr_flood(s, fr_buf + pos, k, mode);
            if (kind == 3) mask |= fr_service(s, 1, 1000);
        }
    }
    mask |= fr_service(s, 2, 1);
    if (mode & 0x10) { /* SOLICIT_NEW, every type */
        hdr(&m, 0x06);
        p8(&m, 0);
        p8(&m, 0);
        p16(&m, 12);
        fin(&m);
        fz_send(s, &m);
        mask |= fr_service(s, 3, 1);
    }
    if (mode & 0x40) { /* SOLICIT_HASH: one range, the MD5 of no records, bound zero */
        static const uint8_t md5_empty[16] = {0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04,
                                              0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e};
        hdr(&m, 0x08);
        p8(&m, 0);
        p8(&m, 0);
        p16(&m, 20);
        p32(&m, 1);
        p16(&m, 20);
        p16(&m, 0);
        memcpy(m.b + m.n, md5_empty, 16);
        m.n += 16;
        memset(m.b + m.n, 0, 24);
        m.n += 24;
        fin(&m);
        fz_send(s, &m);
        mask |= fr_service(s, 2, 1);
    }
    if (mode & 0x20) {
        fz_read_all_records(fr_g);
        fz_read_nodes(fr_g);
        fz_fixed_searches(fr_g);
    }
    if (mode & 0x80) fake_net_raw_reset(s);
    else fake_net_raw_close(s);
    mask |= fr_service(PEER_INVALID_SOCKET, 1, 1);
    mask |= fr_service(PEER_INVALID_SOCKET, 2, PEER_LINGER_MS + 1);

    if (fake_net_open_sockets() != 1 || fz_connections(fr_g) || fz_record_count(fr_g) != fr_base_records) fr_dirty = 1;
    FZ_CHECK(PeerGraphGetStatus(fr_g, &status) == S_OK);
    if (status != fr_base_status) fr_dirty = 1;
    if (mask & FZ_STATE_EVENTS) {
        fz_read_all_records(fr_g);
        fz_read_nodes(fr_g);
        fr_dirty = 1;
    }
    return 0;
}
