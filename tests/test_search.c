/*
 * test_search.c - attribute XML validation, search compilation and
 * matching: section 5b of p2pgraph.c, extracted by the Makefile into
 * build/gen/search_module.inc and included here (its functions are static).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include "p2pgraph.h"

/* Allocation shims; sd_fail_after >= 0 makes that many allocations succeed,
 * then fail. */
static int sd_fail_after = -1;
static void *pg_alloc(size_t cb)
{
    if (sd_fail_after == 0) return NULL;
    if (sd_fail_after > 0) sd_fail_after--;
    return malloc(cb ? cb : 1);
}
static void pg_free(void *p) { free(p); }

typedef struct pg_query pg_query; /* declared in the core's section 2 */
#include "search_module.inc"

/* ------------------------------------------------------------------------- */
/* helpers                                                                   */
/* ------------------------------------------------------------------------- */

#define ATTR_OK(s) assert_int_equal(attr_validate(s), S_OK)
#define ATTR_BAD(s) assert_int_equal(attr_validate(s), PEER_E_INVALID_ATTRIBUTES)

/* Concatenates NULL-terminated wide strings into a fresh buffer. */
static wchar_t *wcat(const wchar_t *first, ...)
{
    va_list ap;
    const wchar_t *s;
    size_t n = 0;
    wchar_t *r;
    va_start(ap, first);
    for (s = first; s; s = va_arg(ap, const wchar_t *)) n += wcslen(s);
    va_end(ap);
    r = (wchar_t *)malloc((n + 1) * sizeof(wchar_t));
    assert_non_null(r);
    r[0] = 0;
    va_start(ap, first);
    for (s = first; s; s = va_arg(ap, const wchar_t *)) wcscat(r, s);
    va_end(ap);
    return r;
}

/* A string of n copies of ch. */
static wchar_t *wrep(wchar_t ch, size_t n)
{
    wchar_t *r = (wchar_t *)malloc((n + 1) * sizeof(wchar_t));
    size_t i;
    assert_non_null(r);
    for (i = 0; i < n; i++) r[i] = ch;
    r[n] = 0;
    return r;
}

/* Validates <attributes><attribute name=NAME type=TYPE>VALUE</attribute></attributes>. */
static HRESULT attr1(const wchar_t *name, const wchar_t *type, const wchar_t *value)
{
    wchar_t *x = wcat(L"<attributes><attribute name=\"", name, L"\" type=\"", type, L"\">", value,
                      L"</attribute></attributes>", (const wchar_t *)NULL);
    HRESULT hr = attr_validate(x);
    free(x);
    return hr;
}

static HRESULT qc(const wchar_t *xml)
{
    pg_query *q = (pg_query *)&q; /* must be reset to NULL on failure */
    HRESULT hr = query_compile(xml, &q);
    if (hr == S_OK) {
        assert_non_null(q);
        query_free(q);
    } else {
        assert_null(q);
    }
    return hr;
}

/* One clause in a <peersearch>; cmp NULL omits compare. */
static wchar_t *clause_q(const wchar_t *attrib, const wchar_t *type, const wchar_t *cmp, const wchar_t *value)
{
    if (!cmp)
        return wcat(L"<peersearch><clause attrib=\"", attrib, L"\" type=\"", type, L"\">", value,
                    L"</clause></peersearch>", (const wchar_t *)NULL);
    return wcat(L"<peersearch><clause attrib=\"", attrib, L"\" type=\"", type, L"\" compare=\"", cmp, L"\">",
                value, L"</clause></peersearch>", (const wchar_t *)NULL);
}

static HRESULT qc1(const wchar_t *attrib, const wchar_t *type, const wchar_t *cmp, const wchar_t *value)
{
    wchar_t *x = clause_q(attrib, type, cmp, value);
    HRESULT hr = qc(x);
    free(x);
    return hr;
}

static const GUID sd_id = {0x12345678, 0x9abc, 0xdef0, {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}};
static const GUID sd_type = {0xA0B0C0D0, 0x0001, 0x0002, {0, 0, 0, 0, 0, 0, 0, 0x10}};

static pg_search_rec sd_rec(const wchar_t *attrs)
{
    pg_search_rec r;
    r.attributes = attrs;
    r.creator = L"James Peters";
    r.modified_by = NULL;
    r.id = &sd_id;
    r.type = &sd_type;
    r.creation = 126884448000000000ull;      /* 2003-01-31T00:00:00Z */
    r.last_modified = 126897840000000000ull; /* 2003-02-15T12:00:00Z */
    return r;
}

/* Compiles query (must succeed) and matches it against r. */
static int qmr(const wchar_t *query, const pg_search_rec *r)
{
    pg_query *q = NULL;
    int m;
    assert_int_equal(query_compile(query, &q), S_OK);
    m = query_match(q, r);
    assert_true(m == 0 || m == 1);
    query_free(q);
    return m;
}

/* Match a query against a record carrying attribute XML attrs. */
static int qma(const wchar_t *query, const wchar_t *attrs)
{
    pg_search_rec r = sd_rec(attrs);
    assert_int_equal(attr_validate(attrs), S_OK);
    return qmr(query, &r);
}

/* Match one clause against a record carrying attrs. */
static int m1(const wchar_t *attrib, const wchar_t *type, const wchar_t *cmp, const wchar_t *value, const wchar_t *attrs)
{
    wchar_t *x = clause_q(attrib, type, cmp, value);
    int m = qma(x, attrs);
    free(x);
    return m;
}

/* Match one clause against a record's reserved fields. */
static int mf(const wchar_t *attrib, const wchar_t *type, const wchar_t *cmp, const wchar_t *value, const pg_search_rec *r)
{
    wchar_t *x = clause_q(attrib, type, cmp, value);
    int m = qmr(x, r);
    free(x);
    return m;
}

static const wchar_t *const REC =
    L"<attributes>"
    L"<attribute name=\"s\" type=\"string\">Hello World</attribute>"
    L"<attribute name=\"n\" type=\"int\">42</attribute>"
    L"<attribute name=\"d\" type=\"date\">2003-02-15T12:00:00Z</attribute>"
    L"<attribute name=\"multi\" type=\"string\">red</attribute>"
    L"<attribute name=\"MULTI\" type=\"string\">green</attribute>"
    L"<attribute name=\"mixed\" type=\"int\">7</attribute>"
    L"<attribute name=\"mixed\" type=\"string\">seven</attribute>"
    L"<attribute name=\"empty\" type=\"string\"/>"
    L"</attributes>";

/* sx_date on a plain string. */
static int date_of(const wchar_t *s, int64_t *v) { return sx_date(sx_cur_make(s, 0, 0), v); }
static int int_of(const wchar_t *s, int64_t *v) { return sx_int(sx_cur_make(s, 0, 0), v); }

/* ------------------------------------------------------------------------- */
/* attribute XML: valid forms                                                */
/* ------------------------------------------------------------------------- */

static void test_attr_valid_documents(void **st)
{
    wchar_t *x;
    (void)st;
    ATTR_OK(NULL);
    ATTR_OK(L"<attributes></attributes>");
    ATTR_OK(L"<attributes/>");
    ATTR_OK(L"<attributes />");
    ATTR_OK(L"<attributes>\r\n\t </attributes >");
    ATTR_OK(L"  \n<attributes/>\n\n");
    ATTR_OK(L"<?xml version=\"1.0\"?><attributes/>");
    ATTR_OK(L"<?xml version='1.0' encoding='UTF-16' standalone='yes' ?>\n<attributes/>");
    ATTR_OK(L"<?xml version=\"1.0\" encoding=\"utf-8\"?><attributes/>");
    ATTR_OK(L"<?xml version=\"1.0\" standalone=\"no\"?><attributes/>");
    ATTR_OK(L"\xFEFF<attributes/>");
    ATTR_OK(L"\xFEFF<?xml version=\"1.0\"?><attributes/>");
    ATTR_OK(L"<attributes xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:a='b'/>");
    ATTR_OK(REC);
    ATTR_OK(L"<attributes><attribute name=\"Priority\" type=\"int\">1</attribute></attributes>");
    ATTR_OK(L"<attributes>\n  <attribute type='string' name='a'>x</attribute>\n"
            L"  <attribute  name = \"b\"\ttype\n=\n\"int\" >5</attribute >\n</attributes>");
    ATTR_OK(L"<attributes><attribute name=\"a\" type=\"string\"></attribute></attributes>");
    ATTR_OK(L"<attributes><attribute name=\"a\" type=\"string\"/></attributes>");
    ATTR_OK(L"<attributes><attribute name=\"a\" type=\"string\" /></attributes>");
    /* duplicate names are allowed (names need not be unique) */
    ATTR_OK(L"<attributes><attribute name=\"a\" type=\"string\">1</attribute>"
            L"<attribute name=\"a\" type=\"int\">1</attribute></attributes>");
    /* quotes of the other kind inside a value */
    ATTR_OK(L"<attributes><attribute name='a' type='string'>it's \"quoted\"</attribute></attributes>");
    ATTR_OK(L"<attributes><attribute name=\"a\" type=\"string\">a > b</attribute></attributes>");
    /* the largest accepted document: exactly 100000 UTF-16 units */
    {
        const wchar_t *head = L"<attributes><attribute name=\"a\" type=\"string\">";
        const wchar_t *tail = L"</attribute></attributes>";
        size_t fill = 100000 - wcslen(head) - wcslen(tail);
        wchar_t *f = wrep(L'x', fill);
        x = wcat(head, f, tail, (const wchar_t *)NULL);
        assert_int_equal(wcslen(x), 100000);
        ATTR_OK(x);
        free(x);
        x = wcat(head, f, L"y", tail, (const wchar_t *)NULL);
        ATTR_BAD(x);
        free(x);
        /* a supplementary character counts as two units on every platform */
        f[fill - 1] = 0;
        x = wcat(head, f, L"\U0001F600", tail, (const wchar_t *)NULL);
        ATTR_BAD(x);
        free(x);
        free(f);
    }
}

