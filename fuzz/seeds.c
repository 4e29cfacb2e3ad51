/*
 * seeds.c - writes the seed inputs of the four fuzz targets (`make
 * fuzz-seeds`): valid handshakes and messages, the records a library node
 * really sends (FLOOD and BATCH, captured on the fake network), the search
 * queries and attribute XML of tests/test_search.c, and database and export
 * files written by the library.  Output: <root>/<target>/seed-<name>
 * (root: argv[1], default fuzz/corpus).  Deterministic (fake network).
 */
#include "fuzz_common.h"

#include <stdarg.h>

static const char *sd_root = "fuzz/corpus";
static unsigned sd_count;

/* ---- output ------------------------------------------------------------ */

static void sd_put(const char *target, const char *name, const uint8_t *p, size_t n)
{
    char path[700];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", sd_root, target);
    tu_mkdir(sd_root);
    tu_mkdir(path);
    snprintf(path, sizeof path, "%s/%s/seed-%s", sd_root, target, name);
    f = fopen(path, "wb");
    FZ_CHECK(f != NULL);
    FZ_CHECK(fwrite(p, 1, n, f) == n);
    FZ_CHECK(fclose(f) == 0);
    sd_count++;
}

/* A growing byte buffer. */
typedef struct { uint8_t *p; size_t n, cap; } sbuf;
static void sb_add(sbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = (uint8_t *)realloc(b->p, b->cap);
        FZ_CHECK(b->p != NULL);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void sb_byte(sbuf *b, unsigned v) { uint8_t c = (uint8_t)v; sb_add(b, &c, 1); }
static void sb_free(sbuf *b) { free(b->p); b->p = NULL; b->n = b->cap = 0; }
/* Message m as frames (what send_msg writes). */
static void sb_frames(sbuf *b, const msg *m)
{
    size_t off = 0;
    while (off < m->n) {
        size_t k = m->n - off > PEER_FRAME_SEND_SIZE ? PEER_FRAME_SEND_SIZE : m->n - off;
        sb_byte(b, (unsigned)(k >> 8));
        sb_byte(b, (unsigned)(k & 0xFF));
        sb_add(b, m->b + off, k);
        off += k;
    }
}
static void sb_msg(sbuf *b, const msg *m) { sb_add(b, m->b, m->n); }

/* ---- captured records ---------------------------------------------------- */

#define SD_MAX_RECS 64
typedef struct { uint8_t *p; size_t n; const char *what; } srec;
static srec sd_recs[SD_MAX_RECS], sd_frecs[SD_MAX_RECS]; /* graph "G", graph "F" (fast profile) */
static size_t sd_nrecs, sd_nfrecs;
static sbuf sd_batch[8];     /* BATCH message bodies after the 8-byte header */
static size_t sd_nbatch;
static srec *sd_cur = sd_recs; /* where sd_collect puts records */
static size_t *sd_ncur = &sd_nrecs;

static const char *sd_kind(const uint8_t *r)
{
    static const uint8_t z[12] = {0};
    if (r[0] == 0 && r[1] == 0 && r[3] == 0 && !memcmp(r + 4, z, 12)) {
        switch (r[2]) {
        case 1: return "graphinfo";
        case 2: return "signature";
        case 3: return "contact";
        case 4: return "presence";
        }
    }
    return "app";
}

/* Absolute times valid for a month from the fake network's epoch. */
static void sd_fix_times(uint8_t *r, size_t n)
{
    fz_rec_layout l;
    ULONGLONG created = FZ_UTC_BASE - FZ_SECOND;
    if (!fz_rec_parse(r, n, &l)) return;
    fz_put64(r + l.times, created);
    fz_put64(r + l.times + 8, FZ_UTC_BASE + 30ULL * 86400ULL * FZ_SECOND);
    /* modified == created only without Last Modified By (40 + 4 + 2*creator) */
    fz_put64(r + l.times + 16, fz_get32(r + l.creator + 2 * l.n_creator) ? created + 1 : created);
}

/* The same with times as offsets from now (fuzz_record's bit 3). */
static void sd_rel_times(uint8_t *r, size_t n)
{
    fz_rec_layout l;
    ULONGLONG created = (ULONGLONG)0 - FZ_SECOND;
    if (!fz_rec_parse(r, n, &l)) return;
    fz_put64(r + l.times, created);
    fz_put64(r + l.times + 8, 10ULL * 86400ULL * FZ_SECOND);
    fz_put64(r + l.times + 16, fz_get32(r + l.creator + 2 * l.n_creator) ? created + 1 : created);
}

/* Reads every message the library sent on s; keeps FLOOD records and BATCH bodies. */
static void sd_collect(PEER_SOCKET s, rxbuf *r)
{
    static msg m;
    while (recv_msg_all(s, r, &m) > 0) {
        if (m.b[5] == 0x0B && *sd_ncur < SD_MAX_RECS) {
            size_t off = ((size_t)m.b[8] << 8) | m.b[9];
            srec *x = &sd_cur[(*sd_ncur)++];
            x->n = m.n - off;
            x->p = (uint8_t *)malloc(x->n);
            FZ_CHECK(x->p != NULL);
            memcpy(x->p, m.b + off, x->n);
            x->what = sd_kind(x->p);
        } else if (m.b[5] == 0x80 && sd_nbatch < 8 && sd_cur == sd_recs) {
            sb_add(&sd_batch[sd_nbatch++], m.b + 8, m.n - 8);
        }
    }
}

static ULONGLONG sd_alice_node, sd_alice_fast_node;

/* A library node "Alice" of graph `graph` with records (fast profile for
 * "F"); a raw peer asks it for everything (plain, then with BATCH), then
 * sees an update and a delete. */
static void sd_capture(const char *graph)
{
    const int fast = !strcmp(graph, "F");
    wchar_t wgraph[8];
    PEER_GRAPH_PROPERTIES p;
    HGRAPH a;
    SOCKADDR_IN6 la;
    PEER_SOCKET s1, s2;
    static rxbuf r1, r2;
    static msg m;
    PEER_RECORD rec;
    GUID id3;
    PPEER_RECORD pr;
    ULONGLONG exp;
    HPEERENUM en;
    ULONG k = 1;
    PVOID *items;
    size_t i;
    fz_lib_start();
    fz_widen(graph, wgraph, 8);
    sd_cur = fast ? sd_frecs : sd_recs;
    sd_ncur = fast ? &sd_nfrecs : &sd_nrecs;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = wgraph;
    p.pwzCreatorId = (PWSTR)L"Alice";
    p.pwzFriendlyName = (PWSTR)L"seed graph";
    p.pwzComment = (PWSTR)L"records for the fuzz seeds";
    p.ulPresenceLifetime = 30u * 86400u; /* presence records valid as long as the others */
    p.cPresenceMax = (ULONG)-1;
    PeerGraphDelete(wgraph, L"Alice", L"seedcapture");
    FZ_CHECK(PeerGraphCreate(&p, L"seedcapture", NULL, &a) == S_OK);
    if (fast) FZ_CHECK(PeerGraphSetMaintenanceProfile(a, PEER_MAINTENANCE_FAST) == S_OK);
    PeerGraphSetNodeAttributes(a, L"node attributes of Alice");
    fz_add_record(a, 1, "first record", fz_attrs1, 30);
    fz_add_record(a, 2, "second", fz_attrs2, 30);
    memset(&rec, 0, sizeof rec);
    rec.dwSize = sizeof rec;
    rec.type.Data1 = 0xF0220003u;
    exp = fz_peer_now(a) + 30ULL * 86400ULL * FZ_SECOND;
    rec.ftExpiration.dwLowDateTime = (DWORD)exp;
    rec.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    rec.data.cbData = 5;
    rec.data.pbData = (PBYTE)"\x00\x01\x02\xFE\xFF";
    rec.securityData.cbData = 3;
    rec.securityData.pbData = (PBYTE)"sig";
    FZ_CHECK(PeerGraphAddRecord(a, &rec, &id3) == S_OK);
    la = fz_listen(a);
    fz_pump(200, 1000); /* signature and contact records */
    *(fast ? &sd_alice_fast_node : &sd_alice_node) = local_node(a);

    s1 = fz_raw_join(&la, 2, 0, fast ? 0x20 : 0x00, graph, 0x77);
    fz_pump(2, 1);
    memset(&r1, 0, sizeof r1);
    hdr(&m, 0x06); p8(&m, 0); p8(&m, 0); p16(&m, 12); fin(&m);
    fz_send(s1, &m);
    fz_pump(3, 1);
    sd_collect(s1, &r1);

    s2 = fz_raw_join(&la, 2, 0, fast ? 0x38 : 0x18, graph, 0x78);
    fz_pump(2, 1);
    memset(&r2, 0, sizeof r2);
    fz_send(s2, &m);
    fz_pump(3, 1);
    sd_collect(s2, &r2);

    /* an update (Last Modified By set) and a tombstone reach both links */
    FZ_CHECK(PeerGraphGetRecord(a, &id3, &pr) == S_OK);
    pr->data.cbData = 2;
    FZ_CHECK(PeerGraphUpdateRecord(a, pr) == S_OK);
    PeerGraphFreeData(pr);
    FZ_CHECK(PeerGraphEnumRecords(a, NULL, NULL, &en) == S_OK);
    FZ_CHECK(PeerGraphGetNextItem(en, &k, &items) == S_OK && k == 1);
    FZ_CHECK(PeerGraphDeleteRecord(a, &((PPEER_RECORD)items[0])->id, FALSE) == S_OK);
    PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    fz_pump(2, 1);
    sd_collect(s1, &r1);
    fz_raw_drain(s2, NULL);
    fake_net_raw_close(s1);
    fake_net_raw_close(s2);
    fz_pump(2, PEER_LINGER_MS + 1);
    FZ_CHECK(PeerGraphClose(a) == S_OK);
    PeerGraphDelete(wgraph, L"Alice", L"seedcapture");
    fz_lib_stop();
    for (i = 0; i < *sd_ncur; i++) sd_fix_times(sd_cur[i].p, sd_cur[i].n);
    printf("seeds: graph %s: captured %u records, %u BATCH messages\n", graph, (unsigned)*sd_ncur, (unsigned)sd_nbatch);
}

static const srec *sd_find(const char *what, int nth)
{
    size_t i;
    for (i = 0; i < sd_nrecs; i++)
        if (!strcmp(sd_recs[i].what, what) && nth-- == 0) return &sd_recs[i];
    return NULL;
}

/* ---- strings of tests/test_search.c ---- */
static const wchar_t *const sd_queries[] = {
    L"<peersearch><clause attrib=\"a\" type=\"string\" compare=\"equal\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch xmlns:xs=\"https://www.w3.org/2001/XMLSchema\"><clause attrib=\"a\" type=\"int\">1</clause></peersearch>",
    L"<?xml version=\"1.0\" encoding=\"utf-16\"?>\n<peersearch>\n  <and>\n    <clause compare='less' type='int' attrib='a'>1</clause>\n    <clause attrib = 'b' type = 'string' >x</clause >\n  </and >\n</peersearch>\n",
    L"<peersearch><or><clause attrib=\"a\" type=\"string\">x</clause></or></peersearch>",
    L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause></and></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\"/></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\"></clause></peersearch>",
    L"<peersearch xmlns:xs=\"https://www.w3.org/2001/XMLSchema\"><and><clause attrib=\"peercreatorid\" type=\"string\" compare=\"equal\">James Peters</clause><and><clause attrib=\"peerlastmodificationtime\" type=\"date\" compare=\"greater\">2003-01-31</clause><clause attrib=\"peerlastmodificationtime\" type=\"date\" compare=\"less\">2003-02-28</clause></and></and></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">cats and dogs or &lt;and&gt;</clause></peersearch>",
    L"",
    L"  ",
    L"x",
    L"<peersearch/>",
    L"<peersearch></peersearch>",
    L"<peersearch> </peersearch>",
    L"<PeerSearch><clause attrib=\"a\" type=\"string\">x</clause></PeerSearch>",
    L"<search><clause attrib=\"a\" type=\"string\">x</clause></search>",
    L"<clause attrib=\"a\" type=\"string\">x</clause>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause><clause attrib=\"b\" type=\"string\">y</clause></peersearch>",
    L"<peersearch><and/></peersearch>",
    L"<peersearch><and></and></peersearch>",
    L"<peersearch><or> \n </or></peersearch>",
    L"<peersearch><and><or></or></and></peersearch>",
    L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause><or/></and></peersearch>",
    L"<peersearch><clause attrib=\"a\">x</clause></peersearch>",
    L"<peersearch><clause type=\"string\">x</clause></peersearch>",
    L"<peersearch><clause>x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\" x=\"1\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" attrib=\"b\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\" compare=\"equal\" compare=\"equal\">x</clause></peersearch>",
    L"<peersearch><and x=\"1\"><clause attrib=\"a\" type=\"string\">x</clause></and></peersearch>",
    L"<peersearch a=\"1\"><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch xmlns=\"urn:x\"><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch xmlns:a=\"u\" xmlns:a=\"u\"><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><not><clause attrib=\"a\" type=\"string\">x</clause></not></peersearch>",
    L"<peersearch><And><clause attrib=\"a\" type=\"string\">x</clause></And></peersearch>",
    L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause><foo/></and></peersearch>",
    L"<peersearch><peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x<and/></clause></peersearch>",
    L"<peersearch><and>x<clause attrib=\"a\" type=\"string\">x</clause></and></peersearch>",
    L"<peersearch>x<clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x",
    L"<peersearch><clause attrib=\"a\" type=\"string\"",
    L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause></or></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clauses></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>garbage",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch><peersearch/>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch><!---->",
    L"<peersearch><!-- c --><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\"><![CDATA[x]]></clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">a & b</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"string\">a]]>b</clause></peersearch>",
    L"<peersearch><clause attrib=a type=\"string\">x</clause></peersearch>",
    L"<?xml version=\"9\"?><peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>",
    L"<peersearch><clause attrib=\"a\" type=\"int\"/></peersearch>",
    L"<peersearch><clause attrib=\"empty\" type=\"string\"/></peersearch>",
    L"<peersearch><or><clause attrib=\"a\" type=\"string\">ok</clause><clause attrib=\"b\" type=\"string\">\\q</clause></or></peersearch>",
    L"<peersearch><or><clause attrib=\"b\" type=\"string\">\\q</clause><clause attrib=\"a\" type=\"int\">x</clause></or></peersearch>",
    L"<peersearch><or><clause attrib=\"b\" type=\"string\">\\q</clause></or>junk</peersearch>",
    L"<peersearch><clause attrib=\"&#x6E;\" type=\"&#105;nt\">42</clause></peersearch>",
    L"<peersearch><clause attrib=\"abc\" type=\"string\">v</clause></peersearch>",
    L"<peersearch><clause attrib=\"k\" type=\"string\">v&gt;</clause></peersearch>",
};
static const wchar_t *const sd_attrs[] = {
    L"<attributes></attributes>",
    L"<attributes/>",
    L"<attributes />",
    L"<attributes>\r\n\t </attributes >",
    L"  \n<attributes/>\n\n",
    L"<?xml version=\"1.0\"?><attributes/>",
    L"<?xml version='1.0' encoding='UTF-16' standalone='yes' ?>\n<attributes/>",
    L"<?xml version=\"1.0\" encoding=\"utf-8\"?><attributes/>",
    L"<?xml version=\"1.0\" standalone=\"no\"?><attributes/>",
    L"\xFEFF<attributes/>",
    L"\xFEFF<?xml version=\"1.0\"?><attributes/>",
    L"<attributes xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:a='b'/>",
    L"<attributes><attribute name=\"Priority\" type=\"int\">1</attribute></attributes>",
    L"<attributes>\n  <attribute type='string' name='a'>x</attribute>\n  <attribute  name = \"b\"\ttype\n=\n\"int\" >5</attribute >\n</attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\"></attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\"/></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\" /></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\">1</attribute><attribute name=\"a\" type=\"int\">1</attribute></attributes>",
    L"<attributes><attribute name='a' type='string'>it's \"quoted\"</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\">a > b</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"&#115;tring\">x</attribute></attributes>",
    L"<attributes xmlns:a=\"&lt;&amp;&gt;\"/>",
    L"<attributes><attribute name=\"a&\" type=\"string\">x</attribute></attributes>",
    L"<attributes xmlns:a=\"&bogus;\"/>",
    L"",
    L"   ",
    L"garbage",
    L"<attribute name=\"a\" type=\"string\">x</attribute>",
    L"<Attributes/>",
    L"<ATTRIBUTES></ATTRIBUTES>",
    L"<attributes>",
    L"<attributes",
    L"<attributes></attributes",
    L"<attributes><attribute name=\"a\" type=\"string\">x</attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\">x</attribute>",
    L"<attributes><attribute name=\"a\" type=\"string\">x",
    L"<attributes><attribute name=\"a\" type=\"string\"",
    L"<attributes><attribute name=\"a",
    L"<attributes></attribute>",
    L"<attributes></Attributes>",
    L"<attributes/>x",
    L"<attributes/><attributes/>",
    L"<attributes></attributes>garbage",
    L"x<attributes/>",
    L"<attributes>text</attributes>",
    L"<attributes>x<attribute name=\"a\" type=\"string\"/></attributes>",
    L"<attributes><foo/></attributes>",
    L"<attributes><attributex name=\"a\" type=\"string\"/></attributes>",
    L"<attributes><Attribute name=\"a\" type=\"string\"/></attributes>",
    L"<attributes><attributes/></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\">a<b/>c</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\"><attribute name=\"b\" type=\"string\"/></attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\">a</attribute x></attributes>",
    L"< attributes/>",
    L"<attributes/ >",
    L"<!-- c --><attributes/>",
    L"<attributes><!-- c --></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\"><![CDATA[x]]></attribute></attributes>",
    L"<attributes><?pi x?></attributes>",
    L"<?pi x?><attributes/>",
    L"<!DOCTYPE attributes><attributes/>",
    L"<attributes/><!-- c -->",
    L" <?xml version=\"1.0\"?><attributes/>",
    L"<?xml?><attributes/>",
    L"<?xml ?><attributes/>",
    L"<?xml version=\"2.0\"?><attributes/>",
    L"<?xml version=\"1.\"?><attributes/>",
    L"<?xml encoding=\"UTF-8\"?><attributes/>",
    L"<?xml version=\"1.0\" standalone=\"maybe\"?><attributes/>",
    L"<?xml version=\"1.0\" standalone=\"yes\" encoding=\"UTF-8\"?><attributes/>",
    L"<?xml version=\"1.0\" encoding=\"8bit\"?><attributes/>",
    L"<?xml version=\"1.0\" foo=\"x\"?><attributes/>",
    L"<?xml version=\"1.0\"><attributes/>",
    L"<?xml version=\"1.0\"?><?xml version=\"1.0\"?><attributes/>",
    L"<?xml version=\"1.0\"?>",
    L"<attributes><attribute name=\"a\" type=\"string\" x=\"1\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a\">v</attribute></attributes>",
    L"<attributes><attribute type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute>v</attribute></attributes>",
    L"<attributes><attribute name=\"a\" name=\"b\" type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\" type=\"int\">1</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\" name=\"a\">v</attribute></attributes>",
    L"<attributes><attribute name=a type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a\"type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a' type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\" =\"x\">v</attribute></attributes>",
    L"<attributes><attribute name \"a\" type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\" Name=\"b\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a<\" type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute xmlns:x=\"u\" name=\"a\" type=\"string\">v</attribute></attributes>",
    L"<attributes><attribute name=\"a\" type=\"string\"></attribute ></attributes >x",
    L"<attributes a=\"1\"/>",
    L"<attributes xmlns=\"urn:x\"/>",
    L"<attributes xmlns:=\"urn:x\"/>",
    L"<attributes xmlns:a:b=\"urn:x\"/>",
    L"<attributes xmlns:a=\"\"/>",
    L"<attributes xmlns:a=\"u\" xmlns:a=\"v\"/>",
    L"<attributes xmlns:a=\"u\"xmlns:b=\"v\"/>",
    L"<attributes><attribute name=\"a\" type=\"int\"/></attributes>",
    L"<attributes><attribute name=\"a\" type=\"date\"/></attributes>",
    L"<attributes xmlns:a=\"x\x01\"/>",
    L"<attributes>\x01</attributes>",
    L"<attributes>\xA0</attributes>",
};

/* ---- fuzz_record ---------------------------------------------------------- */

static void sd_record_input(const char *name, unsigned mode, unsigned ext, unsigned count, const uint8_t *p, size_t n)
{
    sbuf b = {0};
    sb_byte(&b, mode);
    sb_byte(&b, ext);
    sb_byte(&b, count);
    sb_add(&b, p, n);
    sd_put("fuzz_record", name, b.p, b.n);
    sb_free(&b);
}

static void sd_record(void)
{
    sbuf all = {0}, apps = {0};
    char name[80];
    size_t i;
    for (i = 0; i < sd_nrecs; i++) {
        const srec *x = &sd_recs[i];
        uint8_t *rel = (uint8_t *)malloc(x->n);
        FZ_CHECK(rel != NULL);
        snprintf(name, sizeof name, "flood-%s-%u", x->what, (unsigned)i);
        sd_record_input(name, 0x00, 0x00, 0, x->p, x->n);
        memcpy(rel, x->p, x->n);
        sd_rel_times(rel, x->n);
        snprintf(name, sizeof name, "flood-reltimes-%s-%u", x->what, (unsigned)i);
        /* Graph Info and Signature have fixed IDs: no ID fix for them */
        sd_record_input(name, strcmp(x->what, "graphinfo") && strcmp(x->what, "signature") ? 0x0C : 0x08, 0x00, 0, rel,
                        x->n);
        free(rel);
        sb_add(&all, x->p, x->n);
        if (!strcmp(x->what, "app")) {
            snprintf(name, sizeof name, "flood-sync-api-%u", (unsigned)i);
            sd_record_input(name, 0x70, 0x18, 0, x->p, x->n);
            sb_add(&apps, x->p, x->n);
        }
    }
    sd_record_input("floods-all", 0x01, 0x00, 0, all.p, all.n);
    sd_record_input("floods-all-api", 0x21, 0x01, 0, all.p, all.n);
    sd_record_input("floods-apps-stepped-sync", 0x53, 0x08, 0, apps.p, apps.n);
    for (i = 0; i < sd_nbatch; i++) {
        const sbuf *b = &sd_batch[i];
        unsigned count = ((unsigned)b->p[0] << 8) | b->p[1];
        snprintf(name, sizeof name, "batch-%u", (unsigned)i);
        sd_record_input(name, 0x02, 0x18, count & 0xFF, b->p + 4, b->n - 4);
        snprintf(name, sizeof name, "batch-sync-api-%u", (unsigned)i);
        sd_record_input(name, 0x32, 0x18, count & 0xFF, b->p + 4, b->n - 4);
    }
    sb_free(&all);
    sb_free(&apps);
}

/* ---- fuzz_wire ------------------------------------------------------------ */

static void m_flood(msg *m, const srec *x)
{
    hdr(m, 0x0B);
    p16(m, 12);
    p16(m, 0);
    memcpy(m->b + m->n, x->p, x->n);
    m->n += x->n;
    fin(m);
}
static void m_solicit(msg *m, int type, const uint8_t *incl)
{
    hdr(m, type);
    p8(m, incl ? 1 : 0);
    p8(m, 0);
    p16(m, type == 6 ? 12 : 20);
    if (type == 7) p64(m, FZ_UTC_BASE - 3600ULL * FZ_SECOND);
    if (type == 8) {
        static const uint8_t md5_empty[16] = {0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04,
                                              0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e};
        p32(m, 1);
        p16(m, incl ? 36 : 20);
        p16(m, 0);
        if (incl) { memcpy(m->b + m->n, incl, 16); m->n += 16; }
        memcpy(m->b + m->n, md5_empty, 16);
        m->n += 16;
        memset(m->b + m->n, 0, 24);
        m->n += 24;
    } else if (incl) {
        memcpy(m->b + m->n, incl, 16);
        m->n += 16;
    }
    fin(m);
}
static void m_pt2pt(msg *m, unsigned flags, const char *data, int total)
{
    static const uint8_t type[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8};
    hdr(m, 0x0D);
    p16(m, total >= 0 ? 32 : 28);
    p16(m, flags);
    memcpy(m->b + m->n, type, 16);
    m->n += 16;
    if (total >= 0) p32(m, (unsigned long)total);
    memcpy(m->b + m->n, data, strlen(data));
    m->n += strlen(data);
    fin(m);
}
static void m_ping(msg *m)
{
    static const uint8_t ping[16] = {0x0c, 0xcb, 0xb0, 0xd2, 0xbe, 0x41, 0x4b, 0xd6,
                                     0x91, 0x4b, 0x05, 0x8e, 0xc5, 0xdc, 0xce, 0x64};
    hdr(m, 0x0D);
    p16(m, 28);
    p16(m, 0);
    memcpy(m->b + m->n, ping, 16);
    m->n += 16;
    fin(m);
}
static void m_ack(msg *m, const srec *x)
{
    hdr(m, 0x0E);
    p16(m, 2);
    p16(m, 12);
    memcpy(m->b + m->n, x->p + 16, 16);
    m->n += 16;
    p32(m, 1);
    memset(m->b + m->n, 0x5A, 16);
    m->n += 16;
    p32(m, 0);
    fin(m);
}
static void m_departed(msg *m, ULONGLONG node, int withVersion)
{
    hdr(m, 0x81);
    p64(m, node);
    if (withVersion) p32(m, 1);
    fin(m);
}
/* several entries in one message (PROTOCOL.md section 4) */
static void m_departed_many(msg *m, const ULONGLONG *nodes, int k)
{
    int i;
    hdr(m, 0x81);
    for (i = 0; i < k; i++) {
        p64(m, nodes[i]);
        p32(m, (unsigned long)(i + 1));
    }
    fin(m);
}

/* RENEW (PROTOCOL.md P19): one entry per record, each renewing its version
 * with times a day later; then a WANT of the same records. */
static void m_renew_want(msg *m, msg *w, const srec *r, size_t k)
{
    size_t i;
    hdr(m, 0x82);
    hdr(w, 0x83);
    for (i = 0; i < k; i++) {
        unsigned long v = fz_get32(r[i].p + 32);
        memcpy(m->b + m->n, r[i].p + 16, 16);
        m->n += 16;
        p32(m, v);
        p32(m, v + 1);
        p32(m, 1); /* Last Modified By: the creator */
        p64(m, FZ_UTC_BASE + 86400ULL * FZ_SECOND);
        p64(m, FZ_UTC_BASE + 31ULL * 86400ULL * FZ_SECOND);
        memcpy(w->b + w->n, r[i].p + 16, 16);
        w->n += 16;
    }
    fin(m);
    fin(w);
}

/* Writes a fuzz_wire input: mode, [ext], split offsets, payload. */
static void sd_wire_input(const char *name, unsigned mode, unsigned ext, const unsigned *cuts, const sbuf *payload)
{
    sbuf b = {0};
    unsigned i;
    sb_byte(&b, mode);
    if (mode & 3) sb_byte(&b, ext);
    for (i = 0; i < ((mode >> 4) & 3); i++) {
        sb_byte(&b, cuts[i] >> 8);
        sb_byte(&b, cuts[i] & 0xFF);
    }
    sb_add(&b, payload->p, payload->n);
    sd_put("fuzz_wire", name, b.p, b.n);
    sb_free(&b);
}

static void sd_wire(void)
{
    static msg m;
    sbuf pl = {0};
    static const SOCKADDR_IN6 *none = NULL;
    SOCKADDR_IN6 adv[2];
    const srec *app = sd_find("app", 0), *pres = sd_find("presence", 0), *gi = sd_find("graphinfo", 0);
    const srec *sig = sd_find("signature", 0), *con = sd_find("contact", 0);
    static const unsigned cuts[3] = {3, 40, 41};
    static const uint8_t app_type[16] = {0xF0, 0x22, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 1};
    size_t i;
    (void)none;
    adv[0] = fake_net_addr6("2001:db8::5", 4242);
    adv[1] = fake_net_addr_v4mapped(192, 0, 2, 7, 4243);
    FZ_CHECK(app && pres && gi);

    /* the whole handshake in the payload, frames included */
    pl.n = 0;
    m_auth(&m, 1, 0x00, "G", "Alice", NULL); sb_frames(&pl, &m);
    m_connect(&m, 0x01, 0x77, NULL, 0, NULL); sb_frames(&pl, &m);
    m_solicit(&m, 6, NULL); sb_frames(&pl, &m);
    m_sync_end(&m); sb_frames(&pl, &m);
    sd_wire_input("raw-handshake-solicit", 0x00, 0, NULL, &pl);
    sd_wire_input("raw-handshake-split", 0x30, 0, cuts, &pl);
    sd_wire_input("raw-handshake-reset", 0x80, 0, NULL, &pl);

    pl.n = 0;
    m_auth(&m, 1, 0x3F, "F", "Alice", "Bob"); sb_frames(&pl, &m);
    m_connect(&m, 0x01, 0x78, adv, 2, "alice's box"); sb_frames(&pl, &m);
    m_solicit(&m, 7, NULL); sb_frames(&pl, &m);
    m_ping(&m); sb_frames(&pl, &m);
    sd_wire_input("raw-handshake-fast-ext", 0x04, 0, NULL, &pl);

    pl.n = 0;
    m_auth(&m, 1, 0x01, "Nope", "Alice", "Bob"); sb_frames(&pl, &m);
    sd_wire_input("raw-auth-unknown-graph", 0x00, 0, NULL, &pl);
    pl.n = 0;
    m_auth(&m, 1, 0x01, "G", "Alice", "Zed"); sb_frames(&pl, &m);
    sd_wire_input("raw-auth-unknown-peer", 0x00, 0, NULL, &pl);
    pl.n = 0;
    m_auth(&m, 2, 0x00, "G", "Alice", NULL); sb_frames(&pl, &m);
    m_connect(&m, 0x04, 0x79, NULL, 0, NULL); sb_frames(&pl, &m);
    m_pt2pt(&m, 0, "direct data", -1); sb_frames(&pl, &m);
    sd_wire_input("raw-direct-data", 0x00, 0, NULL, &pl);

    /* AUTH_INFO by the harness: CONNECT variants (message bytes, framed by the harness) */
    pl.n = 0;
    m_connect(&m, 0x01, 0x7A, adv, 2, "box"); sb_msg(&pl, &m);
    sd_wire_input("auth-connect-addrs", 0x09, 0x01, NULL, &pl);
    pl.n = 0;
    m_connect(&m, 0x00, 0x7B, NULL, 0, NULL); sb_msg(&pl, &m);
    m_solicit(&m, 6, app_type); sb_msg(&pl, &m);
    sd_wire_input("auth-connect-fast", 0x0D, 0x3F, NULL, &pl);

    /* CONNECTED: record-layer messages */
    pl.n = 0;
    m_flood(&m, app); sb_msg(&pl, &m);
    m_flood(&m, pres); sb_msg(&pl, &m);
    m_ack(&m, app); sb_msg(&pl, &m);
    m_solicit(&m, 6, app_type); sb_msg(&pl, &m);
    m_sync_end(&m); sb_msg(&pl, &m);
    m_pt2pt(&m, 0, "application data", -1); sb_msg(&pl, &m);
    m_ping(&m); sb_msg(&pl, &m);
    sd_wire_input("conn-flood-ack-solicit-data", 0x0A, 0x00, NULL, &pl);
    sd_wire_input("conn-flood-ack-solicit-data-split", 0x3A, 0x00, cuts, &pl);

    pl.n = 0;
    for (i = 0; i < sd_nrecs; i++) { m_flood(&m, &sd_recs[i]); sb_msg(&pl, &m); }
    m_solicit(&m, 8, NULL); sb_msg(&pl, &m);
    sd_wire_input("conn-every-record-hash", 0x0A, 0x00, NULL, &pl);

    pl.n = 0;
    if (gi) { m_flood(&m, gi); sb_msg(&pl, &m); }
    if (sig) { m_flood(&m, sig); sb_msg(&pl, &m); }
    if (con) { m_flood(&m, con); sb_msg(&pl, &m); }
    m_solicit(&m, 7, NULL); sb_msg(&pl, &m);
    hdr(&m, 0x0A); p32(&m, 1); p32(&m, 16); memcpy(m.b + m.n, app->p + 16, 16); m.n += 16; p32(&m, 1); fin(&m);
    sb_msg(&pl, &m); /* REQUEST before any ADVERTISE: a protocol error */
    sd_wire_input("conn-internal-records", 0x0A, 0x02, NULL, &pl);

    pl.n = 0;
    m_solicit(&m, 8, NULL); sb_msg(&pl, &m);
    hdr(&m, 0x0A); p32(&m, 1); p32(&m, 16); memcpy(m.b + m.n, app->p + 16, 16); m.n += 16; p32(&m, 1); fin(&m);
    sb_msg(&pl, &m);
    sd_wire_input("conn-hash-request", 0x0A, 0x00, NULL, &pl);

    for (i = 0; i < sd_nbatch; i++) {
        char name[64];
        pl.n = 0;
        hdr(&m, 0x80);
        memcpy(m.b + m.n, sd_batch[i].p, sd_batch[i].n);
        m.n += sd_batch[i].n;
        fin(&m);
        sb_msg(&pl, &m);
        m_sync_end(&m); sb_msg(&pl, &m);
        snprintf(name, sizeof name, "conn-batch-%u", (unsigned)i);
        sd_wire_input(name, 0x0A, 0x18, NULL, &pl);
    }

    /* fast graph: Alice's presence, her departure, fragments */
    pl.n = 0;
    for (i = 0; i < sd_nfrecs; i++) { m_flood(&m, &sd_frecs[i]); sb_msg(&pl, &m); }
    m_departed(&m, sd_alice_fast_node, 1); sb_msg(&pl, &m);
    m_departed(&m, sd_alice_fast_node, 0); sb_msg(&pl, &m);
    m_departed(&m, 0x1234, 1); sb_msg(&pl, &m);
    {
        ULONGLONG many[3];
        many[0] = 0x1234;
        many[1] = sd_alice_fast_node;
        many[2] = 0x5678ULL;
        m_departed_many(&m, many, 3); sb_msg(&pl, &m);
    }
    m_pt2pt(&m, 1, "first fragment ", 31); sb_msg(&pl, &m);
    m_ping(&m); sb_msg(&pl, &m);
    m_pt2pt(&m, 0, "second fragment", -1); sb_msg(&pl, &m);
    sd_wire_input("fast-departed-fragments", 0x0E, 0x3F, NULL, &pl);
    sd_wire_input("fast-departed-fragments-reset", 0x8E, 0x3F, NULL, &pl);

    /* fast graph: Alice's records, renewed (RENEW), then asked for (WANT) */
    pl.n = 0;
    for (i = 0; i < sd_nfrecs; i++) { m_flood(&m, &sd_frecs[i]); sb_msg(&pl, &m); }
    {
        static msg w;
        m_renew_want(&m, &w, sd_frecs, sd_nfrecs);
        sb_msg(&pl, &m);
        sb_msg(&pl, &w);
    }
    sd_wire_input("fast-renew-want", 0x0E, 0x3F, NULL, &pl);

    /* update of our addresses, then goodbye */
    pl.n = 0;
    m_connect(&m, 0x09, 0x7C, adv, 1, NULL); sb_msg(&pl, &m);
    m_simple(&m, 5, 1, adv, 2); sb_msg(&pl, &m);
    sd_wire_input("conn-update-disconnect", 0x0A, 0x00, NULL, &pl);

    /* initiator role: the library connected to the raw peer */
    pl.n = 0;
    m_welcome(&m, 0x4242, FZ_UTC_BASE, adv, 1, "Alice", 0x00); sb_frames(&pl, &m);
    for (i = 0; i < sd_nrecs; i++) { m_flood(&m, &sd_recs[i]); sb_frames(&pl, &m); }
    m_sync_end(&m); sb_frames(&pl, &m);
    sd_wire_input("init-raw-welcome-floods", 0x40, 0, NULL, &pl);
    pl.n = 0;
    m_simple(&m, 4, 1, adv, 2); sb_frames(&pl, &m);
    sd_wire_input("init-raw-refuse-busy", 0x40, 0, NULL, &pl);
    pl.n = 0;
    m_simple(&m, 4, 0x81, NULL, 0); sb_frames(&pl, &m);
    sd_wire_input("init-raw-refuse-ext", 0x44, 0, NULL, &pl);
    pl.n = 0;
    m_simple(&m, 5, 1, adv, 1); sb_frames(&pl, &m);
    sd_wire_input("init-raw-disconnect", 0x40, 0, NULL, &pl);

    pl.n = 0; /* WELCOME by the harness: answers to SOLICIT_TIME, then an ADVERTISE */
    m_flood(&m, app); sb_msg(&pl, &m);
    m_sync_end(&m); sb_msg(&pl, &m);
    sd_wire_input("init-welcome-time-answer", 0x49, 0x00, NULL, &pl);
    for (i = 0; i < sd_nbatch; i++) {
        char name[64];
        pl.n = 0;
        hdr(&m, 0x80);
        memcpy(m.b + m.n, sd_batch[i].p, sd_batch[i].n);
        m.n += sd_batch[i].n;
        fin(&m);
        sb_msg(&pl, &m);
        m_sync_end(&m); sb_msg(&pl, &m);
        snprintf(name, sizeof name, "init-welcome-batch-answer-%u", (unsigned)i);
        sd_wire_input(name, 0x49, 0x18, NULL, &pl);
    }
    pl.n = 0; /* WELCOME and SYNC_END by the harness: the hash sync */
    hdr(&m, 0x09);
    p32(&m, 1); /* one boundary */
    p32(&m, 2); /* two abstracts */
    p16(&m, 24);
    p16(&m, 0);
    p32(&m, 24 + 52);
    memset(m.b + m.n, 0, 24); m.n += 24;          /* lower bound */
    p64(&m, FZ_UTC_BASE + 86400ULL * FZ_SECOND);  /* upper bound */
    memset(m.b + m.n, 0xFF, 16); m.n += 16;
    p32(&m, 2);
    memcpy(m.b + m.n, app->p + 16, 16); m.n += 16; p32(&m, 1);
    memset(m.b + m.n, 0x11, 16); m.n += 16; p32(&m, 3);
    fin(&m);
    sb_msg(&pl, &m);
    m_flood(&m, app); sb_msg(&pl, &m);
    m_sync_end(&m); sb_msg(&pl, &m);
    m_ack(&m, app); sb_msg(&pl, &m);
    sd_wire_input("init-hash-advertise", 0x4A, 0x00, NULL, &pl);
    sd_wire_input("init-hash-advertise-split", 0x7A, 0x08, cuts, &pl);

    pl.n = 0; /* fast graph, every capability */
    for (i = 0; i < sd_nfrecs; i++) { m_flood(&m, &sd_frecs[i]); sb_msg(&pl, &m); }
    m_sync_end(&m); sb_msg(&pl, &m);
    m_departed(&m, sd_alice_fast_node, 1); sb_msg(&pl, &m);
    m_pt2pt(&m, 1, "first fragment ", 31); sb_msg(&pl, &m);
    m_pt2pt(&m, 0, "second fragment", -1); sb_msg(&pl, &m);
    sd_wire_input("init-fast-all", 0x4D, 0x3F, NULL, &pl);

    pl.n = 0; /* direct */
    m_pt2pt(&m, 0, "direct", -1); sb_msg(&pl, &m);
    m_pt2pt(&m, 1, "frag one ", 17); sb_msg(&pl, &m);
    m_pt2pt(&m, 0, "frag two", -1); sb_msg(&pl, &m);
    m_simple(&m, 5, 3, NULL, 0); sb_msg(&pl, &m);
    sd_wire_input("init-direct-data", 0x4B, 0x04, NULL, &pl);
    sd_wire_input("init-direct-data-reset", 0xCB, 0x00, NULL, &pl);

    /* direct link: data, fragments, close */
    pl.n = 0;
    m_pt2pt(&m, 0, "direct", -1); sb_msg(&pl, &m);
    m_pt2pt(&m, 1, "frag one ", 17); sb_msg(&pl, &m);
    m_pt2pt(&m, 0, "frag two", -1); sb_msg(&pl, &m);
    m_simple(&m, 5, 3, NULL, 0); sb_msg(&pl, &m);
    sd_wire_input("direct-data-fragments", 0x0B, 0x04, NULL, &pl);
    sb_free(&pl);
}

/* ---- fuzz_search ---------------------------------------------------------- */

/* Encodes w as mode's encoding (bits 0-1). */
static void sd_text(sbuf *b, const wchar_t *w, unsigned enc)
{
    for (; *w; w++) {
        uint32_t c = (uint32_t)*w;
#if WCHAR_MAX <= 0xFFFF
        if (c >= 0xD800 && c <= 0xDBFF && w[1] >= 0xDC00 && w[1] <= 0xDFFF) {
            c = 0x10000 + ((c - 0xD800) << 10) + ((uint32_t)w[1] - 0xDC00);
            w++;
        }
#endif
        if (enc == 0) sb_byte(b, c & 0xFF);
        else if (enc == 1) {
            if (c >= 0x10000) {
                uint32_t h = 0xD800 + ((c - 0x10000) >> 10), l = 0xDC00 + ((c - 0x10000) & 0x3FF);
                sb_byte(b, h & 0xFF); sb_byte(b, h >> 8); sb_byte(b, l & 0xFF); sb_byte(b, l >> 8);
            } else {
                sb_byte(b, c & 0xFF);
                sb_byte(b, c >> 8);
            }
        } else if (enc == 3) {
            sb_byte(b, c & 0xFF); sb_byte(b, (c >> 8) & 0xFF); sb_byte(b, (c >> 16) & 0xFF); sb_byte(b, c >> 24);
        } else if (c < 0x80) sb_byte(b, c);
        else if (c < 0x800) { sb_byte(b, 0xC0 | (c >> 6)); sb_byte(b, 0x80 | (c & 0x3F)); }
        else if (c < 0x10000) { sb_byte(b, 0xE0 | (c >> 12)); sb_byte(b, 0x80 | ((c >> 6) & 0x3F)); sb_byte(b, 0x80 | (c & 0x3F)); }
        else { sb_byte(b, 0xF0 | (c >> 18)); sb_byte(b, 0x80 | ((c >> 12) & 0x3F)); sb_byte(b, 0x80 | ((c >> 6) & 0x3F)); sb_byte(b, 0x80 | (c & 0x3F)); }
    }
}

static int sd_is_latin1(const wchar_t *w)
{
    for (; *w; w++)
        if ((uint32_t)*w > 0xFF) return 0;
    return 1;
}

static void sd_search_input(const char *name, unsigned mode, const wchar_t *a, const wchar_t *b)
{
    sbuf s = {0};
    unsigned enc = mode & 3;
    sb_byte(&s, mode);
    sd_text(&s, a, enc);
    if (b) {
        static const wchar_t nul[2] = {1, 0};
        size_t before = s.n;
        sd_text(&s, nul, enc); /* a NUL unit in that encoding */
        memset(s.p + before, 0, s.n - before);
        sd_text(&s, b, enc);
    }
    sd_put("fuzz_search", name, s.p, s.n);
    sb_free(&s);
}

static void sd_search(void)
{
    char name[64];
    size_t i;
    for (i = 0; i < sizeof sd_queries / sizeof sd_queries[0]; i++) {
        unsigned enc = sd_is_latin1(sd_queries[i]) ? 0 : 2;
        snprintf(name, sizeof name, "query-%03u", (unsigned)i);
        sd_search_input(name, 0x00 | enc, sd_queries[i], NULL);
    }
    for (i = 0; i < sizeof sd_attrs / sizeof sd_attrs[0]; i++) {
        unsigned enc = sd_is_latin1(sd_attrs[i]) ? 0 : 2;
        snprintf(name, sizeof name, "attrs-%03u", (unsigned)i);
        sd_search_input(name, 0x04 | enc, sd_attrs[i], NULL);
    }
    sd_search_input("attrs-sample-utf16", 0x05, fz_attrs1, NULL);
    sd_search_input("attrs-sample2-utf8", 0x06, fz_attrs2, NULL);
    sd_search_input("attrs-sample2-ucs4", 0x07, fz_attrs2, NULL);
    sd_search_input("update-sample", 0x0C, fz_attrs1, NULL);
    sd_search_input("add-then-query", 0x08, fz_attrs1,
                    L"<peersearch><or><clause attrib=\"s\" type=\"string\">Hello*</clause>"
                    L"<clause attrib=\"n\" type=\"int\" compare=\"lessorequal\">42</clause></or></peersearch>");
    sd_search_input("add-then-query-date", 0x0A, fz_attrs2,
                    L"<peersearch><and><clause attrib=\"a\" type=\"string\">it?s*</clause>"
                    L"<clause attrib=\"peercreationtime\" type=\"date\" compare=\"greater\">2000-01-01T00:00:00Z</clause>"
                    L"</and></peersearch>");
    sd_search_input("query-reserved-utf16", 0x01,
                    L"<peersearch><clause attrib=\"peerrecordtype\" type=\"string\">{f0220001-1234-5678-0000-000000000001}"
                    L"</clause></peersearch>", NULL);
}

/* ---- fuzz_dbfile ---------------------------------------------------------- */

static void sd_dbfile_input(const char *name, unsigned mode, const char *path, size_t cut)
{
    FILE *f = fopen(path, "rb");
    sbuf b = {0};
    uint8_t buf[4096];
    size_t k;
    FZ_CHECK(f != NULL);
    sb_byte(&b, mode);
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) sb_add(&b, buf, k);
    fclose(f);
    if (cut && b.n > cut) b.n -= cut;
    sd_put("fuzz_dbfile", name, b.p, b.n);
    sb_free(&b);
}

