/* HTTP/1 connections straight to entry JSON lines: `shark-tui dissect --json`'s hot path.
 *
 *   Http1Entries(fallback, head, mid, tls, body_cap, line_head=0)
 *       A dissector (base.Dissector's methods) of one HTTP/1 connection whose start was
 *       captured. It follows the plain cases of `proto.http1.Http1Dissector` — start lines and
 *       ASCII headers of the usual form, Content-Length, chunked and close-delimited bodies,
 *       keep-alive and pipelining, HEAD/204/304 — and emits each exchange as a (ts, line)
 *       tuple: the entry's JSON exactly as `dissect --json` renders the Python entry (msgspec)
 *       and a newline, in a bytearray behind ``line_head`` zero bytes (room for the caller's
 *       framing), without making the entry. ``head`` and ``mid`` are that JSON's fixed parts, made by
 *       the caller with msgspec: ``{"id":"<flow>:`` and ``","proto":"http","src":{…},"dst":{…},
 *       "ts":``.
 *
 *       Everything else (a gap, a 1xx, an Upgrade, a bad line, a non-ASCII header, a body that
 *       needs decoding, a request that may be GraphQL, a timeout…) is the Python dissector's:
 *       the connection is handed over to ``fallback()`` (a fresh HttpDissector), which is fed
 *       again what came since the connection was last idle (both directions between messages,
 *       nothing pending), skipping the exchanges already emitted here, then takes the
 *       connection over. The Python dissector stays the reference: what it makes of the same
 *       bytes is what comes out, whichever side made it (tests/engine/test_http1entries.py).
 *
 *   configure(render_body, query_pairs, exchange_completed, pending_timeout)
 *       The Python helpers used for the rarer bodies and queries, once at import.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_START_LINE (8 * 1024)
#define MAX_CHUNK_LINE (4 * 1024)
#define MAX_MARKS 64
#define MAX_QUEUE 32
#define MAX_HEADERS 256
/* Bytes fed since the connection was last idle kept for a hand-over; past it, hand over. */
#define LOG_CAP (256 * 1024)

#define HANDOVER 1 /* a return value: the Python dissector must take over */

enum { S_HEAD, S_BODY, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_END, S_TRAILERS, S_CLOSE_BODY };
enum { OP_FEED, OP_GAP, OP_CLOSE, OP_FINISH, OP_EXPIRE };

static PyObject *render_body_fn, *query_pairs_fn, *completed_type;
static double pending_timeout = 60.0;

/* -- a growable byte buffer ---------------------------------------------------------------- */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
buf_put(Buf *b, const void *s, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LIT(b, s) buf_put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

static void
buf_free(Buf *b)
{
    PyMem_Free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* -- JSON as msgspec writes it ----------------------------------------------------------- */

/* Eight bytes at a time (SWAR): any byte below `n` (n <= 128), equal to `c`, or over 0x7F. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_LESS(w, n) (((w) - ONES * (n)) & ~(w) & HIGHS)
#define HAS_BYTE(w, c) HAS_LESS((w) ^ (ONES * (c)), 1)

static inline uint64_t
load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* What follows the backslash for each byte msgspec escapes ('u': \u00XX), else 0. */
static char escape_of[256];

static void
init_escapes(void)
{
    for (int c = 0; c < 0x20; c++)
        escape_of[c] = 'u';
    escape_of['"'] = '"';
    escape_of['\\'] = '\\';
    escape_of['\b'] = 'b';
    escape_of['\t'] = 't';
    escape_of['\n'] = 'n';
    escape_of['\f'] = 'f';
    escape_of['\r'] = 'r';
}

/* A JSON string of UTF-8 bytes, escaped as msgspec escapes them. */
static int
put_str(Buf *b, const unsigned char *s, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, n * 6 + 2) < 0)
        return -1;
    char *o = b->p + b->len;
    *o++ = '"';
    Py_ssize_t i = 0;
    while (i < n) {
#ifdef __SSE2__
        /* sixteen at a time up to the next byte to escape (the room reserved for six bytes
         * per byte left covers the whole store) */
        const __m128i flip = _mm_set1_epi8((char)0x80), below = _mm_set1_epi8((char)(0x20 ^ 0x80));
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
        int special = 0;
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i hit = _mm_or_si128(_mm_cmplt_epi8(_mm_xor_si128(v, flip), below),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                    _mm_cmpeq_epi8(v, backslash)));
            int mask = _mm_movemask_epi8(hit);
            _mm_storeu_si128((__m128i *)o, v);
            if (mask == 0) {
                o += 16;
                i += 16;
                continue;
            }
            int k = __builtin_ctz((unsigned)mask);
            o += k;
            i += k;
            special = 1;
            break;
        }
        if (i == n)
            break;
        if (!special && i + 8 <= n) {
#else
        if (i + 8 <= n) {
#endif
            uint64_t w = load8(s + i);
            if (!(HAS_LESS(w, 0x20) | HAS_BYTE(w, '"') | HAS_BYTE(w, '\\'))) {
                memcpy(o, &w, 8);
                o += 8;
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i++];
        char e = escape_of[c];
        if (!e) {
            *o++ = (char)c;
        } else if (e != 'u') {
            o[0] = '\\';
            o[1] = e;
            o += 2;
        } else {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        }
    }
    *o++ = '"';
    b->len = o - b->p;
    return 0;
}

/* A body as a JSON string when it is text as `render_body` has it in plain ASCII (printable,
 * tab, newline, form feed, CR): 0 written; 1 not such text (nothing written); -1 error. The
 * check and the escaping in one pass. */
static int
put_text(Buf *b, const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t start = b->len;
    if (buf_reserve(b, n * 2 + 2) < 0) /* (no \u00XX: those bytes are not text) */
        return -1;
    char *o = b->p + b->len;
    *o++ = '"';
    Py_ssize_t i = 0;
    while (i < n) {
#ifdef __SSE2__
        const __m128i flip = _mm_set1_epi8((char)0x80), below = _mm_set1_epi8((char)(0x20 ^ 0x80));
        const __m128i from_del = _mm_set1_epi8((char)-2); /* (c ^ 0x80) > -2: c >= 0x7F */
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i)), x = _mm_xor_si128(v, flip);
            __m128i hit = _mm_or_si128(
                _mm_or_si128(_mm_cmplt_epi8(x, below), _mm_cmpgt_epi8(x, from_del)),
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
            int mask = _mm_movemask_epi8(hit);
            _mm_storeu_si128((__m128i *)o, v);
            if (mask == 0) {
                o += 16;
                i += 16;
                continue;
            }
            int k = __builtin_ctz((unsigned)mask);
            o += k;
            i += k;
            break;
        }
        if (i == n)
            break;
#endif
        unsigned char c = s[i++];
        if (c >= 0x7f || (c < 0x20 && c != '\t' && c != '\n' && c != '\f' && c != '\r')) {
            b->len = start;
            return 1;
        }
        char e = escape_of[c];
        if (!e) {
            *o++ = (char)c;
        } else {
            o[0] = '\\';
            o[1] = e;
            o += 2;
        }
    }
    *o++ = '"';
    b->len = o - b->p;
    return 0;
}

static int
put_int(Buf *b, long long v)
{
    char tmp[24], *e = tmp + sizeof tmp, *p = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return buf_put(b, p, e - p);
}

/* A float as msgspec writes it, where that is Python's repr (checked against msgspec by the
 * tests): HANDOVER outside that range. */