static void test_attr_valid_names(void **st)
{
    wchar_t *n40 = wrep(L'a', 40);
    (void)st;
    assert_int_equal(attr1(L"a", L"string", L"v"), S_OK);
    assert_int_equal(attr1(L"Z", L"string", L"v"), S_OK);
    assert_int_equal(attr1(L"123", L"string", L"v"), S_OK);
    assert_int_equal(attr1(L"aBc09XyZ", L"string", L"v"), S_OK);
    assert_int_equal(attr1(n40, L"string", L"v"), S_OK);
    /* names that merely contain a reserved name are fine */
    assert_int_equal(attr1(L"peercreatorid2", L"string", L"v"), S_OK);
    assert_int_equal(attr1(L"peer", L"string", L"v"), S_OK);
    /* a name written with character references */
    assert_int_equal(attr1(L"&#65;b&#x63;", L"string", L"v"), S_OK);
    free(n40);
}

static void test_attr_valid_values(void **st)
{
    (void)st;
    assert_int_equal(attr1(L"s", L"string", L""), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"  spaces kept  "), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"\x00e9\x4e2d\U0001F600\xFFFD\xE000"), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"tab\there\r\nnewline"), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"]]"), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"a]>b"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"0"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"-0"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"123"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"-123"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"000000000000000000000000000000042"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"9223372036854775807"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"-9223372036854775808"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L" 42\r\n"), S_OK);
    assert_int_equal(attr1(L"i", L"int", L"&#52;2"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01-31"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01-31T10:05Z"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01-31T10:05+01:00"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01-31T10:05:59-05:30"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01-31T10:05:59.5Z"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-01-31T10:05:59.123456789012Z"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2004-02-29"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2000-02-29"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"0000-01-01"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"9999-12-31T23:59:59Z"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"2003-12-31T00:00:00+23:59"), S_OK);
    assert_int_equal(attr1(L"d", L"date", L"\n 2003-01-31 \n"), S_OK);
}

static void test_attr_entities(void **st)
{
    (void)st;
    assert_int_equal(attr1(L"s", L"string", L"&lt;&gt;&amp;&quot;&apos;"), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"&#60;&#x3C;&#x3c;&#0000065;&#x1F600;&#9;&#10;&#13;"), S_OK);
    assert_int_equal(attr1(L"s", L"string", L"&#x10FFFF;&#xFFFD;&#xE000;&#xD7FF;"), S_OK);
    ATTR_OK(L"<attributes><attribute name=\"a\" type=\"&#115;tring\">x</attribute></attributes>");
    ATTR_OK(L"<attributes xmlns:a=\"&lt;&amp;&gt;\"/>");
    /* malformed or forbidden references */
    assert_int_equal(attr1(L"s", L"string", L"&foo;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&amp"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"a & b"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&LT;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#x;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#X41;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#65"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#6a;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#0;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#1;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#xD800;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#xDFFF;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#xFFFE;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#x110000;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#99999999999999999999;"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"&#xFFFFFFFFFFFF;"), PEER_E_INVALID_ATTRIBUTES);
    ATTR_BAD(L"<attributes><attribute name=\"a&\" type=\"string\">x</attribute></attributes>");
    ATTR_BAD(L"<attributes xmlns:a=\"&bogus;\"/>");
}

/* ------------------------------------------------------------------------- */
/* attribute XML: invalid forms                                              */
/* ------------------------------------------------------------------------- */

static void test_attr_invalid_structure(void **st)
{
    (void)st;
    ATTR_BAD(L"");
    ATTR_BAD(L"   ");
    ATTR_BAD(L"garbage");
    ATTR_BAD(L"<attribute name=\"a\" type=\"string\">x</attribute>");
    ATTR_BAD(L"<Attributes/>");
    ATTR_BAD(L"<ATTRIBUTES></ATTRIBUTES>");
    ATTR_BAD(L"<attributes>");
    ATTR_BAD(L"<attributes");
    ATTR_BAD(L"<attributes></attributes");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\">x</attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\">x</attribute>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\">x");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\"");
    ATTR_BAD(L"<attributes><attribute name=\"a");
    ATTR_BAD(L"<attributes></attribute>");
    ATTR_BAD(L"<attributes></Attributes>");
    ATTR_BAD(L"<attributes/>x");
    ATTR_BAD(L"<attributes/><attributes/>");
    ATTR_BAD(L"<attributes></attributes>garbage");
    ATTR_BAD(L"x<attributes/>");
    ATTR_BAD(L"<attributes>text</attributes>");
    ATTR_BAD(L"<attributes>x<attribute name=\"a\" type=\"string\"/></attributes>");
    ATTR_BAD(L"<attributes><foo/></attributes>");
    ATTR_BAD(L"<attributes><attributex name=\"a\" type=\"string\"/></attributes>");
    ATTR_BAD(L"<attributes><Attribute name=\"a\" type=\"string\"/></attributes>");
    ATTR_BAD(L"<attributes><attributes/></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\">a<b/>c</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\"><attribute name=\"b\" type=\"string\"/>"
             L"</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\">a</attribute x></attributes>");
    ATTR_BAD(L"< attributes/>");
    ATTR_BAD(L"<attributes/ >");
    /* comments, CDATA, processing instructions, DOCTYPE: refused */
    ATTR_BAD(L"<!-- c --><attributes/>");
    ATTR_BAD(L"<attributes><!-- c --></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\"><![CDATA[x]]></attribute></attributes>");
    ATTR_BAD(L"<attributes><?pi x?></attributes>");
    ATTR_BAD(L"<?pi x?><attributes/>");
    ATTR_BAD(L"<!DOCTYPE attributes><attributes/>");
    ATTR_BAD(L"<attributes/><!-- c -->");
    /* the XML declaration */
    ATTR_BAD(L" <?xml version=\"1.0\"?><attributes/>");
    ATTR_BAD(L"<?xml?><attributes/>");
    ATTR_BAD(L"<?xml ?><attributes/>");
    ATTR_BAD(L"<?xml version=\"2.0\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.\"?><attributes/>");
    ATTR_BAD(L"<?xml encoding=\"UTF-8\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\" standalone=\"maybe\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\" standalone=\"yes\" encoding=\"UTF-8\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\" encoding=\"8bit\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\" foo=\"x\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\"><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\"?><?xml version=\"1.0\"?><attributes/>");
    ATTR_BAD(L"<?xml version=\"1.0\"?>");
    /* XML attributes */
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\" x=\"1\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute>v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" name=\"b\" type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\" type=\"int\">1</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\" name=\"a\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=a type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\"type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a' type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\" =\"x\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name \"a\" type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\" Name=\"b\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a<\" type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute xmlns:x=\"u\" name=\"a\" type=\"string\">v</attribute></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"string\"></attribute ></attributes >x");
    /* on the root: only xmlns:prefix declarations */
    ATTR_BAD(L"<attributes a=\"1\"/>");
    ATTR_BAD(L"<attributes xmlns=\"urn:x\"/>");
    ATTR_BAD(L"<attributes xmlns:=\"urn:x\"/>");
    ATTR_BAD(L"<attributes xmlns:a:b=\"urn:x\"/>");
    ATTR_BAD(L"<attributes xmlns:a=\"\"/>");
    ATTR_BAD(L"<attributes xmlns:a=\"u\" xmlns:a=\"v\"/>");
    ATTR_BAD(L"<attributes xmlns:a=\"u\"xmlns:b=\"v\"/>");
}