static void sd_db_path(const char *graph, const char *peer, const char *name, char *out, size_t n)
{
    uint8_t buf[256], h[16];
    size_t lg = strlen(graph), lp = strlen(peer);
    memcpy(buf, graph, lg + 1);
    memcpy(buf + lg + 1, peer, lp);
    fz_md5(buf, lg + lp + 1, h);
    snprintf(out, n, "%s/%s.%02x%02x%02x%02x%02x%02x%02x%02x.p2pg", fz_db_dir(), name, h[0], h[1], h[2], h[3], h[4],
             h[5], h[6], h[7]);
}

static void sd_dbfile(void)
{
    PEER_GRAPH_PROPERTIES p;
    PPEER_GRAPH_PROPERTIES pp;
    HGRAPH c, j, e;
    SOCKADDR_IN6 la;
    PEER_ADDRESS pa;
    ULONGLONG cid;
    PEER_RECORD rec;
    GUID id;
    PPEER_RECORD pr;
    ULONGLONG exp;
    char path[600], xpath[600];
    wchar_t wx[600];
    DWORD st = 0;
    int i;
    fz_lib_start();
    snprintf(xpath, sizeof xpath, "%s/seed-export.bin", fz_db_dir());
    fz_widen(xpath, wx, 600);

    /* the creator's database: records added, updated, deleted, dropped; properties changed */
    c = fz_create(L"G", L"P", L"seedcreator", 0);
    fz_add_record(c, 1, "first record", fz_attrs1, 30);
    fz_add_record(c, 2, "second", fz_attrs2, 30);
    memset(&rec, 0, sizeof rec);
    rec.dwSize = sizeof rec;
    rec.type.Data1 = 0xF0220003u;
    exp = fz_peer_now(c) + 30ULL * 86400ULL * FZ_SECOND;
    rec.ftExpiration.dwLowDateTime = (DWORD)exp;
    rec.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    rec.data.cbData = 4;
    rec.data.pbData = (PBYTE)"data";
    rec.securityData.cbData = 3;
    rec.securityData.pbData = (PBYTE)"sec";
    FZ_CHECK(PeerGraphAddRecord(c, &rec, &id) == S_OK);
    FZ_CHECK(PeerGraphGetRecord(c, &id, &pr) == S_OK);
    pr->pwzAttributes = (PWSTR)L"<attributes><attribute name=\"n\" type=\"int\">5</attribute></attributes>";
    FZ_CHECK(PeerGraphUpdateRecord(c, pr) == S_OK);
    PeerGraphFreeData(pr);
    FZ_CHECK(PeerGraphAddRecord(c, &rec, &id) == S_OK);
    FZ_CHECK(PeerGraphDeleteRecord(c, &id, FALSE) == S_OK); /* a tombstone */
    FZ_CHECK(PeerGraphAddRecord(c, &rec, &id) == S_OK);
    FZ_CHECK(PeerGraphDeleteRecord(c, &id, TRUE) == S_OK); /* a DROP entry */
    FZ_CHECK(PeerGraphGetProperties(c, &pp) == S_OK);
    pp->pwzFriendlyName = (PWSTR)L"renamed \u00e9";
    pp->pwzComment = (PWSTR)L"a comment";
    FZ_CHECK(PeerGraphSetProperties(c, pp) == S_OK);
    PeerGraphFreeData(pp);
    fz_pump(2, 200);
    FZ_CHECK(PeerGraphExportDatabase(c, wx) == S_OK);
    FZ_CHECK(PeerGraphClose(c) == S_OK);
    sd_db_path("G", "P", "seedcreator", path, sizeof path);
    sd_dbfile_input("creator-db", 0x00, path, 0);
    sd_dbfile_input("creator-db-fixsums", 0x07, path, 0);
    sd_dbfile_input("creator-db-export-roundtrip", 0x10, path, 0);
    sd_dbfile_input("creator-db-torn", 0x00, path, 7);
    sd_dbfile_input("creator-export-import", 0x08, xpath, 0);
    sd_dbfile_input("creator-export-import-fixsums", 0x0B, xpath, 0);
    PeerGraphDelete(L"G", L"P", L"seedcreator");
    remove(xpath);

    /* a joiner's database: records of another creator, synchronized, peer time */
    memset(&p, 0, sizeof p);
    c = fz_create(L"G", L"Q", L"seedq", 0);
    fz_add_record(c, 1, "from Q", fz_attrs1, 30);
    fz_add_record(c, 2, "also from Q", fz_attrs2, 30);
    la = fz_listen(c);
    PeerGraphDelete(L"G", L"P", L"seedjoiner");
    FZ_CHECK(PeerGraphOpen(L"G", L"P", L"seedjoiner", NULL, 0, NULL, &j) == PEER_S_GRAPH_DATA_CREATED);
    memset(&pa, 0, sizeof pa);
    pa.dwSize = sizeof pa;
    pa.sin6 = la;
    FZ_CHECK(PeerGraphConnect(j, NULL, &pa, &cid) == S_OK);
    for (i = 0; i < 50 && !(st & PEER_GRAPH_STATUS_SYNCHRONIZED); i++) {
        fz_pump(1, 10);
        FZ_CHECK(PeerGraphGetStatus(j, &st) == S_OK);
    }
    FZ_CHECK(st & PEER_GRAPH_STATUS_SYNCHRONIZED);
    fz_pump(3, 1000);
    FZ_CHECK(PeerGraphExportDatabase(j, wx) == S_OK);
    FZ_CHECK(PeerGraphClose(j) == S_OK);
    FZ_CHECK(PeerGraphClose(c) == S_OK);
    fz_pump(2, PEER_LINGER_MS + 1);
    sd_db_path("G", "P", "seedjoiner", path, sizeof path);
    sd_dbfile_input("joiner-db", 0x00, path, 0);
    sd_dbfile_input("joiner-db-export-roundtrip", 0x13, path, 0);
    sd_dbfile_input("joiner-export-import", 0x08, xpath, 0);
    PeerGraphDelete(L"G", L"P", L"seedjoiner");
    PeerGraphDelete(L"G", L"Q", L"seedq");
    remove(xpath);

    /* an empty, never synchronized database */
    PeerGraphDelete(L"G", L"P", L"seedempty");
    FZ_CHECK(PeerGraphOpen(L"G", L"P", L"seedempty", NULL, 0, NULL, &e) == PEER_S_GRAPH_DATA_CREATED);
    FZ_CHECK(PeerGraphClose(e) == S_OK);
    sd_db_path("G", "P", "seedempty", path, sizeof path);
    sd_dbfile_input("empty-db", 0x00, path, 0);
    sd_dbfile_input("empty-db-as-import", 0x08, path, 0);
    PeerGraphDelete(L"G", L"P", L"seedempty");
    fz_lib_stop();
}

int main(int argc, char **argv)
{
    if (argc > 1) sd_root = argv[1];
    sd_capture("G");
    sd_capture("F");
    sd_record();
    sd_wire();
    sd_search();
    sd_dbfile();
    printf("seeds: %u files under %s\n", sd_count, sd_root);
    return 0;
}
