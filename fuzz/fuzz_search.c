/*
 * fuzz_search.c - libFuzzer target: the search query compiler and matcher
 * (PeerGraphSearchRecords) and the attribute XML validator
 * (PeerGraphAddRecord / PeerGraphUpdateRecord pwzAttributes), section 5b of
 * p2pgraph.c.
 *
 * Graph "S" (peer "Bob", not listening) holds four application records:
 * two with the attribute XML of tests/test_search.c, one without
 * attributes, one with many attributes of every type.
 *
 * Input:
 *   byte 0  mode
 *           bits 0-1  bytes -> wchar_t: 0 one byte each (Latin-1); 1 UTF-16LE
 *                     units, 2 bytes each (lone surrogates kept); 2 UTF-8
 *                     (a malformed byte is taken as Latin-1); 3 4 bytes each,
 *                     little-endian, any value (cut to 16 bits where wchar_t is)
 *           bits 2-3  0 the text is a search query over the four records
 *                     1 the text is the attribute XML of a new record
 *                       (PeerGraphAddRecord), then fixed searches run over
 *                       the five records and the new one is dropped again
 *                     2 up to the first NUL the text is attribute XML (added
 *                       as in 1), after it a search query run over the five
 *                     3 the text replaces the attributes of the fourth record
 *                       (PeerGraphUpdateRecord), fixed searches, restored
 *   rest    the text (a NUL is appended)
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_teardown(void);

#define FS_MAX_CHARS 70000u

static int fs_ready;
static HGRAPH fs_g;
static GUID fs_many_id;
static wchar_t fs_text[FS_MAX_CHARS + 2];

static const wchar_t fs_attrs_many[] =
    L"<attributes xmlns:xs='http://www.w3.org/2001/XMLSchema'>"
    L"<attribute name='a' type='string'>x</attribute>"
    L"<attribute name='b' type='string'>cats and dogs &amp; &#65;&#x42;</attribute>"
    L"<attribute name='n' type='int'>2147483647</attribute>"
    L"<attribute name='m' type='int'>-2147483648</attribute>"
    L"<attribute name='d' type='date'>1999-12-31T23:59:59.999Z</attribute>"
    L"<attribute name='e' type='date'>2026-01-01T00:00:00+01:00</attribute>"
    L"<attribute name='s' type='string'>\u00e9t\u00e9 \U0001F600 *?\\</attribute>"
    L"</attributes>";

static void fs_setup(void)
{
    wchar_t name[64];
    PEER_RECORD r;
    ULONGLONG exp;
    fz_lib_start();
    fs_g = fz_create(L"S", L"Bob", fz_wname(name, 64, "fuzzsearch"), 0);
    fz_add_record(fs_g, 1, "one", fz_attrs1, 30);
    fz_add_record(fs_g, 2, "two", fz_attrs2, 30);
    fz_add_record(fs_g, 3, "no attributes", NULL, 30);
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type.Data1 = 0xF0220004u;
    exp = fz_peer_now(fs_g) + 30ULL * 86400ULL * FZ_SECOND;
    r.ftExpiration.dwLowDateTime = (DWORD)exp;
    r.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    r.pwzAttributes = (PWSTR)fs_attrs_many;
    FZ_CHECK(PeerGraphAddRecord(fs_g, &r, &fs_many_id) == S_OK);
    fs_ready = 1;
}

void fuzz_teardown(void)
{
    wchar_t name[64];
    if (!fs_ready) return;
    fz_close_delete(fs_g, L"S", L"Bob", fz_wname(name, 64, "fuzzsearch"));
    fz_lib_stop();
    fs_ready = 0;
}

/* Appends code point c (as a surrogate pair where wchar_t has 16 bits). */
static size_t fs_put(wchar_t *w, size_t k, uint32_t c)
{
#if WCHAR_MAX <= 0xFFFF
    if (c >= 0x10000 && c <= 0x10FFFF) {
        c -= 0x10000;
        w[k++] = (wchar_t)(0xD800 + (c >> 10));
        w[k++] = (wchar_t)(0xDC00 + (c & 0x3FF));
        return k;
    }
#endif
    w[k++] = (wchar_t)c;
    return k;
}