static void test_attr_invalid_names_types(void **st)
{
    wchar_t *n41 = wrep(L'a', 41);
    (void)st;
    assert_int_equal(attr1(L"", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(n41, L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a-b", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a_b", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a b", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L" a", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a.b", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"\x00e9", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"&#x0661;", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES); /* Arabic-Indic one */
    /* reserved names, any case */
    assert_int_equal(attr1(L"peerlastmodifiedby", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"peercreatorid", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"peerlastmodificationtime", L"date", L"2003"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"peerrecordid", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"peerrecordtype", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"peercreationtime", L"date", L"2003"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"PeerCreatorId", L"string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"PEERRECORDTYPE", L"int", L"1"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"peer&#67;reationTime", L"date", L"2003"), PEER_E_INVALID_ATTRIBUTES);
    /* types: exact lower-case names only */
    assert_int_equal(attr1(L"a", L"String", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a", L"INT", L"1"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a", L"integer", L"1"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a", L"bool", L"1"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a", L"", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a", L" string", L"v"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"a", L"datetime", L"2003"), PEER_E_INVALID_ATTRIBUTES);
    free(n41);
}

static void test_attr_invalid_values(void **st)
{
    static const wchar_t *const bad_ints[] = {
        L"", L" ", L"-", L"--1", L"+1", L"1.5", L"1e3", L"12a", L"a12", L"0x10", L"1 2", L"- 1",
        L"9223372036854775808", L"-9223372036854775809", L"99999999999999999999999",
        L"\x0661", /* a non-ASCII digit */
    };
    static const wchar_t *const bad_dates[] = {
        L"", L"abcd", L"203", L"20031", L"2003-1", L"2003-1-31", L"03-01-31", L"2003/01/31", L"2003-13-01",
        L"2003-00-10", L"2003-01-00", L"2003-01-32", L"2003-02-29", L"1900-02-29", L"2003-04-31",
        L"2003-01-31T10:00", L"2003-01-31T10Z", L"2003-01-31T24:00Z", L"2003-01-31T10:60Z",
        L"2003-01-31T10:00:60Z", L"2003-01-31T10:00:00.Z", L"2003-01-31 10:00Z", L"2003-01-31t10:00Z",
        L"2003-01-31T10:00z", L"2003-01-31T10:00+0500", L"2003-01-31T10:00+05", L"2003-01-31T10:00+24:00",
        L"2003-01-31T10:00+05:60", L"2003-01-31T", L"2003-01-31Z", L"2003Z", L"2003-01T10:00Z",
        L"2003-01-31T1:00Z", L"2003-01-31T10:00:0Z", L"-2003", L"+2003", L"20030-01-01", L"2003-01-31T10:00ZZ",
        L"2003-01-31x", L"2003-01-31T10:00:00,5Z",
    };
    size_t i;
    (void)st;
    for (i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++)
        assert_int_equal(attr1(L"i", L"int", bad_ints[i]), PEER_E_INVALID_ATTRIBUTES);
    for (i = 0; i < sizeof bad_dates / sizeof bad_dates[0]; i++)
        assert_int_equal(attr1(L"d", L"date", bad_dates[i]), PEER_E_INVALID_ATTRIBUTES);
    /* self-closing int/date: empty, invalid */
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"int\"/></attributes>");
    ATTR_BAD(L"<attributes><attribute name=\"a\" type=\"date\"/></attributes>");
    /* characters that are not XML Chars */
    assert_int_equal(attr1(L"s", L"string", L"a\x01" L"b"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"\x1F"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"\xFFFE"), PEER_E_INVALID_ATTRIBUTES);
    assert_int_equal(attr1(L"s", L"string", L"\xFFFF"), PEER_E_INVALID_ATTRIBUTES);
    {
        wchar_t lone[3] = {0xD800, L'x', 0};
        wchar_t trail[2] = {0xDC00, 0};
        assert_int_equal(attr1(L"s", L"string", lone), PEER_E_INVALID_ATTRIBUTES);
        assert_int_equal(attr1(L"s", L"string", trail), PEER_E_INVALID_ATTRIBUTES);
    }
#if WCHAR_MAX > 0xFFFF
    {
        wchar_t big[2] = {(wchar_t)0x110000, 0};
        assert_int_equal(attr1(L"s", L"string", big), PEER_E_INVALID_ATTRIBUTES);
    }
#endif
    assert_int_equal(attr1(L"s", L"string", L"a]]>b"), PEER_E_INVALID_ATTRIBUTES);
    ATTR_BAD(L"<attributes xmlns:a=\"x\x01\"/>");
    ATTR_BAD(L"<attributes>\x01</attributes>");
    ATTR_BAD(L"<attributes>\xA0</attributes>"); /* only XML whitespace between elements */
}

/* ------------------------------------------------------------------------- */
/* numbers and dates                                                         */
/* ------------------------------------------------------------------------- */

static void test_date_conversion(void **st)
{
    int64_t v, w;
    (void)st;
    assert_true(date_of(L"1601-01-01", &v));
    assert_int_equal(v, 0);
    assert_true(date_of(L"1601", &v));
    assert_int_equal(v, 0);
    assert_true(date_of(L"1970-01-01T00:00:00Z", &v));
    assert_int_equal(v, 116444736000000000ll);
    assert_true(date_of(L"2003-01-31", &v));
    assert_int_equal(v, 126884448000000000ll);
    assert_true(date_of(L"2003-02-15T12:00Z", &v));
    assert_int_equal(v, 126897840000000000ll);
    assert_true(date_of(L"2004-02-29", &v));
    assert_int_equal(v, 127224864000000000ll);
    assert_true(date_of(L"9999-12-31T23:59:59Z", &v));
    assert_int_equal(v, 2650467743990000000ll);
    assert_true(date_of(L"0001-01-01", &v));
    assert_int_equal(v, -584388ll * 864000000000ll);
    assert_true(date_of(L"0000-01-01", &v));
    assert_int_equal(v, -584754ll * 864000000000ll);
    /* missing month/day = 1 */
    assert_true(date_of(L"2003-02", &v));
    assert_true(date_of(L"2003-02-01T00:00:00Z", &w));
    assert_int_equal(v, w);
    assert_true(date_of(L"2003", &v));
    assert_true(date_of(L"2003-01-01T00:00Z", &w));
    assert_int_equal(v, w);
    /* time zones */
    assert_true(date_of(L"2003-01-31T10:00:00+01:00", &v));
    assert_true(date_of(L"2003-01-31T09:00:00Z", &w));
    assert_int_equal(v, w);
    assert_true(date_of(L"2003-01-31T19:30-05:30", &v));
    assert_true(date_of(L"2003-02-01T01:00Z", &w));
    assert_int_equal(v, w);
    assert_true(date_of(L"2003-01-01T00:30+01:00", &v)); /* crosses a year back */
    assert_true(date_of(L"2002-12-31T23:30Z", &w));
    assert_int_equal(v, w);
    /* fractions: 100 ns resolution, further digits ignored */
    assert_true(date_of(L"1601-01-01T00:00:00.5Z", &v));
    assert_int_equal(v, 5000000);
    assert_true(date_of(L"1601-01-01T00:00:00.1234567Z", &v));
    assert_int_equal(v, 1234567);
    assert_true(date_of(L"1601-01-01T00:00:00.12345678999Z", &v));
    assert_int_equal(v, 1234567);
    assert_true(date_of(L"1601-01-01T00:00:00.0000001Z", &v));
    assert_int_equal(v, 1);
    assert_true(date_of(L"1601-01-01T00:00:01Z", &v));
    assert_int_equal(v, 10000000);
    /* leap years over the centuries */
    assert_true(date_of(L"2000-03-01", &v));
    assert_true(date_of(L"2000-02-28", &w));
    assert_int_equal(v - w, 2 * 864000000000ll);
    assert_true(date_of(L"1900-03-01", &v));
    assert_true(date_of(L"1900-02-28", &w));
    assert_int_equal(v - w, 864000000000ll);
    assert_true(date_of(L"2101-01-01", &v));
    assert_true(date_of(L"2100-01-01", &w));
    assert_int_equal(v - w, 365 * 864000000000ll);
}

static void test_int_parse(void **st)
{
    int64_t v;
    (void)st;
    assert_true(int_of(L"0", &v));
    assert_int_equal(v, 0);
    assert_true(int_of(L"-0", &v));
    assert_int_equal(v, 0);
    assert_true(int_of(L"9223372036854775807", &v));
    assert_true(v == INT64_MAX);
    assert_true(int_of(L"-9223372036854775808", &v));
    assert_true(v == INT64_MIN);
    assert_true(int_of(L"-9223372036854775807", &v));
    assert_true(v == -INT64_MAX);
    assert_true(int_of(L"\t-17 ", &v));
    assert_true(v == -17);
    assert_false(int_of(L"9223372036854775808", &v));
    assert_false(int_of(L"-9223372036854775809", &v));
    assert_false(int_of(L"18446744073709551616", &v));
    assert_false(int_of(L"", &v));
}

/* ------------------------------------------------------------------------- */
/* search XML: structure                                                     */
/* ------------------------------------------------------------------------- */

static void test_query_valid_structure(void **st)
{
    (void)st;
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\" compare=\"equal\">x</clause></peersearch>"),
                     S_OK);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"), S_OK);
    assert_int_equal(qc(L"<peersearch xmlns:xs=\"https://www.w3.org/2001/XMLSchema\">"
                        L"<clause attrib=\"a\" type=\"int\">1</clause></peersearch>"),
                     S_OK);
    assert_int_equal(qc(L"<?xml version=\"1.0\" encoding=\"utf-16\"?>\n<peersearch>\n  <and>\n"
                        L"    <clause compare='less' type='int' attrib='a'>1</clause>\n"
                        L"    <clause attrib = 'b' type = 'string' >x</clause >\n  </and >\n</peersearch>\n"),
                     S_OK);
    assert_int_equal(qc(L"<peersearch><or><clause attrib=\"a\" type=\"string\">x</clause></or></peersearch>"), S_OK);
    assert_int_equal(qc(L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause></and></peersearch>"), S_OK);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\"/></peersearch>"), S_OK);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\"></clause></peersearch>"), S_OK);
    /* the documented example */
    assert_int_equal(
        qc(L"<peersearch xmlns:xs=\"https://www.w3.org/2001/XMLSchema\"><and>"
           L"<clause attrib=\"peercreatorid\" type=\"string\" compare=\"equal\">James Peters</clause>"
           L"<and><clause attrib=\"peerlastmodificationtime\" type=\"date\" compare=\"greater\">2003-01-31</clause>"
           L"<clause attrib=\"peerlastmodificationtime\" type=\"date\" compare=\"less\">2003-02-28</clause>"
           L"</and></and></peersearch>"),
        S_OK);
    /* and/or inside a clause's text is literal text */
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">cats and dogs or &lt;and&gt;</clause>"
                        L"</peersearch>"),
                     S_OK);
    /* every type and compare name */
    {
        static const wchar_t *const cmps[] = {L"equal", L"notequal", L"less", L"greater", L"lessorequal",
                                              L"greaterorequal"};
        size_t i;
        for (i = 0; i < 6; i++) {
            assert_int_equal(qc1(L"a", L"string", cmps[i], L"x"), S_OK);
            assert_int_equal(qc1(L"a", L"int", cmps[i], L"1"), S_OK);
            assert_int_equal(qc1(L"a", L"date", cmps[i], L"2003"), S_OK);
        }
    }
    /* reserved names are searchable; names are case-insensitive */
    assert_int_equal(qc1(L"PeerCreatorId", L"string", NULL, L"x"), S_OK);
    assert_int_equal(qc1(L"peercreationtime", L"date", NULL, L"2003"), S_OK);
    assert_int_equal(qc1(L"peercreationtime", L"string", NULL, L"x"), S_OK); /* never matches */
}