static int
put_float(Buf *b, double x)
{
    double a = fabs(x);
    if (!(x == 0.0 || (a >= 1e-4 && a < 1e15)))
        return HANDOVER;
    char *s = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL)
        return -1;
    int rc = buf_put(b, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return rc;
}

/* round(x, 3) as Python computes it (correctly rounded decimal, then back to a double). */
static int
round3(double x, double *out)
{
    if (!(fabs(x) < 1e15))
        return HANDOVER;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.3f", x);
    *out = strtod(tmp, NULL);
    return 0;
}

static int put_items(Buf *b, PyObject *dict);

/* str, int, bool, None, list and dict (str keys) objects; HANDOVER for anything else. */
static int
put_obj(Buf *b, PyObject *o)
{
    if (PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL)
            return -1;
        return put_str(b, (const unsigned char *)s, n);
    }
    if (o == Py_None)
        return PUT_LIT(b, "null");
    if (o == Py_True)
        return PUT_LIT(b, "true");
    if (o == Py_False)
        return PUT_LIT(b, "false");
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return HANDOVER;
        if (v == -1 && PyErr_Occurred())
            return -1;
        return put_int(b, v);
    }
    if (PyList_CheckExact(o)) {
        if (PUT_LIT(b, "[") < 0)
            return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++) {
            if (i && PUT_LIT(b, ",") < 0)
                return -1;
            int rc = put_obj(b, PyList_GET_ITEM(o, i));
            if (rc)
                return rc;
        }
        return PUT_LIT(b, "]");
    }
    if (PyDict_CheckExact(o)) {
        if (PUT_LIT(b, "{") < 0)
            return -1;
        int rc = put_items(b, o);
        if (rc)
            return rc;
        return PUT_LIT(b, "}");
    }
    return HANDOVER;
}

/* A dict's "key":value pairs, without the braces. */
static int
put_items(Buf *b, PyObject *dict)
{
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k))
            return HANDOVER;
        if (i++ && PUT_LIT(b, ",") < 0)
            return -1;
        int rc = put_obj(b, k);
        if (rc)
            return rc;
        if (PUT_LIT(b, ":") < 0)
            return -1;
        rc = put_obj(b, v);
        if (rc)
            return rc;
    }
    return 0;
}

/* -- messages, pairs, directions ---------------------------------------------------------- */

typedef struct {
    Py_ssize_t off, len;
} Span; /* in a message's `head` */

typedef struct {
    Span name, value;
} Header;

typedef struct {
    double ts;
    char version; /* the digit of HTTP/1.x */
    Buf head;     /* the start line and header lines as sent */
    Span method, target, reason;
    int status;
    Header *headers;
    int n_headers;
    int has_host, has_ce, has_ctype;
    Span host, ce, ctype;
    Buf body;
    int cap_hit;
    Py_ssize_t body_size, wire;
} Msg;

typedef struct {
    Msg *req, *resp;
    int req_done, resp_done;
} Pair;

typedef struct {
    int state;
    Buf buf;
    Py_ssize_t remaining, head_scan;
    Msg *msg;
    Pair *pair;
    int n_marks;
    Py_ssize_t mark_off[MAX_MARKS];
    double mark_ts[MAX_MARKS];
} Side;

typedef struct {
    int op, dir;
    PyObject *data; /* OP_FEED */
    Py_ssize_t size; /* OP_GAP */
    double ts;
} LogOp;

typedef struct {
    PyObject_HEAD
    PyObject *fallback; /* makes the Python dissector */
    PyObject *py;       /* it, once it took over */
    PyObject *head, *mid;
    int tls;
    Py_ssize_t body_cap, line_head;
    long long n; /* entries emitted (the flow's entry count) */
    Side sides[2];
    Pair *queue[MAX_QUEUE];
    int n_queue;
    LogOp *log;
    int n_log, log_cap;
    Py_ssize_t log_bytes;
    long long emitted; /* entries emitted since the log began */
} Fast;

static void
msg_free(Msg *m)
{
    if (m == NULL)
        return;
    buf_free(&m->head);
    buf_free(&m->body);
    PyMem_Free(m->headers);
    PyMem_Free(m);
}

static void
pair_free(Pair *p)
{
    if (p == NULL)
        return;
    msg_free(p->req);
    msg_free(p->resp);
    PyMem_Free(p);
}

static void
log_clear(Fast *f)
{
    for (int i = 0; i < f->n_log; i++)
        Py_XDECREF(f->log[i].data);
    f->n_log = 0;
    f->log_bytes = 0;
    f->emitted = 0;
}

/* Drop the C state (after a hand-over, or at dealloc). Messages are owned by pairs, except a
 * message whose pair is gone (never here: every message belongs to a queued pair). */
static void
state_free(Fast *f)
{
    for (int i = 0; i < f->n_queue; i++)
        pair_free(f->queue[i]);
    f->n_queue = 0;
    for (int s = 0; s < 2; s++) {
        buf_free(&f->sides[s].buf);
        f->sides[s].msg = NULL;
        f->sides[s].pair = NULL;
    }
}