/* Decodes the input into fs_text; returns its length in wchar_t units. */
static size_t fs_decode(unsigned enc, const uint8_t *d, size_t n)
{
    size_t i = 0, k = 0;
    while (i < n && k < FS_MAX_CHARS) {
        uint32_t c;
        if (enc == 0) c = d[i++];
        else if (enc == 1) {
            if (n - i < 2) break;
            c = (uint32_t)d[i] | ((uint32_t)d[i + 1] << 8);
            i += 2;
        } else if (enc == 3) {
            if (n - i < 4) break;
            c = (uint32_t)d[i] | ((uint32_t)d[i + 1] << 8) | ((uint32_t)d[i + 2] << 16) | ((uint32_t)d[i + 3] << 24);
            i += 4;
        } else {
            uint32_t b = d[i], need = b >= 0xF0 && b < 0xF8 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : 0, j;
            c = need == 3 ? b & 7 : need == 2 ? b & 15 : need == 1 ? b & 31 : b;
            if (b >= 0xF8 || (b >= 0x80 && b < 0xC0) || n - i <= need) need = 0, c = b;
            for (j = 1; j <= need; j++) {
                if ((d[i + j] & 0xC0) != 0x80) { need = 0; c = b; break; }
                c = (c << 6) | (d[i + j] & 0x3F);
            }
            i += 1 + need;
        }
        k = fs_put(fs_text, k, c);
    }
    fs_text[k] = 0;
    return k;
}

static void fs_search(const wchar_t *q)
{
    HPEERENUM en;
    if (PeerGraphSearchRecords(fs_g, q, &en) == S_OK) fz_walk_records(en);
}

/* Adds a record with these attributes; 1 and its ID if the library took it. */
static int fs_add(const wchar_t *attrs, GUID *id)
{
    PEER_RECORD r;
    ULONGLONG exp = fz_peer_now(fs_g) + 86400ULL * FZ_SECOND;
    HRESULT hr;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type.Data1 = 0xF0220005u;
    r.ftExpiration.dwLowDateTime = (DWORD)exp;
    r.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    r.pwzAttributes = (PWSTR)attrs;
    hr = PeerGraphAddRecord(fs_g, &r, id);
    FZ_CHECK(hr == S_OK || hr == PEER_E_INVALID_ATTRIBUTES || hr == E_INVALIDARG || hr == PEER_E_MAX_RECORD_SIZE_EXCEEDED);
    return hr == S_OK;
}

static void fs_drop(const GUID *id)
{
    PPEER_RECORD pr;
    FZ_CHECK(PeerGraphGetRecord(fs_g, id, &pr) == S_OK);
    fz_touch_record(pr);
    PeerGraphFreeData(pr);
    FZ_CHECK(PeerGraphDeleteRecord(fs_g, id, TRUE) == S_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned enc, op;
    size_t n;
    GUID id;
    if (size < 1) return 0;
    if (!fs_ready) fs_setup();
    enc = data[0] & 3;
    op = (data[0] >> 2) & 3;
    n = fs_decode(enc, data + 1, size - 1);
    if (op == 0) {
        fs_search(fs_text);
    } else if (op == 1) {
        if (fs_add(fs_text, &id)) {
            fz_fixed_searches(fs_g);
            fs_drop(&id);
        }
    } else if (op == 2) {
        size_t z = wcslen(fs_text);
        const wchar_t *q = z < n ? fs_text + z + 1 : L"";
        if (fs_add(fs_text, &id)) {
            fs_search(q);
            fs_drop(&id);
        } else
            fs_search(q);
    } else {
        PPEER_RECORD pr;
        const wchar_t *saved;
        HRESULT hr;
        FZ_CHECK(PeerGraphGetRecord(fs_g, &fs_many_id, &pr) == S_OK);
        saved = pr->pwzAttributes;
        pr->pwzAttributes = fs_text;
        hr = PeerGraphUpdateRecord(fs_g, pr);
        FZ_CHECK(hr == S_OK || hr == PEER_E_INVALID_ATTRIBUTES || hr == E_INVALIDARG || hr == PEER_E_MAX_RECORD_SIZE_EXCEEDED);
        if (hr == S_OK) {
            fz_fixed_searches(fs_g);
            pr->pwzAttributes = (PWSTR)saved;
            FZ_CHECK(PeerGraphUpdateRecord(fs_g, pr) == S_OK);
        }
        PeerGraphFreeData(pr);
    }
    /* the database file: compaction of the add/drop churn, fsync */
    fz_pump(1, 1);
    return 0;
}