static void test_query_invalid_structure(void **st)
{
    wchar_t *n41 = wrep(L'a', 41);
    (void)st;
    assert_int_equal(qc(L""), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"  "), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch/>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch> </peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<PeerSearch><clause attrib=\"a\" type=\"string\">x</clause></PeerSearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<search><clause attrib=\"a\" type=\"string\">x</clause></search>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<clause attrib=\"a\" type=\"string\">x</clause>"), PEER_E_INVALID_SEARCH);
    /* exactly one child */
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause>"
                        L"<clause attrib=\"b\" type=\"string\">y</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    /* empty and/or */
    assert_int_equal(qc(L"<peersearch><and/></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and></and></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><or> \n </or></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and><or></or></and></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause><or/></and></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    /* missing / unknown attributes */
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\">x</clause></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause type=\"string\">x</clause></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause>x</clause></peersearch>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\" x=\"1\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" attrib=\"b\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(
        qc(L"<peersearch><clause attrib=\"a\" type=\"string\" compare=\"equal\" compare=\"equal\">x</clause></peersearch>"),
        PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and x=\"1\"><clause attrib=\"a\" type=\"string\">x</clause></and></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch a=\"1\"><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch xmlns=\"urn:x\"><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch xmlns:a=\"u\" xmlns:a=\"u\"><clause attrib=\"a\" type=\"string\">x</clause>"
                        L"</peersearch>"),
                     PEER_E_INVALID_SEARCH);
    /* unknown type / compare values */
    assert_int_equal(qc1(L"a", L"String", NULL, L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"integer", NULL, L"1"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"", NULL, L"1"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"string", L"equals", L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"string", L"EQUAL", L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"string", L"", L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"string", L"like", L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"string", L"lessthan", L"x"), PEER_E_INVALID_SEARCH);
    /* attrib names */
    assert_int_equal(qc1(L"", L"string", NULL, L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(n41, L"string", NULL, L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a-b", L"string", NULL, L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a b", L"string", NULL, L"x"), PEER_E_INVALID_SEARCH);
    /* unknown elements */
    assert_int_equal(qc(L"<peersearch><not><clause attrib=\"a\" type=\"string\">x</clause></not></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><And><clause attrib=\"a\" type=\"string\">x</clause></And></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause><foo/></and></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"
                        L"</peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x<and/></clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    /* text inside and/or */
    assert_int_equal(qc(L"<peersearch><and>x<clause attrib=\"a\" type=\"string\">x</clause></and></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch>x<clause attrib=\"a\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    /* malformed XML */
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause>"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\""), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><and><clause attrib=\"a\" type=\"string\">x</clause></or></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clauses></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>garbage"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch><peersearch/>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch><!---->"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><!-- c --><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\"><![CDATA[x]]></clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">a & b</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"string\">a]]>b</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=a type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<?xml version=\"9\"?><peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    /* values */
    assert_int_equal(qc1(L"a", L"int", NULL, L""), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"int", NULL, L"x"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"int", NULL, L"1*"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"int", NULL, L"9223372036854775808"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"date", NULL, L""), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"date", NULL, L"2003-02-328"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"date", NULL, L"2003-02-30"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"date", NULL, L"yesterday"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><clause attrib=\"a\" type=\"int\"/></peersearch>"), PEER_E_INVALID_SEARCH);
    /* arguments */
    {
        pg_query *q = (pg_query *)&q;
        assert_int_equal(query_compile(NULL, &q), E_INVALIDARG);
        assert_null(q);
        assert_int_equal(query_compile(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>", NULL),
                         E_INVALIDARG);
    }
    query_free(NULL);
    free(n41);
}

static wchar_t *nested(int depth, const wchar_t *open, const wchar_t *close)
{
    const wchar_t *cl = L"<clause attrib=\"a\" type=\"string\">x</clause>";
    size_t lo = wcslen(open), lc = wcslen(close), n = 32 + wcslen(cl) + (size_t)depth * (lo + lc);
    wchar_t *r = (wchar_t *)malloc(n * sizeof(wchar_t));
    int i;
    assert_non_null(r);
    wcscpy(r, L"<peersearch>");
    for (i = 0; i < depth; i++) wcscat(r, open);
    wcscat(r, cl);
    for (i = 0; i < depth; i++) wcscat(r, close);
    wcscat(r, L"</peersearch>");
    return r;
}

static void test_query_depth_and_length(void **st)
{
    wchar_t *x;
    pg_query *q = NULL;
    pg_search_rec r = sd_rec(L"<attributes><attribute name=\"a\" type=\"string\">x</attribute></attributes>");
    (void)st;
    x = nested(64, L"<and>", L"</and>");
    assert_int_equal(query_compile(x, &q), S_OK);
    assert_int_equal(query_match(q, &r), 1);
    query_free(q);
    free(x);
    x = nested(65, L"<and>", L"</and>");
    assert_int_equal(qc(x), PEER_E_INVALID_SEARCH);
    free(x);
    x = nested(64, L"<or>", L"</or>");
    assert_int_equal(qc(x), S_OK);
    free(x);
    x = nested(65, L"<or>", L"</or>");
    assert_int_equal(qc(x), PEER_E_INVALID_SEARCH);
    free(x);
    x = nested(1000, L"<and><or>", L"</or></and>");
    assert_int_equal(qc(x), PEER_E_INVALID_SEARCH);
    free(x);
    /* length: 100000 units accepted, 100001 refused */
    {
        const wchar_t *head = L"<peersearch><clause attrib=\"a\" type=\"string\">";
        const wchar_t *tail = L"</clause></peersearch>";
        size_t fill = 100000 - wcslen(head) - wcslen(tail);
        wchar_t *f = wrep(L'x', fill);
        x = wcat(head, f, tail, (const wchar_t *)NULL);
        assert_int_equal(qc(x), S_OK);
        free(x);
        x = wcat(head, f, L"x", tail, (const wchar_t *)NULL);
        assert_int_equal(qc(x), PEER_E_INVALID_SEARCH);
        free(x);
        free(f);
    }
    /* many clauses at the size limit compile */
    {
        const wchar_t *cl = L"<clause attrib=\"a\" type=\"int\">1</clause>";
        size_t per = wcslen(cl), n = (100000 - 40) / per, i;
        wchar_t *big = (wchar_t *)malloc(100001 * sizeof(wchar_t));
        assert_non_null(big);
        wcscpy(big, L"<peersearch><or>");
        for (i = 0; i < n; i++) wcscat(big, cl);
        wcscat(big, L"</or></peersearch>");
        assert_true(wcslen(big) <= 100000);
        assert_int_equal(query_compile(big, &q), S_OK);
        assert_int_equal(query_match(q, &r), 0);
        query_free(q);
        free(big);
    }
}

static void test_query_out_of_memory(void **st)
{
    pg_query *q = (pg_query *)&q;
    (void)st;
    sd_fail_after = 0;
    assert_int_equal(query_compile(L"<peersearch><clause attrib=\"a\" type=\"string\">x</clause></peersearch>", &q),
                     E_OUTOFMEMORY);
    assert_null(q);
    /* attr_validate and query_match never allocate */
    assert_int_equal(attr_validate(REC), S_OK);
    sd_fail_after = -1;
    assert_int_equal(query_compile(L"<peersearch><clause attrib=\"s\" type=\"string\">h*</clause></peersearch>", &q),
                     S_OK);
    sd_fail_after = 0;
    {
        pg_search_rec r = sd_rec(REC);
        assert_int_equal(query_match(q, &r), 1);
    }
    sd_fail_after = -1;
    query_free(q);
}

/* ------------------------------------------------------------------------- */
/* wildcards and escapes                                                     */
/* ------------------------------------------------------------------------- */

static void test_wildcards(void **st)
{
    (void)st;
    assert_int_equal(m1(L"s", L"string", NULL, L"Hello World", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"hello world", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"HELLO WORLD", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"Hello", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"Hello World!", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"*", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"**", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"H*", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"*world", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"*o W*", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"h*o*o*d", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"h*o*o*o*d", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"H?llo?World", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"???????????", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"??????????", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"????????????", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"*?", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"?*?", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"*x*", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"*d", REC), 1);
    assert_int_equal(m1(L"s", L"string", NULL, L"*l", REC), 0);
    assert_int_equal(m1(L"s", L"string", NULL, L"", REC), 0);
    /* empty value */
    assert_int_equal(m1(L"empty", L"string", NULL, L"", REC), 1);
    assert_int_equal(m1(L"empty", L"string", NULL, L"*", REC), 1);
    assert_int_equal(m1(L"empty", L"string", NULL, L"?", REC), 0);
    assert_int_equal(m1(L"empty", L"string", NULL, L"*?*", REC), 0);
    assert_int_equal(qma(L"<peersearch><clause attrib=\"empty\" type=\"string\"/></peersearch>", REC), 1);
    /* notequal with wildcards */
    assert_int_equal(m1(L"s", L"string", L"notequal", L"H*", REC), 0);
    assert_int_equal(m1(L"s", L"string", L"notequal", L"G*", REC), 1);
    assert_int_equal(m1(L"s", L"string", L"notequal", L"hello world", REC), 0);
    /* backtracking */
    {
        const wchar_t *a = L"<attributes><attribute name=\"v\" type=\"string\">aaaaaaaaaaaaaaaaaaaaaaaaaaaaab</attribute>"
                           L"</attributes>";
        assert_int_equal(m1(L"v", L"string", NULL, L"*a*a*a*a*a*a*b", a), 1);
        assert_int_equal(m1(L"v", L"string", NULL, L"*a*a*a*a*a*a*c", a), 0);
        assert_int_equal(m1(L"v", L"string", NULL, L"*ab", a), 1);
        assert_int_equal(m1(L"v", L"string", NULL, L"a*aab", a), 1);
        assert_int_equal(m1(L"v", L"string", NULL, L"*?b", a), 1);
    }
    /* one character = one code point, also a surrogate pair */
    {
        const wchar_t *a = L"<attributes><attribute name=\"v\" type=\"string\">x\U0001F600y\x00e9</attribute></attributes>";
        assert_int_equal(m1(L"v", L"string", NULL, L"x?y?", a), 1);
        assert_int_equal(m1(L"v", L"string", NULL, L"x??y?", a), 0);
        assert_int_equal(m1(L"v", L"string", NULL, L"x\U0001F600*", a), 1);
        assert_int_equal(m1(L"v", L"string", NULL, L"X&#x1F600;Y\x00e9", a), 1);
        /* no case folding outside ASCII */
        assert_int_equal(m1(L"v", L"string", NULL, L"x?y\x00c9", a), 0);
    }
}

static void test_escapes(void **st)
{
    const wchar_t *a = L"<attributes>"
                       L"<attribute name=\"star\" type=\"string\">a*b</attribute>"
                       L"<attribute name=\"q\" type=\"string\">a?b</attribute>"
                       L"<attribute name=\"bs\" type=\"string\">a\\b</attribute>"
                       L"<attribute name=\"plain\" type=\"string\">axb</attribute>"
                       L"</attributes>";
    (void)st;
    assert_int_equal(m1(L"star", L"string", NULL, L"a\\*b", a), 1);
    assert_int_equal(m1(L"plain", L"string", NULL, L"a\\*b", a), 0);
    assert_int_equal(m1(L"plain", L"string", NULL, L"a*b", a), 1);
    assert_int_equal(m1(L"q", L"string", NULL, L"a\\?b", a), 1);
    assert_int_equal(m1(L"plain", L"string", NULL, L"a\\?b", a), 0);
    assert_int_equal(m1(L"plain", L"string", NULL, L"a?b", a), 1);
    assert_int_equal(m1(L"bs", L"string", NULL, L"a\\\\b", a), 1);
    assert_int_equal(m1(L"bs", L"string", NULL, L"a&#92;&#92;b", a), 1); /* references decode first */
    assert_int_equal(m1(L"star", L"string", NULL, L"\\**", a), 0);
    assert_int_equal(m1(L"star", L"string", NULL, L"*\\**", a), 1);
    /* ordering comparisons use the unescaped text; wildcards are literal there */
    assert_int_equal(m1(L"star", L"string", L"lessorequal", L"a\\*b", a), 1);
    assert_int_equal(m1(L"star", L"string", L"greaterorequal", L"a*b", a), 1);
    assert_int_equal(m1(L"plain", L"string", L"greater", L"a*", a), 1);
    /* any other backslash sequence: E_INVALIDARG */
    assert_int_equal(qc1(L"a", L"string", NULL, L"\\a"), E_INVALIDARG);
    assert_int_equal(qc1(L"a", L"string", NULL, L"x\\"), E_INVALIDARG);
    assert_int_equal(qc1(L"a", L"string", NULL, L"\\n"), E_INVALIDARG);
    assert_int_equal(qc1(L"a", L"string", NULL, L"\\ "), E_INVALIDARG);
    assert_int_equal(qc1(L"a", L"string", NULL, L"\\&amp;"), E_INVALIDARG);
    assert_int_equal(qc1(L"a", L"string", L"less", L"\\x"), E_INVALIDARG);
    assert_int_equal(qc1(L"a", L"string", L"notequal", L"\\"), E_INVALIDARG);
    assert_int_equal(qc(L"<peersearch><or><clause attrib=\"a\" type=\"string\">ok</clause>"
                        L"<clause attrib=\"b\" type=\"string\">\\q</clause></or></peersearch>"),
                     E_INVALIDARG);
    /* schema errors win over bad escapes; escapes are not special in int/date */
    assert_int_equal(qc(L"<peersearch><or><clause attrib=\"b\" type=\"string\">\\q</clause>"
                        L"<clause attrib=\"a\" type=\"int\">x</clause></or></peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc(L"<peersearch><or><clause attrib=\"b\" type=\"string\">\\q</clause></or>junk</peersearch>"),
                     PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"int", NULL, L"\\1"), PEER_E_INVALID_SEARCH);
    assert_int_equal(qc1(L"a", L"string", NULL, L"\\*\\?\\\\"), S_OK);
}

/* ------------------------------------------------------------------------- */
/* comparisons per type                                                      */
/* ------------------------------------------------------------------------- */

static void test_compare_strings(void **st)
{
    const wchar_t *a = L"<attributes><attribute name=\"v\" type=\"string\">Mango</attribute></attributes>";
    (void)st;
    assert_int_equal(m1(L"v", L"string", L"equal", L"mango", a), 1);
    assert_int_equal(m1(L"v", L"string", L"notequal", L"mango", a), 0);
    assert_int_equal(m1(L"v", L"string", L"notequal", L"apple", a), 1);
    assert_int_equal(m1(L"v", L"string", L"less", L"peach", a), 1);
    assert_int_equal(m1(L"v", L"string", L"less", L"PEACH", a), 1);
    assert_int_equal(m1(L"v", L"string", L"less", L"apple", a), 0);
    assert_int_equal(m1(L"v", L"string", L"less", L"MANGO", a), 0);
    assert_int_equal(m1(L"v", L"string", L"less", L"mangos", a), 1); /* prefix sorts first */
    assert_int_equal(m1(L"v", L"string", L"greater", L"mang", a), 1);
    assert_int_equal(m1(L"v", L"string", L"greater", L"apple", a), 1);
    assert_int_equal(m1(L"v", L"string", L"greater", L"mango", a), 0);
    assert_int_equal(m1(L"v", L"string", L"greater", L"", a), 1);
    assert_int_equal(m1(L"v", L"string", L"lessorequal", L"MANGO", a), 1);
    assert_int_equal(m1(L"v", L"string", L"lessorequal", L"mangoes", a), 1);
    assert_int_equal(m1(L"v", L"string", L"lessorequal", L"mang", a), 0);
    assert_int_equal(m1(L"v", L"string", L"greaterorequal", L"mango", a), 1);
    assert_int_equal(m1(L"v", L"string", L"greaterorequal", L"mangoes", a), 0);
    assert_int_equal(m1(L"v", L"string", L"greaterorequal", L"Apple", a), 1);
    /* ASCII case folds to lower case: '_' (0x5F) sorts before letters */
    {
        const wchar_t *u = L"<attributes><attribute name=\"v\" type=\"string\">_</attribute></attributes>";
        assert_int_equal(m1(L"v", L"string", L"less", L"A", u), 1);
        assert_int_equal(m1(L"v", L"string", L"less", L"a", u), 1);
    }
    /* UTF-16 ordinal order: a supplementary character sorts below U+E000..U+FFFF */
    {
        const wchar_t *s = L"<attributes><attribute name=\"v\" type=\"string\">\U0001F600</attribute></attributes>";
        assert_int_equal(m1(L"v", L"string", L"less", L"\xFFFD", s), 1);
        assert_int_equal(m1(L"v", L"string", L"less", L"\xE000", s), 1);
        assert_int_equal(m1(L"v", L"string", L"greater", L"\xD7FF", s), 1);
        assert_int_equal(m1(L"v", L"string", L"greater", L"\x00e9", s), 1);
        assert_int_equal(m1(L"v", L"string", L"less", L"\U0001F601", s), 1);
        assert_int_equal(m1(L"v", L"string", L"equal", L"&#x1F600;", s), 1);
    }
    /* non-ASCII letters compare by code unit, without folding */
    {
        const wchar_t *e = L"<attributes><attribute name=\"v\" type=\"string\">\x00e9</attribute></attributes>";
        assert_int_equal(m1(L"v", L"string", L"equal", L"\x00c9", e), 0);
        assert_int_equal(m1(L"v", L"string", L"greater", L"\x00c9", e), 1);
    }
    /* references and line ends in record values are decoded before comparing */
    {
        const wchar_t *r = L"<attributes><attribute name=\"v\" type=\"string\">a&amp;b&#x3C;c\r\nd</attribute>"
                           L"</attributes>";
        assert_int_equal(m1(L"v", L"string", NULL, L"a&amp;b&lt;c\nd", r), 1);
        assert_int_equal(m1(L"v", L"string", NULL, L"a&#38;b&#60;*", r), 1);
    }
}

static void test_compare_ints(void **st)
{
    const wchar_t *a = L"<attributes><attribute name=\"v\" type=\"int\">-5</attribute>"
                       L"<attribute name=\"big\" type=\"int\">9223372036854775807</attribute>"
                       L"<attribute name=\"small\" type=\"int\">-9223372036854775808</attribute>"
                       L"<attribute name=\"pad\" type=\"int\"> 0007 </attribute></attributes>";
    (void)st;
    assert_int_equal(m1(L"v", L"int", L"equal", L"-5", a), 1);
    assert_int_equal(m1(L"v", L"int", NULL, L"-05", a), 1);
    assert_int_equal(m1(L"v", L"int", L"equal", L"5", a), 0);
    assert_int_equal(m1(L"v", L"int", L"notequal", L"5", a), 1);
    assert_int_equal(m1(L"v", L"int", L"notequal", L"-5", a), 0);
    assert_int_equal(m1(L"v", L"int", L"less", L"-4", a), 1);
    assert_int_equal(m1(L"v", L"int", L"less", L"-5", a), 0);
    assert_int_equal(m1(L"v", L"int", L"less", L"-6", a), 0);
    assert_int_equal(m1(L"v", L"int", L"greater", L"-6", a), 1);
    assert_int_equal(m1(L"v", L"int", L"greater", L"-5", a), 0);
    assert_int_equal(m1(L"v", L"int", L"greater", L"10", a), 0); /* numeric, not textual */
    assert_int_equal(m1(L"v", L"int", L"lessorequal", L"-5", a), 1);
    assert_int_equal(m1(L"v", L"int", L"lessorequal", L"-6", a), 0);
    assert_int_equal(m1(L"v", L"int", L"greaterorequal", L"-5", a), 1);
    assert_int_equal(m1(L"v", L"int", L"greaterorequal", L"-4", a), 0);
    assert_int_equal(m1(L"big", L"int", L"greater", L"9223372036854775806", a), 1);
    assert_int_equal(m1(L"big", L"int", L"equal", L"9223372036854775807", a), 1);
    assert_int_equal(m1(L"small", L"int", L"less", L"-9223372036854775807", a), 1);
    assert_int_equal(m1(L"small", L"int", L"less", L"9223372036854775807", a), 1);
    assert_int_equal(m1(L"pad", L"int", NULL, L"7", a), 1);
    assert_int_equal(m1(L"pad", L"int", L"greater", L"9", a), 0);
    /* an int clause ignores string attributes of the same name and vice versa */
    assert_int_equal(m1(L"s", L"int", NULL, L"42", REC), 0);
    assert_int_equal(m1(L"n", L"string", NULL, L"42", REC), 0);
    assert_int_equal(m1(L"n", L"int", NULL, L"42", REC), 1);
    assert_int_equal(m1(L"mixed", L"int", NULL, L"7", REC), 1);
    assert_int_equal(m1(L"mixed", L"string", NULL, L"seven", REC), 1);
    assert_int_equal(m1(L"mixed", L"string", NULL, L"7", REC), 0);
    assert_int_equal(m1(L"mixed", L"int", L"notequal", L"7", REC), 0);
}

static void test_compare_dates(void **st)
{
    (void)st;
    /* d = 2003-02-15T12:00:00Z */
    assert_int_equal(m1(L"d", L"date", L"equal", L"2003-02-15T12:00Z", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"equal", L"2003-02-15T13:00:00+01:00", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"equal", L"2003-02-15", REC), 0);
    assert_int_equal(m1(L"d", L"date", L"notequal", L"2003-02-15", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"notequal", L"2003-02-15T12:00:00.000Z", REC), 0);
    assert_int_equal(m1(L"d", L"date", L"greater", L"2003-02-15", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"greater", L"2003-02-15T12:00:00.0000001Z", REC), 0);
    assert_int_equal(m1(L"d", L"date", L"less", L"2003-02-15T12:00:00.0000001Z", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"less", L"2003-02", REC), 0);
    assert_int_equal(m1(L"d", L"date", L"less", L"2004", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"lessorequal", L"2003-02-15T12:00Z", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"lessorequal", L"2003-02-15T11:59:59.9999999Z", REC), 0);
    assert_int_equal(m1(L"d", L"date", L"greaterorequal", L"2003-02-15T12:00Z", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"greaterorequal", L"2003-02-15T07:00-05:00", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"greaterorequal", L"2003-02-15T06:59:59-05:00", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"greaterorequal", L"2003-02-15T07:00:01-05:00", REC), 0);
    assert_int_equal(m1(L"d", L"date", L"greater", L"0000-01-01", REC), 1);
    assert_int_equal(m1(L"d", L"date", L"less", L"9999-12-31T23:59:59.9999999Z", REC), 1);
    /* a date clause against a string attribute holding a date: no match */
    assert_int_equal(m1(L"s", L"date", NULL, L"2003", REC), 0);
}

/* ------------------------------------------------------------------------- */
/* clause semantics and boolean structure                                    */
/* ------------------------------------------------------------------------- */

static void test_match_semantics(void **st)
{
    pg_search_rec r;
    (void)st;
    /* names compare case-insensitively; any attribute of the name may match */
    assert_int_equal(m1(L"S", L"string", NULL, L"hello world", REC), 1);
    assert_int_equal(m1(L"multi", L"string", NULL, L"red", REC), 1);
    assert_int_equal(m1(L"multi", L"string", NULL, L"GREEN", REC), 1);
    assert_int_equal(m1(L"Multi", L"string", NULL, L"blue", REC), 0);
    assert_int_equal(m1(L"multi", L"string", L"notequal", L"red", REC), 1); /* green differs */
    assert_int_equal(m1(L"multi", L"string", L"notequal", L"*", REC), 0);
    /* notequal on an attribute the record lacks: no match */
    assert_int_equal(m1(L"missing", L"string", L"notequal", L"x", REC), 0);
    assert_int_equal(m1(L"missing", L"int", L"notequal", L"1", REC), 0);
    assert_int_equal(m1(L"missing", L"string", NULL, L"*", REC), 0);
    /* a record without attribute XML */
    r = sd_rec(NULL);
    assert_int_equal(mf(L"s", L"string", NULL, L"*", &r), 0);
    assert_int_equal(mf(L"s", L"string", L"notequal", L"x", &r), 0);
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"james*", &r), 1);
    r = sd_rec(L"<attributes/>");
    assert_int_equal(mf(L"s", L"string", NULL, L"*", &r), 0);
    /* names given with references, on both sides */
    assert_int_equal(qma(L"<peersearch><clause attrib=\"&#x6E;\" type=\"&#105;nt\">42</clause></peersearch>", REC), 1);
    assert_int_equal(
        qma(L"<peersearch><clause attrib=\"abc\" type=\"string\">v</clause></peersearch>",
            L"<attributes><attribute name=\"&#65;b&#x63;\" type=\"&#115;tring\">v</attribute></attributes>"),
        1);
    /* decl, BOM, namespaces and single quotes in the record's XML */
    assert_int_equal(
        qma(L"<peersearch><clause attrib=\"k\" type=\"string\">v&gt;</clause></peersearch>",
            L"\xFEFF<?xml version='1.0' encoding='UTF-16'?>\n<attributes xmlns:a='x>y' >\n"
            L" <attribute type='string' name='k' >v&gt;</attribute >\n</attributes>"),
        1);
}