static int
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+.^_`|~-", c) != NULL;
}

static int
span_eq_ci(const Msg *m, Span s, const char *lit)
{
    Py_ssize_t n = (Py_ssize_t)strlen(lit);
    if (s.len != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (Py_TOLOWER((unsigned char)m->head.p[s.off + i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* The headers of head[start:end] (no start line, no blank line); HANDOVER unless every line is
 * plain ASCII "name: value" (what `_http1.header_block` takes), or an interesting header the
 * framing reads repeats. */
static int
parse_headers(Msg *m, Py_ssize_t start, Py_ssize_t end, Span *cl, Span *te, Span *upgrade)
{
    const unsigned char *b = (const unsigned char *)m->head.p;
    int have_cl = 0, have_te = 0, have_up = 0;
    cl->len = te->len = upgrade->len = -1;
    if (end <= start)
        return 0;
    for (Py_ssize_t i = start; i < end; i++)
        if (b[i] & 0x80)
            return HANDOVER;
    Py_ssize_t line = start;
    int cap = 0;
    for (;;) {
        const unsigned char *nl = memchr(b + line, '\n', (size_t)(end - line));
        Py_ssize_t stop = nl ? nl - b : end;
        const unsigned char *colon = memchr(b + line, ':', (size_t)(stop - line));
        if (colon == NULL || colon == b + line || b[line] == ' ' || b[line] == '\t')
            return HANDOVER;
        Py_ssize_t name_end = colon - b, v = name_end + 1, v_end = stop;
        while (name_end > line && (b[name_end - 1] == ' ' || b[name_end - 1] == '\t'))
            name_end--;
        while (v < v_end && (b[v] == ' ' || b[v] == '\t' || b[v] == '\r'))
            v++;
        while (v_end > v && (b[v_end - 1] == ' ' || b[v_end - 1] == '\t' || b[v_end - 1] == '\r'))
            v_end--;
        if (m->n_headers == cap) {
            if (cap == MAX_HEADERS)
                return HANDOVER;
            cap = cap ? cap * 2 : 16;
            Header *h = PyMem_Realloc(m->headers, sizeof(Header) * (size_t)cap);
            if (h == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            m->headers = h;
        }
        Header *h = &m->headers[m->n_headers++];
        h->name.off = line;
        h->name.len = name_end - line;
        h->value.off = v;
        h->value.len = v_end - v;
        if (span_eq_ci(m, h->name, "content-length")) {
            if (have_cl++)
                return HANDOVER;
            *cl = h->value;
        } else if (span_eq_ci(m, h->name, "transfer-encoding")) {
            if (have_te++)
                return HANDOVER;
            *te = h->value;
        } else if (span_eq_ci(m, h->name, "upgrade")) {
            if (have_up++)
                return HANDOVER;
            *upgrade = h->value;
        } else if (span_eq_ci(m, h->name, "content-encoding")) {
            if (m->has_ce++)
                return HANDOVER;
            m->ce = h->value;
        } else if (span_eq_ci(m, h->name, "host")) {
            if (!m->has_host++)
                m->host = h->value;
        } else if (span_eq_ci(m, h->name, "content-type")) {
            if (!m->has_ctype++)
                m->ctype = h->value;
        }
        if (nl == NULL)
            break;
        line = stop + 1;
    }
    return 0;
}

/* A Content-Length value of plain digits: its number; -1 for anything else (HANDOVER). */
static long long
content_length(const Msg *m, Span s)
{
    if (s.len < 1 || s.len > 15)
        return -1;
    long long v = 0;
    for (Py_ssize_t i = 0; i < s.len; i++) {
        char c = m->head.p[s.off + i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    return v;
}

static double
time_at(const Side *s, Py_ssize_t pos)
{
    for (int i = s->n_marks - 1; i >= 0; i--)
        if (s->mark_off[i] <= pos)
            return s->mark_ts[i];
    return s->n_marks ? s->mark_ts[0] : 0.0;
}

static void
keep(Fast *f, Msg *m, const char *p, Py_ssize_t take, int *err)
{
    Py_ssize_t room = f->body_cap - m->body.len;
    if (room >= take) {
        if (buf_put(&m->body, p, take) < 0)
            *err = -1;
    } else {
        if (room > 0 && buf_put(&m->body, p, room) < 0)
            *err = -1;
        m->cap_hit = 1;
    }
    m->body_size += take;
    m->wire += take;
}

/* -- emission ---------------------------------------------------------------------------- */

static int
put_headers(Buf *o, const Msg *m)
{
    if (PUT_LIT(o, "[") < 0)
        return -1;
    for (int i = 0; i < m->n_headers; i++) {
        const Header *h = &m->headers[i];
        if ((i && PUT_LIT(o, ",") < 0) || PUT_LIT(o, "[") < 0 ||
            put_str(o, (unsigned char *)m->head.p + h->name.off, h->name.len) < 0 ||
            PUT_LIT(o, ",") < 0 ||
            put_str(o, (unsigned char *)m->head.p + h->value.off, h->value.len) < 0 ||
            PUT_LIT(o, "]") < 0)
            return -1;
    }
    return PUT_LIT(o, "]");
}

/* The Content-Encoding a message's body was sent in, as `render_body` names it (stripped,
 * lower case): 0 none or identity, 1 gzip, 2 x-gzip, 3 deflate, -1 anything else. */
static int
coding_of(const Msg *m)
{
    if (!m->has_ce)
        return 0;
    char low[16];
    Py_ssize_t n = m->ce.len;
    if (n >= (Py_ssize_t)sizeof low)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m->head.p[m->ce.off + i];
        if (c <= 0x20 || c >= 0x7f) /* (what `str.strip` might take off: the Python code) */
            return -1;
        low[i] = (char)Py_TOLOWER(c);
    }
    low[n] = 0;
    if (n == 0 || strcmp(low, "identity") == 0)
        return 0;
    return strcmp(low, "gzip") == 0 ? 1 : strcmp(low, "x-gzip") == 0 ? 2
         : strcmp(low, "deflate") == 0 ? 3 : -1;
}

static const char *const coding_names[] = {NULL, "gzip", "x-gzip", "deflate"};

/* The body decompressed, when the whole stream is there and comes out shorter than the cap
 * (what `bodies._inflate` then gives, with neither a cut nor an error); else NULL, and the
 * Python code decides. */
static const unsigned char *
inflated(Fast *f, const Msg *m, int coding, Py_ssize_t *len)
{
    static Buf out;
    if (f->body_cap <= 0 || buf_reserve(&out, f->body_cap) < 0) {
        PyErr_Clear();
        return NULL;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, coding == 3 ? MAX_WBITS : 16 + MAX_WBITS) != Z_OK)
        return NULL;
    z.next_in = (Bytef *)m->body.p;
    z.avail_in = (uInt)m->body.len;
    z.next_out = (Bytef *)out.p;
    z.avail_out = (uInt)f->body_cap;
    int rc;
    do
        rc = inflate(&z, Z_NO_FLUSH);
    while (rc == Z_OK && z.avail_out > 0 && z.avail_in > 0);
    Py_ssize_t produced = (Py_ssize_t)z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END || produced >= f->body_cap)
        return NULL;
    *len = produced;
    return (const unsigned char *)out.p;
}

/* The body keys of `render_body` and body_size: plain ASCII text (decompressed first when it
 * was sent compressed) here, the rest by the Python function itself. */
static int
put_body(Fast *f, Buf *o, const Msg *m)
{
    const unsigned char *p = (const unsigned char *)m->body.p;
    Py_ssize_t n = m->body.len;
    int coding = n ? coding_of(m) : 0;
    if (coding > 0 && m->body.len <= UINT_MAX) {
        Py_ssize_t len;
        const unsigned char *text = inflated(f, m, coding, &len);
        Py_ssize_t mark = o->len;
        int rc = text == NULL ? 1 : PUT_LIT(o, "\"body\":") < 0 ? -1 : put_text(o, text, len);
        if (rc < 0)
            return -1;
        if (rc == 1)
            o->len = mark;
        else {
            if (PUT_LIT(o, ",\"body_encoding\":\"text\",\"body_truncated\":") < 0 ||
                (m->cap_hit ? PUT_LIT(o, "true") : PUT_LIT(o, "false")) < 0 ||
                PUT_LIT(o, ",\"content_encoding\":\"") < 0 ||
                buf_put(o, coding_names[coding], (Py_ssize_t)strlen(coding_names[coding])) < 0 ||
                PUT_LIT(o, "\",\"body_size\":") < 0 || put_int(o, m->body_size) < 0)
                return -1;
            return 0;
        }
    }
    int text = 1;
    if (n == 0 || coding == 0) {
        Py_ssize_t mark = o->len;
        if (PUT_LIT(o, "\"body\":") < 0 || (text = put_text(o, p, n)) < 0)
            return -1;
        if (text == 1)
            o->len = mark;
    }
    if (text == 0) {
        if (PUT_LIT(o, ",\"body_encoding\":\"text\",\"body_truncated\":") < 0 ||
            (m->cap_hit ? PUT_LIT(o, "true") : PUT_LIT(o, "false")) < 0 ||
            PUT_LIT(o, ",\"content_encoding\":null") < 0)
            return -1;
    } else {
        PyObject *raw = PyBytes_FromStringAndSize((const char *)p, n);
        PyObject *coding =
            m->has_ce ? PyUnicode_DecodeASCII(m->head.p + m->ce.off, m->ce.len, NULL) : Py_NewRef(Py_None);
        PyObject *cap = PyLong_FromSsize_t(f->body_cap);
        PyObject *args = raw ? PyTuple_Pack(1, raw) : NULL;
        PyObject *kw = (coding && cap)
                           ? Py_BuildValue("{sOsOsO}", "content_encoding", coding, "cap", cap,
                                           "truncated", m->cap_hit ? Py_True : Py_False)
                           : NULL;
        PyObject *d = (args && kw) ? PyObject_Call(render_body_fn, args, kw) : NULL;
        Py_XDECREF(raw);
        Py_XDECREF(coding);
        Py_XDECREF(cap);
        Py_XDECREF(args);
        Py_XDECREF(kw);
        if (d == NULL)
            return -1;
        int rc = PyDict_CheckExact(d) ? put_items(o, d) : HANDOVER;
        Py_DECREF(d);
        if (rc)
            return rc;
    }
    if (PUT_LIT(o, ",\"body_size\":") < 0 || put_int(o, m->body_size) < 0)
        return -1;
    return 0;
}

/* `may_be_graphql` for a request whose path and query pair names are given. */
static int
may_be_graphql(const Msg *m, const char *path, Py_ssize_t path_len, int query_named_query)
{
    Span meth = m->method;
    const char *mp = m->head.p + meth.off;
    int get = meth.len == 3 && memcmp(mp, "GET", 3) == 0;
    int post = meth.len == 4 && memcmp(mp, "POST", 4) == 0;
    if (!get && !post)
        return 0;
    Py_ssize_t e = path_len;
    while (e > 0 && path[e - 1] == '/')
        e--;
    if (path_len && e >= 7 && memcmp(path + e - 7, "graphql", 7) == 0)
        return 1;
    if (get)
        return query_named_query;
    if (m->has_ctype) {
        const char *c = m->head.p + m->ctype.off;
        for (Py_ssize_t i = 0; i + 7 <= m->ctype.len; i++) {
            Py_ssize_t j = 0;
            while (j < 7 && Py_TOLOWER((unsigned char)c[i + j]) == "graphql"[j])
                j++;
            if (j == 7)
                return 1;
        }
    }
    const unsigned char *b = (const unsigned char *)m->body.p;
    Py_ssize_t n = m->body.len, i = 0, head = n < 64 ? n : 64;
    while (i < head && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r' ||
                        b[i] == 0x0b || b[i] == 0x0c))
        i++;
    if (i >= head || (b[i] != '{' && b[i] != '['))
        return 0;
    Py_ssize_t look = n < 4096 ? n : 4096;
    for (Py_ssize_t k = 0; k + 7 <= look; k++)
        if (memcmp(b + k, "\"query\"", 7) == 0)
            return 1;
    return 0;
}

/* `"path":…,"query":[…]` of `_split_target`; sets *graphql from `may_be_graphql`. */
static int
put_target(Buf *o, const Msg *m, int *graphql)
{
    const char *t = m->head.p + m->target.off;
    Py_ssize_t n = m->target.len;
    if (n == 0 || t[0] != '/') {
        for (Py_ssize_t i = 0; i + 3 <= n; i++)
            if (memcmp(t + i, "://", 3) == 0)
                return HANDOVER; /* absolute-form: the Python code */
        *graphql = may_be_graphql(m, t, n, 0);
        if (PUT_LIT(o, "\"path\":") < 0 || put_str(o, (const unsigned char *)t, n) < 0 ||
            PUT_LIT(o, ",\"query\":[]") < 0)
            return -1;
        return 0;
    }
    const char *q = memchr(t, '?', (size_t)n);
    Py_ssize_t path_len = q ? q - t : n;
    const char *qs = q ? q + 1 : t + n;
    Py_ssize_t qn = q ? t + n - qs : 0;
    if (PUT_LIT(o, "\"path\":") < 0 || put_str(o, (const unsigned char *)t, path_len) < 0 ||
        PUT_LIT(o, ",\"query\":") < 0)
        return -1;
    int named_query = 0;
    if (qn && memchr(qs, '%', (size_t)qn)) {
        PyObject *s = PyUnicode_DecodeASCII(qs, qn, NULL);
        PyObject *pairs = s ? PyObject_CallOneArg(query_pairs_fn, s) : NULL;
        Py_XDECREF(s);
        if (pairs == NULL)
            return -1;
        int rc = put_obj(o, pairs);
        if (rc == 0 && PyList_Check(pairs)) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
                PyObject *pair = PyList_GET_ITEM(pairs, i);
                if (PyList_Check(pair) && PyList_GET_SIZE(pair) > 0 &&
                    PyUnicode_Check(PyList_GET_ITEM(pair, 0)) &&
                    PyUnicode_CompareWithASCIIString(PyList_GET_ITEM(pair, 0), "query") == 0)
                    named_query = 1;
            }
        }
        Py_DECREF(pairs);
        if (rc)
            return rc;
    } else {
        if (PUT_LIT(o, "[") < 0)
            return -1;
        int first = 1;
        Py_ssize_t i = 0;
        while (i <= qn && qn) {
            const char *amp = memchr(qs + i, '&', (size_t)(qn - i));
            Py_ssize_t stop = amp ? amp - qs : qn;
            if (stop > i) {
                const char *eq = memchr(qs + i, '=', (size_t)(stop - i));
                Py_ssize_t name_end = eq ? eq - qs : stop, v = eq ? name_end + 1 : stop;
                Py_ssize_t parts[2][2] = {{i, name_end}, {v, stop}};
                if ((!first && PUT_LIT(o, ",") < 0) || PUT_LIT(o, "[") < 0)
                    return -1;
                first = 0;
                for (int k = 0; k < 2; k++) {
                    Py_ssize_t a = parts[k][0], len = parts[k][1] - a;
                    Buf piece = {NULL, 0, 0};
                    if (buf_put(&piece, qs + a, len) < 0)
                        return -1;
                    for (Py_ssize_t j = 0; j < len; j++)
                        if (piece.p[j] == '+')
                            piece.p[j] = ' ';
                    if (k == 0 && len == 5 && memcmp(piece.p, "query", 5) == 0)
                        named_query = 1;
                    int rc = (k ? PUT_LIT(o, ",") : 0) < 0 ||
                             put_str(o, (unsigned char *)piece.p, len) < 0;
                    buf_free(&piece);
                    if (rc)
                        return -1;
                }
                if (PUT_LIT(o, "]") < 0)
                    return -1;
            }
            if (amp == NULL)
                break;
            i = stop + 1;
        }
        if (PUT_LIT(o, "]") < 0)
            return -1;
    }
    *graphql = may_be_graphql(m, t, path_len, named_query);
    return 0;
}

/* The pair as a (ts, line) tuple appended to `out`; HANDOVER when the line is not ours to
 * write (GraphQL, an absolute-form target, a float msgspec writes otherwise). */
static int
emit(Fast *f, Pair *pair, PyObject *out)
{
    /* the line and the request object, kept from one entry to the next (no reallocation) */
    static Buf line_buf, req_buf;
    const Msg *rq = pair->req, *rs = pair->resp;
    Buf *o = &line_buf, *req = &req_buf;
    int rc = -1, graphql = 0;
    double latency;
    o->len = req->len = 0;
    if (buf_reserve(o, f->line_head) < 0)
        return -1;
    memset(o->p, 0, (size_t)f->line_head);
    o->len = f->line_head;
    /* the request object first: it decides GraphQL */
    if (PUT_LIT(req, "{\"version\":\"HTTP/1.") < 0 || buf_put(req, &rq->version, 1) < 0 ||
        PUT_LIT(req, "\",\"method\":") < 0 ||
        put_str(req, (unsigned char *)rq->head.p + rq->method.off, rq->method.len) < 0 ||
        PUT_LIT(req, ",\"target\":") < 0 ||
        put_str(req, (unsigned char *)rq->head.p + rq->target.off, rq->target.len) < 0 ||
        PUT_LIT(req, ",") < 0)
        goto done;
    if ((rc = put_target(req, rq, &graphql)) != 0)
        goto done;
    rc = -1;
    if (graphql) {
        rc = HANDOVER;
        goto done;
    }
    if (PUT_LIT(req, ",\"headers\":") < 0 || put_headers(req, rq) < 0 || PUT_LIT(req, ",") < 0)
        goto done;
    if ((rc = put_body(f, req, rq)) != 0)
        goto done;
    rc = -1;
    if (PUT_LIT(req, "}") < 0)
        goto done;

    long long n = f->n + 1;
    if (buf_put(o, PyBytes_AS_STRING(f->head), PyBytes_GET_SIZE(f->head)) < 0 ||
        put_int(o, n) < 0 ||
        buf_put(o, PyBytes_AS_STRING(f->mid), PyBytes_GET_SIZE(f->mid)) < 0)
        goto done;
    if ((rc = put_float(o, rq->ts)) != 0)
        goto done;
    if ((rc = round3((rs->ts - rq->ts) * 1000.0, &latency)) != 0)
        goto done;
    if (PUT_LIT(o, ",\"latency_ms\":") < 0) {
        rc = -1;
        goto done;
    }
    if ((rc = put_float(o, latency)) != 0)
        goto done;
    rc = -1;
    if (PUT_LIT(o, ",\"method\":") < 0 ||
        put_str(o, (unsigned char *)rq->head.p + rq->method.off, rq->method.len) < 0 ||
        PUT_LIT(o, ",\"summary\":") < 0 ||
        put_str(o, (unsigned char *)rq->head.p + rq->target.off, rq->target.len) < 0 ||
        PUT_LIT(o, ",\"status\":") < 0 || put_int(o, rs->status) < 0 ||
        PUT_LIT(o, ",\"request_size\":") < 0 || put_int(o, rq->wire) < 0 ||
        PUT_LIT(o, ",\"response_size\":") < 0 || put_int(o, rs->wire) < 0 ||
        (f->tls ? PUT_LIT(o, ",\"tls\":true") : PUT_LIT(o, ",\"tls\":false")) < 0 ||
        PUT_LIT(o, ",\"request\":") < 0 || buf_put(o, req->p, req->len) < 0 ||
        PUT_LIT(o, ",\"response\":{\"version\":\"HTTP/1.") < 0 ||
        buf_put(o, &rs->version, 1) < 0 || PUT_LIT(o, "\",\"status\":") < 0 ||
        put_int(o, rs->status) < 0 || PUT_LIT(o, ",\"reason\":") < 0 ||
        put_str(o, (unsigned char *)rs->head.p + rs->reason.off, rs->reason.len) < 0 ||
        PUT_LIT(o, ",\"headers\":") < 0 || put_headers(o, rs) < 0 || PUT_LIT(o, ",") < 0)
        goto done;
    if ((rc = put_body(f, o, rs)) != 0)
        goto done;
    rc = -1;
    if (PUT_LIT(o, "},\"error\":null,\"host\":") < 0)
        goto done;
    if (rq->has_host ? put_str(o, (unsigned char *)rq->head.p + rq->host.off, rq->host.len) < 0
                     : PUT_LIT(o, "null") < 0)
        goto done;
    if (PUT_LIT(o, "}\n") < 0)
        goto done;
    PyObject *line = PyByteArray_FromStringAndSize(o->p, o->len);
    PyObject *ts = line ? PyFloat_FromDouble(rq->ts) : NULL;
    PyObject *item = ts ? PyTuple_Pack(2, ts, line) : NULL;
    Py_XDECREF(line);
    Py_XDECREF(ts);
    if (item == NULL)
        goto done;
    rc = PyList_Append(out, item);
    Py_DECREF(item);
    if (rc == 0) {
        f->n = n;
        f->emitted++;
    }
done:
    return rc;
}

/* `_drain`: emit the pairs at the head of the queue whose both halves are complete. */
static int
drain(Fast *f, PyObject *out)
{
    while (f->n_queue) {
        Pair *p = f->queue[0];
        if (!(p->req_done && p->resp_done))
            return 0;
        int rc = emit(f, p, out);
        if (rc)
            return rc;
        memmove(f->queue, f->queue + 1, sizeof(Pair *) * (size_t)(f->n_queue - 1));
        f->n_queue--;
        pair_free(p);
    }
    return 0;
}

static int
end_message(Fast *f, Side *s, int client, PyObject *out)
{
    Pair *p = s->pair;
    s->msg = NULL;
    s->pair = NULL;
    s->head_scan = 0;
    s->state = S_HEAD;
    if (client)
        p->req_done = 1;
    else
        p->resp_done = 1;
    return drain(f, out);
}

/* The start line b[pos:e] (without its line end) into `m`, when it has the plain form:
 * "METHOD target HTTP/1.x" (a token, one space, printable ASCII without spaces) or
 * "HTTP/1.x NNN reason" (printable ASCII or tabs). 0 for anything else: the Python code. */
static int
start_line(Msg *m, int client, const char *b, Py_ssize_t pos, Py_ssize_t e)
{
    const unsigned char *u = (const unsigned char *)b;
    Py_ssize_t i = pos;
    if (client) {
        while (i < e && is_tchar(u[i]))
            i++;
        if (i == pos || i >= e || u[i] != ' ')
            return 0;
        m->method.off = 0;
        m->method.len = i - pos;
        i++;
        Py_ssize_t t = i;
        while (i < e && u[i] > 0x20 && u[i] < 0x7f)
            i++;
        if (i == t || e - i != 9 || u[i] != ' ' || memcmp(b + i + 1, "HTTP/1.", 7) != 0 ||
            u[i + 8] < '0' || u[i + 8] > '9')
            return 0;
        m->target.off = t - pos;
        m->target.len = i - t;
        m->version = b[i + 8];
    } else {
        if (e - i < 12 || memcmp(b + i, "HTTP/1.", 7) != 0 || u[i + 7] < '0' || u[i + 7] > '9' ||
            u[i + 8] != ' ')
            return 0;
        m->version = b[i + 7];
        for (int k = 9; k < 12; k++)
            if (u[i + k] < '0' || u[i + k] > '9')
                return 0;
        m->status = (u[i + 9] - '0') * 100 + (u[i + 10] - '0') * 10 + (u[i + 11] - '0');
        Py_ssize_t r = i + 12, r_end = e;
        if (r < e && u[r] != ' ' && u[r] != '\t')
            return 0;
        for (Py_ssize_t k = r; k < e; k++)
            if (!((u[k] >= 0x20 && u[k] < 0x7f) || u[k] == '\t'))
                return 0;
        while (r < r_end && (u[r] == ' ' || u[r] == '\t'))
            r++;
        while (r_end > r && (u[r_end - 1] == ' ' || u[r_end - 1] == '\t'))
            r_end--;
        m->reason.off = r - pos;
        m->reason.len = r_end - r;
    }
    return 1;
}

/* A message head at b[pos:]: the start line ends at `nl`, the head at `end` (after its blank
 * line; the header lines stop at `hdr_end`). */
static int
start_message(Fast *f, Side *s, int client, const char *b, Py_ssize_t pos, Py_ssize_t nl,
              Py_ssize_t hdr_end, Py_ssize_t end, double ts, PyObject *out)
{
    const unsigned char *u = (const unsigned char *)b;
    Py_ssize_t e = nl;
    if (e > pos && u[e - 1] == '\r')
        e--;
    Msg *m = PyMem_Calloc(1, sizeof(Msg));
    if (m == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    m->ts = ts;
    m->wire = end - pos;
    /* the head's bytes from the start line on, without the blank line */
    Py_ssize_t keep_len = (hdr_end > nl ? hdr_end : nl) - pos;
    if (buf_put(&m->head, b + pos, keep_len) < 0) {
        msg_free(m);
        return -1;
    }
    if (!start_line(m, client, b, pos, e))
        goto handover;
    Span cl, te, up;
    int rc = parse_headers(m, nl + 1 - pos, hdr_end - pos, &cl, &te, &up);
    if (rc == HANDOVER)
        goto handover;
    if (rc < 0) {
        msg_free(m);
        return -1;
    }
    long long length = -1; /* -1: no Content-Length */
    if (cl.len >= 0 && (length = content_length(m, cl)) < 0)
        goto handover;
    int chunked = 0;
    if (te.len >= 0) {
        if (!span_eq_ci(m, te, "chunked"))
            goto handover;
        chunked = 1;
    }
    if (client) {
        if (up.len >= 0 || f->n_queue == MAX_QUEUE ||
            (m->method.len == 7 && memcmp(m->head.p, "CONNECT", 7) == 0))
            goto handover;
        Pair *p = PyMem_Calloc(1, sizeof(Pair));
        if (p == NULL) {
            msg_free(m);
            PyErr_NoMemory();
            return -1;
        }
        p->req = m;
        f->queue[f->n_queue++] = p;
        s->pair = p;
        s->msg = m;
        if (chunked) {
            s->state = S_CHUNK_SIZE;
            return 0;
        }
        if (length > 0) {
            s->remaining = length;
            s->state = S_BODY;
            return buf_reserve(&m->body, length < f->body_cap ? length : f->body_cap);
        }
        return end_message(f, s, 1, out);
    }
    if (m->status < 200) /* 1xx, 101 and nonsense: the Python code */
        goto handover;
    Pair *p = NULL;
    for (int k = 0; k < f->n_queue; k++)
        if (f->queue[k]->resp == NULL) {
            p = f->queue[k];
            break;
        }
    if (p == NULL) /* no request: the Python code */
        goto handover;
    p->resp = m;
    s->pair = p;
    s->msg = m;
    const Msg *rq = p->req;
    if ((rq->method.len == 4 && memcmp(rq->head.p + rq->method.off, "HEAD", 4) == 0) ||
        m->status == 204 || m->status == 304)
        return end_message(f, s, 0, out);
    if (chunked)
        s->state = S_CHUNK_SIZE;
    else if (length < 0)
        s->state = S_CLOSE_BODY;
    else if (length > 0) {
        s->remaining = length;
        s->state = S_BODY;
        return buf_reserve(&m->body, length < f->body_cap ? length : f->body_cap);
    } else
        return end_message(f, s, 0, out);
    return 0;
handover:
    msg_free(m);
    return HANDOVER;
}

/* `_run` over b[0:n] (the direction's buffer, or the fed bytes when it was empty); bytes from
 * `base` on came at `ts`. Sets *consumed. */
static int
run(Fast *f, Side *s, int client, const char *b, Py_ssize_t n, Py_ssize_t base, double ts,
    Py_ssize_t *consumed, PyObject *out)
{
    const unsigned char *u = (const unsigned char *)b;
    Py_ssize_t pos = 0;
    int rc = 0, err = 0;
    while (pos < n) {
        int st = s->state;
        if (st == S_BODY || st == S_CHUNK_DATA) {
            Py_ssize_t take = s->remaining < n - pos ? s->remaining : n - pos;
            keep(f, s->msg, b + pos, take, &err);
            if (err)
                return -1;
            pos += take;
            s->remaining -= take;
            if (!s->remaining) {
                if (st == S_BODY) {
                    if ((rc = end_message(f, s, client, out)) != 0)
                        break;
                } else
                    s->state = S_CHUNK_END;
            }
        } else if (st == S_HEAD) {
            while (pos < n && (u[pos] == '\r' || u[pos] == '\n'))
                pos++;
            if (pos >= n)
                break;
            Py_ssize_t lim = n - pos < MAX_START_LINE + 1 ? n - pos : MAX_START_LINE + 1;
            const char *nlp = memchr(b + pos, '\n', (size_t)lim);
            if (nlp == NULL) {
                if (n - pos > MAX_START_LINE)
                    return HANDOVER;
                break;
            }
            Py_ssize_t nl = nlp - b;
            if (s->head_scan == 0) { /* a start line Python would reject now, not later */
                Msg probe;
                Py_ssize_t e = nl > pos && u[nl - 1] == '\r' ? nl - 1 : nl;
                if (!start_line(&probe, client, b, pos, e))
                    return HANDOVER;
            }
            Py_ssize_t from = nl > pos + s->head_scan ? nl : pos + s->head_scan;
            Py_ssize_t stop = pos + MAX_HEADER_BYTES < n ? pos + MAX_HEADER_BYTES : n;
            Py_ssize_t hdr_end = -1, end = -1;
            for (Py_ssize_t k = from; k < stop; k++) {
                const char *q = memchr(b + k, '\n', (size_t)(stop - k));
                if (q == NULL)
                    break;
                k = q - b;
                if (k + 1 < stop && u[k + 1] == '\n') {
                    hdr_end = k;
                    end = k + 2;
                    break;
                }
                if (k + 2 < stop && u[k + 1] == '\r' && u[k + 2] == '\n') {
                    hdr_end = k;
                    end = k + 3;
                    break;
                }
            }
            if (end < 0) {
                if (n - pos >= MAX_HEADER_BYTES)
                    return HANDOVER;
                s->head_scan = n - pos - 2 > 0 ? n - pos - 2 : 0;
                break;
            }
            s->head_scan = 0;
            double head_ts = pos < base ? time_at(s, pos) : ts;
            rc = start_message(f, s, client, b, pos, nl, hdr_end, end, head_ts, out);
            if (rc)
                break;
            pos = end;
        } else if (st == S_CHUNK_SIZE) {
            Py_ssize_t lim = n - pos < MAX_CHUNK_LINE + 1 ? n - pos : MAX_CHUNK_LINE + 1;
            const char *nlp = memchr(b + pos, '\n', (size_t)lim);
            if (nlp == NULL) {
                if (n - pos > MAX_CHUNK_LINE)
                    return HANDOVER;
                break;
            }
            Py_ssize_t nl = nlp - b, k = pos;
            long long size = 0;
            while (k < nl && k - pos < 15) {
                int c = u[k], v;
                if (c >= '0' && c <= '9')
                    v = c - '0';
                else if (c >= 'a' && c <= 'f')
                    v = c - 'a' + 10;
                else if (c >= 'A' && c <= 'F')
                    v = c - 'A' + 10;
                else
                    break;
                size = size * 16 + v;
                k++;
            }
            if (k == pos || !(u[k] == ';' || (k == nl) || (u[k] == '\r' && k + 1 == nl)))
                return HANDOVER;
            s->msg->wire += nl + 1 - pos;
            pos = nl + 1;
            if (size) {
                s->remaining = size;
                s->state = S_CHUNK_DATA;
            } else
                s->state = S_TRAILERS;
        } else if (st == S_CHUNK_END || st == S_TRAILERS) {
            Py_ssize_t step;
            if (u[pos] == '\n')
                step = 1;
            else if (u[pos] == '\r' && pos + 1 >= n)
                break;
            else if (u[pos] == '\r' && u[pos + 1] == '\n')
                step = 2;
            else
                return HANDOVER; /* trailers, or a framing error */
            s->msg->wire += step;
            pos += step;
            if (st == S_CHUNK_END)
                s->state = S_CHUNK_SIZE;
            else if ((rc = end_message(f, s, client, out)) != 0)
                break;
        } else { /* S_CLOSE_BODY */
            keep(f, s->msg, b + pos, n - pos, &err);
            if (err)
                return -1;
            pos = n;
        }
    }
    *consumed = pos;
    return rc;
}

/* -- the hand-over ------------------------------------------------------------------------ */

static PyObject *
call_op(PyObject *d, const LogOp *op)
{
    switch (op->op) {
    case OP_FEED:
        return PyObject_CallMethod(d, "feed", "iOd", op->dir, op->data, op->ts);
    case OP_GAP:
        return PyObject_CallMethod(d, "gap", "ind", op->dir, op->size, op->ts);
    case OP_CLOSE:
        return PyObject_CallMethod(d, "close", "id", op->dir, op->ts);
    case OP_FINISH:
        return PyObject_CallMethod(d, "finish", "d", op->ts);
    default:
        return PyObject_CallMethod(d, "expire", "d", op->ts);
    }
}

/* Make the Python dissector, feed it the log (its first `emitted` exchanges were emitted
 * here), and let it have the connection. Its other events go to `out`. */
static int
handover(Fast *f, PyObject *out)
{
    PyObject *d = PyObject_CallNoArgs(f->fallback);
    if (d == NULL)
        return -1;
    long long skip = f->emitted;
    for (int i = 0; i < f->n_log; i++) {
        PyObject *events = call_op(d, &f->log[i]);
        if (events == NULL) {
            Py_DECREF(d);
            return -1;
        }
        PyObject *it = PyObject_GetIter(events);
        Py_DECREF(events);
        if (it == NULL) {
            Py_DECREF(d);
            return -1;
        }
        PyObject *ev;
        while ((ev = PyIter_Next(it)) != NULL) {
            int rc = 0;
            if (skip > 0 && Py_IS_TYPE(ev, (PyTypeObject *)completed_type))
                skip--;
            else
                rc = PyList_Append(out, ev);
            Py_DECREF(ev);
            if (rc < 0)
                break;
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            Py_DECREF(d);
            return -1;
        }
    }
    log_clear(f);
    state_free(f);
    f->py = d;
    return 0;
}

/* The operation kept for a hand-over: 0; on error, ``out`` dropped and -1. */
static int
log_op(Fast *f, const LogOp *op, PyObject *out)
{
    if (f->n_log == f->log_cap) {
        int cap = f->log_cap ? f->log_cap * 2 : 8;
        LogOp *l = PyMem_Realloc(f->log, sizeof(LogOp) * (size_t)cap);
        if (l == NULL) {
            PyErr_NoMemory();
            Py_DECREF(out);
            return -1;
        }
        f->log = l;
        f->log_cap = cap;
    }
    LogOp *o = &f->log[f->n_log++];
    *o = *op;
    Py_XINCREF(o->data);
    return 0;
}

static int
idle(const Fast *f)
{
    if (f->n_queue)
        return 0;
    for (int s = 0; s < 2; s++)
        if (f->sides[s].msg || f->sides[s].buf.len || f->sides[s].state != S_HEAD)
            return 0;
    return 1;
}

/* After an operation: forget the log when idle; hand over when it asked so. */
static PyObject *
settle(Fast *f, int rc, PyObject *out)
{
    if (rc == HANDOVER)
        rc = handover(f, out);
    else if (rc == 0 && idle(f))
        log_clear(f);
    if (rc < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *
forward(Fast *f, const LogOp *op, PyObject *out)
{
    PyObject *events = call_op(f->py, op);
    if (events == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    if (PyList_CheckExact(events) && PyList_GET_SIZE(out) == 0) {
        Py_DECREF(out);
        return events;
    }
    PyObject *r = PySequence_InPlaceConcat(out, events);
    Py_DECREF(events);
    Py_DECREF(out);
    return r;
}

/* What every operation starts with: the list for its events, and once the Python dissector
 * has the connection, the operation forwarded to it (*forwarded set). NULL on error. */
static PyObject *
start_op(Fast *f, const LogOp *op, int *forwarded)
{
    PyObject *out = PyList_New(0);
    *forwarded = out != NULL && f->py != NULL;
    return *forwarded ? forward(f, op, out) : out;
}

/* -- the dissector interface ------------------------------------------------------------- */

static PyObject *
Fast_feed(Fast *f, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "feed(direction, data, ts)");
        return NULL;
    }
    int dir = PyLong_AsLong(args[0]);
    double ts = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred())
        return NULL;
    LogOp op = {OP_FEED, dir, args[1], 0, ts};
    int forwarded;
    PyObject *out = start_op(f, &op, &forwarded);
    if (out == NULL || forwarded)
        return out;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    if ((dir != 0 && dir != 1) || view.len == 0) {
        PyBuffer_Release(&view);
        return out;
    }
    if (f->log_bytes + view.len > LOG_CAP) { /* too much to keep for a hand-over: now */
        PyBuffer_Release(&view);
        if (handover(f, out) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        return forward(f, &op, out);
    }
    if (log_op(f, &op, out) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    f->log_bytes += view.len;
    Side *s = &f->sides[dir];
    int client = dir == 0;
    const char *data = view.buf;
    Py_ssize_t len = view.len, consumed = 0;
    int rc;
    if (s->buf.len == 0) {
        s->n_marks = 1;
        s->mark_off[0] = 0;
        s->mark_ts[0] = ts;
        rc = run(f, s, client, data, len, 0, ts, &consumed, out);
        if (rc == 0 && consumed < len)
            rc = buf_put(&s->buf, data + consumed, len - consumed);
    } else {
        Py_ssize_t base = s->buf.len;
        if (s->n_marks == MAX_MARKS)
            rc = HANDOVER;
        else {
            s->mark_off[s->n_marks] = base;
            s->mark_ts[s->n_marks++] = ts;
            rc = buf_put(&s->buf, data, len);
        }
        if (rc == 0)
            rc = run(f, s, client, s->buf.p, s->buf.len, base, ts, &consumed, out);
        if (rc == 0 && consumed) {
            if (consumed >= base) {
                s->n_marks = 1;
                s->mark_off[0] = 0;
                s->mark_ts[0] = ts;
            } else { /* `_trim_marks` */
                double first = time_at(s, consumed);
                int k = 1;
                for (int i = 0; i < s->n_marks; i++)
                    if (s->mark_off[i] > consumed) {
                        s->mark_off[k] = s->mark_off[i] - consumed;
                        s->mark_ts[k++] = s->mark_ts[i];
                    }
                s->mark_off[0] = 0;
                s->mark_ts[0] = first;
                s->n_marks = k;
            }
            memmove(s->buf.p, s->buf.p + consumed, (size_t)(s->buf.len - consumed));
            s->buf.len -= consumed;
        }
    }
    PyBuffer_Release(&view);
    return settle(f, rc, out);
}

static PyObject *
Fast_gap(Fast *f, PyObject *args)
{
    int dir;
    Py_ssize_t size;
    double ts;
    if (!PyArg_ParseTuple(args, "ind", &dir, &size, &ts))
        return NULL;
    LogOp op = {OP_GAP, dir, NULL, size, ts};
    int forwarded;
    PyObject *out = start_op(f, &op, &forwarded);
    if (out == NULL || forwarded || (dir != 0 && dir != 1) || size <= 0)
        return out;
    if (log_op(f, &op, out) < 0)
        return NULL;
    return settle(f, HANDOVER, out);
}

/* `_close` of a direction that is between messages or in a close-delimited body. */
static int
close_side(Fast *f, int dir, PyObject *out)
{
    Side *s = &f->sides[dir];
    if (s->state == S_CLOSE_BODY)
        return end_message(f, s, dir == 0, out);
    if (s->msg != NULL || s->buf.len)
        return HANDOVER;
    s->state = S_HEAD;
    return 0;
}

static PyObject *
Fast_close(Fast *f, PyObject *args)
{
    int dir;
    double ts;
    if (!PyArg_ParseTuple(args, "id", &dir, &ts))
        return NULL;
    LogOp op = {OP_CLOSE, dir, NULL, 0, ts};
    int forwarded;
    PyObject *out = start_op(f, &op, &forwarded);
    if (out == NULL || forwarded || (dir != 0 && dir != 1))
        return out;
    if (log_op(f, &op, out) < 0)
        return NULL;
    Side *s = &f->sides[dir];
    int rc = (s->state == S_CLOSE_BODY || (s->msg == NULL && !s->buf.len))
                 ? close_side(f, dir, out)
                 : HANDOVER;
    return settle(f, rc, out);
}

static PyObject *
Fast_finish(Fast *f, PyObject *args)
{
    double ts;
    if (!PyArg_ParseTuple(args, "d", &ts))
        return NULL;
    LogOp op = {OP_FINISH, 0, NULL, 0, ts};
    int forwarded;
    PyObject *out = start_op(f, &op, &forwarded);
    if (out == NULL || forwarded)
        return out;
    if (log_op(f, &op, out) < 0)
        return NULL;
    /* Ours only when closing the server's direction leaves nothing pending. */
    Side *c = &f->sides[0], *sv = &f->sides[1];
    int rc = HANDOVER;
    if (c->msg == NULL && !c->buf.len && c->state == S_HEAD &&
        (sv->state == S_CLOSE_BODY || (sv->msg == NULL && !sv->buf.len)) &&
        f->n_queue == (sv->state == S_CLOSE_BODY ? 1 : 0)) {
        rc = close_side(f, 1, out);
        if (rc == 0)
            rc = close_side(f, 0, out);
    }
    return settle(f, rc, out);
}

static PyObject *
Fast_expire(Fast *f, PyObject *args)
{
    double now;
    if (!PyArg_ParseTuple(args, "d", &now))
        return NULL;
    LogOp op = {OP_EXPIRE, 0, NULL, 0, now};
    int forwarded;
    PyObject *out = start_op(f, &op, &forwarded);
    if (out == NULL || forwarded || !f->n_queue || !(f->queue[0]->req->ts < now - pending_timeout))
        return out;
    if (log_op(f, &op, out) < 0)
        return NULL;
    return settle(f, HANDOVER, out);
}

static PyObject *
Fast_oldest_pending(Fast *f, PyObject *unused)
{
    if (f->py)
        return PyObject_CallMethod(f->py, "oldest_pending", NULL);
    double best = 0;
    int have = 0;
    if (f->n_queue) {
        best = f->queue[0]->req->ts;
        have = 1;
    }
    for (int i = 0; i < 2; i++) {
        const Side *s = &f->sides[i];
        double t;
        if (s->msg)
            t = s->msg->ts;
        else if (s->state == S_HEAD && s->buf.len)
            t = s->mark_ts[0];
        else
            continue;
        if (!have || t < best)
            best = t;
        have = 1;
    }
    if (!have)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(best);
}

static PyObject *
Fast_handed_over(Fast *f, void *unused)
{
    return PyBool_FromLong(f->py != NULL);
}

/* -- the type ---------------------------------------------------------------------------- */

static int
Fast_init(Fast *f, PyObject *args, PyObject *kw)
{
    PyObject *fallback, *head, *mid;
    int tls;
    Py_ssize_t cap, line_head = 0;
    static char *names[] = {"fallback", "head", "mid", "tls", "body_cap", "line_head", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OSSpn|n", names, &fallback, &head, &mid, &tls,
                                     &cap, &line_head))
        return -1;
    if (line_head < 0 || line_head > 4096) {
        PyErr_SetString(PyExc_ValueError, "line_head must be within 0..4096");
        return -1;
    }
    f->line_head = line_head;
    if (render_body_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return -1;
    }
    Py_XSETREF(f->fallback, Py_NewRef(fallback));
    Py_XSETREF(f->head, Py_NewRef(head));
    Py_XSETREF(f->mid, Py_NewRef(mid));
    f->tls = tls;
    f->body_cap = cap > 0 ? cap : 0;
    return 0;
}

static void
Fast_dealloc(Fast *f)
{
    log_clear(f);
    PyMem_Free(f->log);
    state_free(f);
    Py_XDECREF(f->fallback);
    Py_XDECREF(f->py);
    Py_XDECREF(f->head);
    Py_XDECREF(f->mid);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyMethodDef Fast_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))Fast_feed, METH_FASTCALL, "feed(direction, data, ts)"},
    {"gap", (PyCFunction)Fast_gap, METH_VARARGS, "gap(direction, size, ts)"},
    {"close", (PyCFunction)Fast_close, METH_VARARGS, "close(direction, ts)"},
    {"finish", (PyCFunction)Fast_finish, METH_VARARGS, "finish(ts)"},
    {"expire", (PyCFunction)Fast_expire, METH_VARARGS, "expire(now)"},
    {"oldest_pending", (PyCFunction)Fast_oldest_pending, METH_NOARGS, "oldest_pending()"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Fast_getset[] = {
    {"handed_over", (getter)Fast_handed_over, NULL, "the Python dissector took over", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shark_tui.engine._http1entries.Http1Entries",
    .tp_basicsize = sizeof(Fast),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One HTTP/1 connection, straight to entry JSON lines (see the source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Fast_init,
    .tp_dealloc = (destructor)Fast_dealloc,
    .tp_methods = Fast_methods,
    .tp_getset = Fast_getset,
};

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *rb, *qp, *ct;
    double timeout;
    if (!PyArg_ParseTuple(args, "OOOd", &rb, &qp, &ct, &timeout))
        return NULL;
    if (!PyType_Check(ct)) {
        PyErr_SetString(PyExc_TypeError, "exchange_completed must be a type");
        return NULL;
    }
    Py_XSETREF(render_body_fn, Py_NewRef(rb));
    Py_XSETREF(query_pairs_fn, Py_NewRef(qp));
    Py_XSETREF(completed_type, Py_NewRef(ct));
    pending_timeout = timeout;
    Py_RETURN_NONE;
}

/* The JSON of a float as the entries have it (for the tests: msgspec's, or None for a value
 * this module leaves to the Python code); `round3` too when asked. */
static PyObject *
json_float(PyObject *self, PyObject *args)
{
    double x;
    int rounded = 0;
    if (!PyArg_ParseTuple(args, "d|p", &x, &rounded))
        return NULL;
    if (rounded && round3(x, &x))
        Py_RETURN_NONE;
    Buf b = {NULL, 0, 0};
    int rc = put_float(&b, x);
    PyObject *r = rc == 0 ? PyBytes_FromStringAndSize(b.p, b.len) : NULL;
    buf_free(&b);
    if (rc == HANDOVER)
        Py_RETURN_NONE;
    return r;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, "configure(render_body, query_pairs, "
                                           "exchange_completed, pending_timeout)"},
    {"json_float", json_float, METH_VARARGS, "json_float(x, rounded=False) (tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_http1entries", "HTTP/1 connections to entry JSON (see the source).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__http1entries(void)
{
    init_escapes();
    if (PyType_Ready(&FastType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Http1Entries", (PyObject *)&FastType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