static void test_boolean_structure(void **st)
{
    const wchar_t *T = L"<clause attrib=\"n\" type=\"int\">42</clause>";
    const wchar_t *F = L"<clause attrib=\"n\" type=\"int\">43</clause>";
    wchar_t *x;
    (void)st;
#define BQ(expect, ...)                                                                    \
    do {                                                                                   \
        x = wcat(L"<peersearch>", __VA_ARGS__, L"</peersearch>", (const wchar_t *)NULL);   \
        assert_int_equal(qma(x, REC), expect);                                             \
        free(x);                                                                           \
    } while (0)
    BQ(1, T);
    BQ(0, F);
    BQ(1, L"<and>", T, L"</and>");
    BQ(0, L"<and>", F, L"</and>");
    BQ(1, L"<and>", T, T, T, L"</and>");
    BQ(0, L"<and>", T, T, F, L"</and>");
    BQ(0, L"<and>", F, T, L"</and>");
    BQ(1, L"<or>", F, F, T, L"</or>");
    BQ(0, L"<or>", F, F, L"</or>");
    BQ(1, L"<or>", T, L"</or>");
    BQ(1, L"<and>", T, L"<or>", F, T, L"</or>", L"</and>");
    BQ(0, L"<and>", T, L"<or>", F, F, L"</or>", L"</and>");
    BQ(1, L"<or>", L"<and>", T, F, L"</and>", L"<and>", T, T, L"</and>", L"</or>");
    BQ(0, L"<or>", L"<and>", T, F, L"</and>", L"<and>", F, T, L"</and>", L"</or>");
    BQ(1, L"<and>", L"<or>", L"<and>", T, L"</and>", L"</or>", L"<or>", F, L"<and>", T, L"</and>", L"</or>", L"</and>");
    BQ(0, L"<and>", L"<or>", L"<and>", T, L"</and>", L"</or>", L"<or>", F, L"<and>", F, L"</and>", L"</or>", L"</and>");
    /* mixing reserved fields and attributes */
    BQ(1, L"<and><clause attrib=\"peercreatorid\" type=\"string\">james*</clause>", T, L"</and>");
    BQ(0, L"<and><clause attrib=\"peercreatorid\" type=\"string\">bob</clause>", T, L"</and>");
    BQ(1, L"<or><clause attrib=\"peercreatorid\" type=\"string\">bob</clause>", T, L"</or>");
#undef BQ
}

/* More clauses than the one-pass table holds: the per-clause path. */
static void test_many_clauses(void **st)
{
    const wchar_t *F = L"<clause attrib=\"n\" type=\"int\">43</clause>";
    const wchar_t *T = L"<clause attrib=\"n\" type=\"int\">42</clause>";
    const wchar_t *TR = L"<clause attrib=\"peerrecordid\" type=\"string\">{12345678*</clause>";
    size_t cap = 400 * 64, i;
    wchar_t *x = (wchar_t *)malloc(cap * sizeof(wchar_t));
    pg_search_rec r = sd_rec(REC);
    (void)st;
    assert_non_null(x);
    wcscpy(x, L"<peersearch><or>");
    for (i = 0; i < 299; i++) wcscat(x, F);
    wcscat(x, T);
    wcscat(x, L"</or></peersearch>");
    assert_int_equal(qmr(x, &r), 1);
    wcscpy(x, L"<peersearch><or>");
    for (i = 0; i < 300; i++) wcscat(x, F);
    wcscat(x, L"</or></peersearch>");
    assert_int_equal(qmr(x, &r), 0);
    wcscpy(x, L"<peersearch><and>");
    for (i = 0; i < 150; i++) {
        wcscat(x, T);
        wcscat(x, TR);
    }
    wcscat(x, L"</and></peersearch>");
    assert_int_equal(qmr(x, &r), 1);
    r.id = &sd_type;
    assert_int_equal(qmr(x, &r), 0);
    /* exactly at the one-pass limit */
    wcscpy(x, L"<peersearch><and>");
    for (i = 0; i < SX_FAST_CLAUSES; i++) wcscat(x, T);
    wcscat(x, L"</and></peersearch>");
    assert_int_equal(qmr(x, &r), 1);
    free(x);
}

/* ------------------------------------------------------------------------- */
/* reserved names against record fields                                      */
/* ------------------------------------------------------------------------- */

static void test_reserved_fields(void **st)
{
    pg_search_rec r = sd_rec(REC);
    (void)st;
    /* peercreatorid */
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"James Peters", &r), 1);
    assert_int_equal(mf(L"PEERCREATORID", L"string", NULL, L"james peters", &r), 1);
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"James*", &r), 1);
    assert_int_equal(mf(L"peercreatorid", L"string", L"notequal", L"James*", &r), 0);
    assert_int_equal(mf(L"peercreatorid", L"string", L"less", L"k", &r), 1);
    assert_int_equal(mf(L"peercreatorid", L"string", L"greater", L"James", &r), 1);
    assert_int_equal(mf(L"peercreatorid", L"int", NULL, L"1", &r), 0);
    /* field strings are plain text, not XML */
    r.creator = L"a&amp;<b>";
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"a&amp;amp;&lt;b&gt;", &r), 1);
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"a&amp;&lt;b&gt;", &r), 0);
    r.creator = NULL;
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"*", &r), 0);
    assert_int_equal(mf(L"peercreatorid", L"string", L"notequal", L"x", &r), 0);
    r.creator = L"";
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"", &r), 1);
    r = sd_rec(REC);
    /* peerlastmodifiedby: the creator unless set */
    assert_int_equal(mf(L"peerlastmodifiedby", L"string", NULL, L"james peters", &r), 1);
    r.modified_by = L"";
    assert_int_equal(mf(L"peerlastmodifiedby", L"string", NULL, L"james peters", &r), 1);
    r.modified_by = L"Bob";
    assert_int_equal(mf(L"peerlastmodifiedby", L"string", NULL, L"james peters", &r), 0);
    assert_int_equal(mf(L"peerLastModifiedBy", L"string", NULL, L"BOB", &r), 1);
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"James Peters", &r), 1);
    r = sd_rec(REC);
    /* peerrecordid / peerrecordtype: {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx} */
    assert_int_equal(mf(L"peerrecordid", L"string", NULL, L"{12345678-9abc-def0-0123-456789abcdef}", &r), 1);
    assert_int_equal(mf(L"peerrecordid", L"string", NULL, L"{12345678-9ABC-DEF0-0123-456789ABCDEF}", &r), 1);
    assert_int_equal(mf(L"peerrecordid", L"string", NULL, L"12345678-9abc-def0-0123-456789abcdef", &r), 0);
    assert_int_equal(mf(L"peerrecordid", L"string", NULL, L"{12345678-*}", &r), 1);
    assert_int_equal(mf(L"peerrecordid", L"string", NULL, L"{????????" L"-????" L"-????" L"-????" L"-????????????}", &r), 1);
    assert_int_equal(mf(L"peerrecordid", L"string", L"greater", L"{12345678-9ABC-DEF0-0123-456789ABCDEE}", &r), 1);
    assert_int_equal(mf(L"peerrecordid", L"string", L"less", L"{2", &r), 1);
    assert_int_equal(mf(L"peerrecordtype", L"string", NULL, L"{a0b0c0d0-0001-0002-0000-000000000010}", &r), 1);
    assert_int_equal(mf(L"peerrecordtype", L"string", NULL, L"{12345678-9abc-def0-0123-456789abcdef}", &r), 0);
    assert_int_equal(mf(L"peerrecordtype", L"string", L"notequal", L"{12345678*", &r), 1);
    assert_int_equal(mf(L"peerrecordid", L"date", NULL, L"2003", &r), 0);
    r.id = NULL;
    assert_int_equal(mf(L"peerrecordid", L"string", NULL, L"*", &r), 0);
    r = sd_rec(REC);
    /* peercreationtime = 2003-01-31T00:00Z, peerlastmodificationtime = 2003-02-15T12:00Z */
    assert_int_equal(mf(L"peercreationtime", L"date", NULL, L"2003-01-31", &r), 1);
    assert_int_equal(mf(L"peercreationtime", L"date", NULL, L"2003-01-31T01:00+01:00", &r), 1);
    assert_int_equal(mf(L"peercreationtime", L"date", L"notequal", L"2003-01-31", &r), 0);
    assert_int_equal(mf(L"peercreationtime", L"date", L"less", L"2003-02", &r), 1);
    assert_int_equal(mf(L"peercreationtime", L"date", L"greater", L"2003-01-30", &r), 1);
    assert_int_equal(mf(L"peercreationtime", L"date", L"lessorequal", L"2003-01-31", &r), 1);
    assert_int_equal(mf(L"peercreationtime", L"date", L"greaterorequal", L"2003-01-31T00:00:00.0000001Z", &r), 0);
    assert_int_equal(mf(L"peerlastmodificationtime", L"date", NULL, L"2003-02-15T12:00:00Z", &r), 1);
    assert_int_equal(mf(L"peerlastmodificationtime", L"date", L"greater", L"2003-01-31", &r), 1);
    assert_int_equal(mf(L"peerlastmodificationtime", L"date", L"less", L"2003-02-28", &r), 1);
    assert_int_equal(mf(L"peerlastmodificationtime", L"date", L"less", L"2003-02-15", &r), 0);
    assert_int_equal(mf(L"peercreationtime", L"string", NULL, L"*", &r), 0);
    assert_int_equal(mf(L"peercreationtime", L"int", L"greater", L"0", &r), 0);
    r.creation = 0;
    assert_int_equal(mf(L"peercreationtime", L"date", NULL, L"1601", &r), 1);
    assert_int_equal(mf(L"peercreationtime", L"date", L"greater", L"1600-12-31T23:59:59.9999999Z", &r), 1);
    r.creation = UINT64_MAX;
    assert_int_equal(mf(L"peercreationtime", L"date", L"greater", L"9999-12-31T23:59:59Z", &r), 1);
    r = sd_rec(REC);
    /* the documented example */
    assert_int_equal(
        qmr(L"<peersearch xmlns:xs=\"https://www.w3.org/2001/XMLSchema\"><and>"
            L"<clause attrib=\"peercreatorid\" type=\"string\" compare=\"equal\">James Peters</clause>"
            L"<and><clause attrib=\"peerlastmodificationtime\" type=\"date\" compare=\"greater\">2003-01-31</clause>"
            L"<clause attrib=\"peerlastmodificationtime\" type=\"date\" compare=\"less\">2003-02-28</clause>"
            L"</and></and></peersearch>",
            &r),
        1);
    /* reserved names in a record's XML (never valid) are not consulted */
    r.attributes = L"<attributes><attribute name=\"peercreatorid\" type=\"string\">Eve</attribute></attributes>";
    assert_int_equal(mf(L"peercreatorid", L"string", NULL, L"eve", &r), 0);
}

/* query_match must survive attribute XML that never passed attr_validate. */
static void test_match_robustness(void **st)
{
    static const wchar_t *const junk[] = {
        L"", L"<", L"<attributes", L"<attributes>", L"<attributes><attribute", L"<attributes><attribute name=\"s",
        L"<attributes><attribute name=\"s\" type=\"string\">Hello", L"<attributes><attribute name=\"s\" type=\"string\">&",
        L"<attributes><attribute name=\"s\" type=\"string\">&#", L"<attributes><attribute name=\"s\" type=\"string\">&#x1",
        L"<?xml", L"<?xml version=\"1.0\"", L"<attributes><attribute name=\"s\" type='string'>x</attribute",
        L"<attributes><attribute name=\"s\" type=\"int\">abc</attribute></attributes>",
        L"<attributes><attribute name=\"s\" type=\"bogus\">x</attribute></attributes>",
        L"<attributes><attribute name=\"s-t\" type=\"string\">x</attribute></attributes>",
        L"<attributes><attribute name=\"s\" type=\"string\">x</wrong></attributes>",
        L"<attributes><attribute name=\"s\" type=\"date\">2003-02-30</attribute></attributes>",
    };
    static const wchar_t *const queries[] = {
        L"<peersearch><clause attrib=\"s\" type=\"string\">*</clause></peersearch>",
        L"<peersearch><clause attrib=\"s\" type=\"string\" compare=\"notequal\">zz</clause></peersearch>",
        L"<peersearch><clause attrib=\"s\" type=\"string\" compare=\"less\">zz</clause></peersearch>",
        L"<peersearch><clause attrib=\"s\" type=\"int\" compare=\"notequal\">1</clause></peersearch>",
        L"<peersearch><clause attrib=\"s\" type=\"date\" compare=\"notequal\">2003</clause></peersearch>",
    };
    size_t i, j;
    (void)st;
    for (i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        pg_search_rec r = sd_rec(junk[i]);
        assert_int_equal(attr_validate(junk[i]), PEER_E_INVALID_ATTRIBUTES);
        for (j = 0; j < sizeof queries / sizeof queries[0]; j++) {
            int m = qmr(queries[j], &r);
            assert_true(m == 0 || m == 1);
        }
    }
    /* a truncated value still reads as far as it goes */
    {
        pg_search_rec r = sd_rec(L"<attributes><attribute name=\"s\" type=\"string\">x</attribute></attributes>");
        assert_int_equal(qmr(queries[0], &r), 1);
        assert_int_equal(query_match(NULL, &r), 0);
    }
    {
        pg_query *q = NULL;
        assert_int_equal(query_compile(queries[0], &q), S_OK);
        assert_int_equal(query_match(q, NULL), 0);
        query_free(q);
    }
}

/* ------------------------------------------------------------------------- */
/* 10,000 records                                                            */
/* ------------------------------------------------------------------------- */

static void itow(long v, wchar_t *out)
{
    wchar_t tmp[24];
    int n = 0, k = 0;
    unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
    do {
        tmp[n++] = (wchar_t)(L'0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (v < 0) out[k++] = L'-';
    while (n) out[k++] = tmp[--n];
    out[k] = 0;
}

static void test_ten_thousand_records(void **st)
{
    enum { N = 10000 };
    wchar_t **attrs = (wchar_t **)calloc(N, sizeof(wchar_t *));
    pg_query *q = NULL;
    size_t i, hits = 0, expect = 0;
    (void)st;
    assert_non_null(attrs);
    for (i = 0; i < N; i++) {
        wchar_t num[24], tag[24], day[3];
        itow((long)i, num);
        itow((long)(i % 10), tag);
        day[0] = (wchar_t)(L'0' + (int)(i % 28 + 1) / 10);
        day[1] = (wchar_t)(L'0' + (int)(i % 28 + 1) % 10);
        day[2] = 0;
        attrs[i] = wcat(L"<attributes><attribute name=\"title\" type=\"string\">Record number ", num,
                        L" of the big test</attribute><attribute name=\"idx\" type=\"int\">", num,
                        L"</attribute><attribute name=\"tag\" type=\"string\">tag-", tag,
                        L"</attribute><attribute name=\"when\" type=\"date\">2003-02-", day,
                        L"T10:00:00Z</attribute></attributes>", (const wchar_t *)NULL);
        if (i % 1000 == 0) assert_int_equal(attr_validate(attrs[i]), S_OK);
        if ((i >= 5000 && i % 10 == 3 && i % 28 + 1 >= 15) || i < 10) expect++;
    }
    assert_int_equal(query_compile(
                         L"<peersearch><or>"
                         L"<and><clause attrib=\"idx\" type=\"int\" compare=\"greaterorequal\">5000</clause>"
                         L"<clause attrib=\"TAG\" type=\"string\">tag-3</clause>"
                         L"<clause attrib=\"when\" type=\"date\" compare=\"greaterorequal\">2003-02-15</clause>"
                         L"<clause attrib=\"title\" type=\"string\">record*big*</clause>"
                         L"<clause attrib=\"peercreatorid\" type=\"string\">james*</clause></and>"
                         L"<clause attrib=\"idx\" type=\"int\" compare=\"less\">10</clause>"
                         L"</or></peersearch>",
                         &q),
                     S_OK);
    for (i = 0; i < N; i++) {
        pg_search_rec r = sd_rec(attrs[i]);
        hits += (size_t)query_match(q, &r);
    }
    assert_int_equal(hits, expect);
    assert_true(expect > 100);
    query_free(q);
    for (i = 0; i < N; i++) free(attrs[i]);
    free(attrs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attr_valid_documents),
        cmocka_unit_test(test_attr_valid_names),
        cmocka_unit_test(test_attr_valid_values),
        cmocka_unit_test(test_attr_entities),
        cmocka_unit_test(test_attr_invalid_structure),
        cmocka_unit_test(test_attr_invalid_names_types),
        cmocka_unit_test(test_attr_invalid_values),
        cmocka_unit_test(test_date_conversion),
        cmocka_unit_test(test_int_parse),
        cmocka_unit_test(test_query_valid_structure),
        cmocka_unit_test(test_query_invalid_structure),
        cmocka_unit_test(test_query_depth_and_length),
        cmocka_unit_test(test_query_out_of_memory),
        cmocka_unit_test(test_wildcards),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_compare_strings),
        cmocka_unit_test(test_compare_ints),
        cmocka_unit_test(test_compare_dates),
        cmocka_unit_test(test_match_semantics),
        cmocka_unit_test(test_boolean_structure),
        cmocka_unit_test(test_many_clauses),
        cmocka_unit_test(test_reserved_fields),
        cmocka_unit_test(test_match_robustness),
        cmocka_unit_test(test_ten_thousand_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
