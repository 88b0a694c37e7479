/* The per-packet loops of `capfile` and `packet`, and the merge of `parallel`, in C: the same
 * results, faster.
 *
 * Each function takes over only the common case and hands everything else back to the Python
 * code it speeds up, which stays the reference (and the fallback when this module is not
 * built). Nothing here counts, warns or fails: a record or packet that is not plainly on the
 * fast path is left where it is, and the Python code decides about it exactly as before.
 *
 *   pcap_records(buf, pos, big_endian, record_size, ts_mult, out[, linktype]) -> pos
 *       complete pcap records from ``pos``, appended to ``out`` as (ts_ns, 0, data, orig_len);
 *       stops at the first record that is incomplete or claims more than MAX_RECORD bytes.
 *   pcapng_epbs(buf, pos, big_endian, section_ifs, out[, linktypes]) -> pos
 *       the same for complete, well-formed enhanced packet blocks on interfaces with a decimal
 *       timestamp resolution (``section_ifs``: [(global id, ts multiplier or 0, offset ns)]);
 *       stops at any other block.
 *   With a link type (per section interface for pcapng), a record that is a plain TCP segment
 *   (as tcp_segment below) comes out decoded instead, without the frame:
 *       (ts_ns, iface, src, sport, dst, dport, seq, ack, flags, payload)
 *   With an armed IgnoreSet as well (see it below), the decoded records it takes out are not
 *   appended at all: no tuple, no payload copy; they count in its ``dropped``.
 *   tcp_segment(linktype, data) -> TcpSegment | None
 *       Ethernet (and 802.1Q), Linux SLL/SLL2 and raw IP carrying an unfragmented IPv4 or
 *       IPv6 TCP segment that was captured whole; None for anything else (then
 *       ``PacketDecoder.decode`` decides, and counts).
 *
 * Addresses come back as bytes objects shared between packets (a small cache keyed by the
 * address): the flow table hashes them once, not per packet.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/uio.h>

#define MAX_RECORD (256LL * 1024 * 1024)
#define NS 1000000000LL

static inline uint32_t rd32(const unsigned char *p, int big) {
    return big ? ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3])
               : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

static inline uint32_t be32(const unsigned char *p) { return rd32(p, 1); }
static inline uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static PyObject *
packet_tuple(long long ts, long gid, const unsigned char *data, Py_ssize_t n, uint32_t orig)
{
    PyObject *t = PyTuple_New(4);
    if (t == NULL)
        return NULL;
    PyObject *a = PyLong_FromLongLong(ts);
    PyObject *b = PyLong_FromLong(gid);
    PyObject *c = PyBytes_FromStringAndSize((const char *)data, n);
    PyObject *d = PyLong_FromUnsignedLong(orig);
    if (a == NULL || b == NULL || c == NULL || d == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(c);
        Py_XDECREF(d);
        Py_DECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    PyTuple_SET_ITEM(t, 2, c);
    PyTuple_SET_ITEM(t, 3, d);
    return t;
}

static int
append_steal(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

typedef struct seg_s seg_t;
static int decode(int linktype, const unsigned char *data, Py_ssize_t end, seg_t *out);
static PyObject *seg_tuple(const seg_t *g, int with_ts, long long ts, long gid);

typedef struct IgnoreSet IgnoreSet;
static PyTypeObject IgnoreSetType;

/* One record appended to ``out``: decoded when its link type is given (>= 0) and it is a plain
 * TCP segment, or not at all when ``ign`` takes it out (``may_skip``); 0, or -1 on error. */
static int record(PyObject *out, long long ts, long gid, const unsigned char *data,
                  Py_ssize_t n, uint32_t orig, int linktype, IgnoreSet *ign, int may_skip);
/* The optional ignore-set argument: NULL for None; -1 for anything else (exception set). */
static int ign_arg(PyObject *arg, IgnoreSet **ign, PyObject *out);

static PyObject *
pcap_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    int big, rec_size;
    long long mult;
    PyObject *out, *ign_obj = Py_None;
    int linktype = -1;
    IgnoreSet *ign;
    if (!PyArg_ParseTuple(args, "y*npiLO!|iO", &view, &pos, &big, &rec_size, &mult, &PyList_Type,
                          &out, &linktype, &ign_obj))
        return NULL;
    if (ign_arg(ign_obj, &ign, out) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    if (rec_size != 16 && rec_size != 24) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "record_size must be 16 or 24");
        return NULL;
    }
    while (pos >= 0 && pos + rec_size <= end) {
        const unsigned char *h = buf + pos;
        uint32_t sec = rd32(h, big), frac = rd32(h + 4, big);
        uint32_t caplen = rd32(h + 8, big), orig = rd32(h + 12, big);
        if ((long long)caplen > MAX_RECORD || pos + rec_size + (Py_ssize_t)caplen > end)
            break;
        long long ts = (long long)sec * NS + (long long)frac * mult;
        if (record(out, ts, 0, h + rec_size, caplen, orig, linktype, ign, 1) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        pos += rec_size + caplen;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(pos);
}

typedef struct {
    long gid;
    long long mult;
    long long toff;
    int linktype; /* -1: hand the raw packet back */
} fast_if;

static PyObject *
pcapng_epbs(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    int big;
    PyObject *ifs, *out, *linktypes = NULL, *ign_obj = Py_None;
    IgnoreSet *ign;
    if (!PyArg_ParseTuple(args, "y*npO!O!|O!O", &view, &pos, &big, &PyList_Type, &ifs,
                          &PyList_Type, &out, &PyList_Type, &linktypes, &ign_obj))
        return NULL;
    if (ign_arg(ign_obj, &ign, out) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t nifs = PyList_GET_SIZE(ifs);
    fast_if small[16];
    fast_if *table = nifs <= 16 ? small : PyMem_Malloc(sizeof(fast_if) * (size_t)nifs);
    if (table == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nifs; i++) {
        long gid = 0;
        long long mult = 0, toff = 0;
        PyObject *item = PyList_GET_ITEM(ifs, i);
        if (!PyArg_ParseTuple(item, "lLL", &gid, &mult, &toff)) {
            /* an offset beyond 64 bits, say: that interface is left to Python */
            PyErr_Clear();
            mult = 0;
        }
        table[i].gid = gid;
        table[i].mult = mult;
        table[i].toff = toff;
        table[i].linktype = -1;
        if (linktypes != NULL && i < PyList_GET_SIZE(linktypes)) {
            long lt = PyLong_AsLong(PyList_GET_ITEM(linktypes, i));
            if (lt == -1 && PyErr_Occurred())
                PyErr_Clear();
            else
                table[i].linktype = (int)lt;
        }
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    PyObject *result = NULL;
    while (pos >= 0 && pos + 28 <= end) {
        const unsigned char *b = buf + pos;
        if (rd32(b, big) != 6)
            break;
        long long blen = rd32(b + 4, big);
        uint32_t iface = rd32(b + 8, big);
        uint64_t raw = (uint64_t)rd32(b + 12, big) << 32 | rd32(b + 16, big);
        long long caplen = rd32(b + 20, big);
        uint32_t orig = rd32(b + 24, big);
        Py_ssize_t nxt = pos + (Py_ssize_t)blen;
        if (nxt > end || caplen > blen - 32 || (blen & 3) || blen > MAX_RECORD ||
            (Py_ssize_t)iface >= nifs || rd32(buf + nxt - 4, big) != (uint32_t)blen)
            break;
        fast_if *fi = &table[iface];
        if (!fi->mult)
            break;
        long long ts;
        if (raw > (uint64_t)INT64_MAX ||
            __builtin_mul_overflow((long long)raw, fi->mult, &ts) ||
            __builtin_add_overflow(ts, fi->toff, &ts))
            break; /* Python's integers take it from here */
        /* a record is taken out only when another EPB follows it here: a simple packet block
         * (no timestamp of its own) takes the time of the record before it from ``out`` */
        int may_skip = nxt + 4 <= end && rd32(buf + nxt, big) == 6;
        if (record(out, ts, fi->gid, b + 28, caplen, orig, fi->linktype, ign, may_skip) < 0)
            goto done;
        pos = nxt;
    }
    result = PyLong_FromSsize_t(pos);
done:
    if (table != small)
        PyMem_Free(table);
    PyBuffer_Release(&view);
    return result;
}

/* -- TCP segments ------------------------------------------------------------------------- */

#define ADDR_SLOTS 4096

typedef struct {
    unsigned char key[16];
    int len;
    PyObject *obj;
} addr_slot;

static addr_slot addr_cache[ADDR_SLOTS];

static PyObject *
address(const unsigned char *p, int len)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    addr_slot *s = &addr_cache[h & (ADDR_SLOTS - 1)];
    if (s->obj != NULL && s->len == len && memcmp(s->key, p, (size_t)len) == 0) {
        Py_INCREF(s->obj);
        return s->obj;
    }
    PyObject *obj = PyBytes_FromStringAndSize((const char *)p, len);
    if (obj == NULL)
        return NULL;
    Py_XSETREF(s->obj, obj);
    Py_INCREF(obj);
    memcpy(s->key, p, (size_t)len);
    s->len = len;
    return obj;
}

struct seg_s {
    const unsigned char *src, *dst; /* addresses (alen bytes each) */
    int alen;
    const unsigned char *tcp;       /* the TCP header */
    const unsigned char *payload;
    Py_ssize_t plen;
};

/* A plain TCP segment (see the top of the file) into ``out``: 1, or 0 for "ask Python". */
static int
decode(int linktype, const unsigned char *data, Py_ssize_t end, seg_t *out)
{
    Py_ssize_t off;
    int ethertype;
    switch (linktype) {
    case 1: /* Ethernet */
        if (end < 14)
            return 0;
        ethertype = be16(data + 12);
        off = 14;
        break;
    case 113: /* Linux SLL */
        if (end < 16)
            return 0;
        ethertype = be16(data + 14);
        off = 16;
        break;
    case 276: /* Linux SLL2 */
        if (end < 20)
            return 0;
        ethertype = be16(data);
        off = 20;
        break;
    case 101: case 12: case 14: case 228: case 229: /* raw IP */
        if (end < 1)
            return 0;
        ethertype = (data[0] >> 4) == 4 ? 0x0800 : (data[0] >> 4) == 6 ? 0x86DD : -1;
        if ((linktype == 228 && ethertype != 0x0800) || (linktype == 229 && ethertype != 0x86DD))
            return 0;
        off = 0;
        break;
    default:
        return 0;
    }
    for (int tags = 0; (ethertype == 0x8100 || ethertype == 0x88A8 || ethertype == 0x9100 ||
                        ethertype == 0x9200) && tags < 4; tags++) {
        if (off + 4 > end)
            return 0;
        ethertype = be16(data + off + 2);
        off += 4;
    }
    Py_ssize_t t, ip_end;
    if (ethertype == 0x0800) {
        if (off + 20 > end)
            return 0;
        const unsigned char *ip = data + off;
        int ihl = (ip[0] & 15) << 2;
        Py_ssize_t total = be16(ip + 2);
        if ((ip[0] >> 4) != 4 || ihl < 20 || total < ihl || off + ihl > end)
            return 0;
        if ((be16(ip + 6) & 0x3FFF) || ip[9] != 6)
            return 0; /* a fragment, or not TCP */
        ip_end = off + total;
        t = off + ihl;
        out->src = ip + 12;
        out->dst = ip + 16;
        out->alen = 4;
    } else if (ethertype == 0x86DD) {
        if (off + 40 > end)
            return 0;
        const unsigned char *ip = data + off;
        Py_ssize_t plen = be16(ip + 4);
        if ((ip[0] >> 4) != 6 || ip[6] != 6 || plen == 0)
            return 0; /* extension headers, not TCP, a jumbogram */
        t = off + 40;
        ip_end = t + plen;
        out->src = ip + 8;
        out->dst = ip + 24;
        out->alen = 16;
    } else {
        return 0;
    }
    if (ip_end > end || t + 20 > ip_end)
        return 0; /* cut by the snaplen, or malformed */
    Py_ssize_t p = t + ((data[t + 12] >> 2) & 0x3C);
    if (p < t + 20 || p > ip_end)
        return 0; /* malformed */
    out->tcp = data + t;
    out->payload = data + p;
    out->plen = ip_end - p;
    return 1;
}

/* (ts, gid, src, sport, dst, dport, seq, ack, flags, payload) when ``with_ts``, else the nine
 * fields of a TcpSegment (src, sport, dst, dport, seq, ack, flags, window, payload). */
static PyObject *
seg_tuple(const seg_t *g, int with_ts, long long ts, long gid)
{
    const unsigned char *h = g->tcp;
    PyObject *s = address(g->src, g->alen);
    PyObject *d = address(g->dst, g->alen);
    PyObject *res = NULL;
    if (s != NULL && d != NULL) {
        if (with_ts)
            res = Py_BuildValue("(LlOHOHkkBy#)", ts, gid, s, be16(h), d, be16(h + 2),
                                (unsigned long)be32(h + 4), (unsigned long)be32(h + 8), h[13],
                                (const char *)g->payload, g->plen);
        else
            res = Py_BuildValue("(OHOHkkBHy#)", s, be16(h), d, be16(h + 2),
                                (unsigned long)be32(h + 4), (unsigned long)be32(h + 8), h[13],
                                be16(h + 14), (const char *)g->payload, g->plen);
    }
    Py_XDECREF(s);
    Py_XDECREF(d);
    return res;
}

static PyObject *
tcp_segment(PyObject *self, PyObject *args)
{
    int linktype;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*", &linktype, &view))
        return NULL;
    seg_t g;
    PyObject *res;
    if (decode(linktype, view.buf, view.len, &g))
        res = seg_tuple(&g, 0, 0, 0);
    else
        res = Py_NewRef(Py_None);
    PyBuffer_Release(&view);
    return res;
}

static int ign_take(IgnoreSet *ign, long long ts, long gid, const seg_t *g, int may_skip);
static void ign_stop(IgnoreSet *ign);

static int
record(PyObject *out, long long ts, long gid, const unsigned char *data, Py_ssize_t n,
       uint32_t orig, int linktype, IgnoreSet *ign, int may_skip)
{
    seg_t g;
    if (linktype >= 0 && decode(linktype, data, n, &g)) {
        int taken = ign != NULL ? ign_take(ign, ts, gid, &g, may_skip) : 0;
        if (taken)
            return taken < 0 ? -1 : 0;
        return append_steal(out, seg_tuple(&g, 1, ts, gid));
    }
    if (ign != NULL)
        ign_stop(ign);
    return append_steal(out, packet_tuple(ts, gid, data, n, orig));
}

/* -- connections nobody dissects here ------------------------------------------------------ */

/* IgnoreSet: connections (4-tuple and zone) whose plain data and ACK segments the flow table
 * would only count, because nothing of them is dissected in this process (another worker's
 * share, or ruled out by a filter). Given to the record loops above, an armed set takes those
 * records out as they are read, before any tuple is made, counting them; every SYN, FIN and
 * RST still goes through.
 *
 * The caller adds a connection while it handles one batch (the records of one read) and arms
 * the set before the next read: the set acts from the next batch. At that point it holds
 * exactly the connections the table would ignore, and within a batch an entry leaves the set at
 * the first record after which the table might no longer ignore them: a RST or a FIN (the table
 * may end the connection), a SYN without ACK (it may start a new one on the 4-tuple). Leaving
 * early only means the table sees a few more records, which it handles as always. The caller
 * also removes connections it ends otherwise (eviction).
 *
 * Sweeps: the caller sweeps its table at the first record it processes with ts >= next_sweep
 * (then next_sweep = ts + interval; None: set by the first record). `arm` gives the set that
 * clock, which it runs along the records it reads: a record a sweep falls on is never taken
 * out, so the sweeps fall on the same records as without the set. After a raw (undecoded)
 * record nothing more is taken out until the next `arm`: whether and when the caller handles
 * it is not known here. */

/* A connection whose in-order segments go straight to its dissector (see add_fast below). */
typedef struct {
    PyObject *flow, *halves[2], *dissector;
    unsigned char side0[16]; /* the address and port of the flow's side 0 */
    int side0_port, client;
    uint32_t next[2], acked[2];
    int has_acked[2], has_first_ts[2];
    long long packets[2], bytes[2];
} fast_flow;

typedef struct {
    unsigned char key[38]; /* zone, address length, lower end (addr, port), higher end */
    uint8_t state;         /* 0 empty, 1 used, 2 deleted */
    long long last_ts;     /* of the last record taken out */
    fast_flow *fast;       /* NULL: a connection nobody dissects here */
} ign_slot;

struct IgnoreSet {
    PyObject_HEAD
    ign_slot *slots;
    Py_ssize_t cap, live, filled;
    long long dropped;
    /* the batch being read (arm): */
    int dropping;              /* 0 until armed, and after a raw record */
    int have_sweep;            /* next_sweep is set */
    double next_sweep, interval;
    int *zones;                /* zone of each interface (global id) */
    Py_ssize_t nzones;
    /* the connections of add_fast: */
    PyObject *sink;            /* sink(flow, events) for what their dissectors return */
    long long taken;           /* their records handled here */
    long long looped;          /* records `take` handled (the caller's loop counted them) */
    int fast_stop;             /* a sweep fell in this batch: no more until the next arm */
};

/* The key of a connection: the same from either end. */
static void
ign_key(unsigned char *key, int zone, const unsigned char *a, int ap, const unsigned char *b,
        int bp, int alen)
{
    int c = memcmp(a, b, (size_t)alen);
    int low_is_a = c < 0 || (c == 0 && ap <= bp);
    const unsigned char *lo = low_is_a ? a : b, *hi = low_is_a ? b : a;
    int lp = low_is_a ? ap : bp, hp = low_is_a ? bp : ap;
    memset(key, 0, 38);
    key[0] = (unsigned char)zone;
    key[1] = (unsigned char)alen;
    memcpy(key + 2, lo, (size_t)alen);
    key[18] = (unsigned char)(lp >> 8);
    key[19] = (unsigned char)lp;
    memcpy(key + 20, hi, (size_t)alen);
    key[36] = (unsigned char)(hp >> 8);
    key[37] = (unsigned char)hp;
}

static uint64_t
ign_hash(const unsigned char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 38; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

/* The slot holding ``key``, or (insert) the slot to put it in; NULL if absent (lookup). */
static ign_slot *
ign_find(IgnoreSet *self, const unsigned char *key, int insert)
{
    Py_ssize_t mask = self->cap - 1, i = (Py_ssize_t)(ign_hash(key) & (uint64_t)mask);
    ign_slot *free_slot = NULL;
    for (Py_ssize_t n = 0; n < self->cap; n++, i = (i + 1) & mask) {
        ign_slot *s = &self->slots[i];
        if (s->state == 0)
            return insert ? (free_slot ? free_slot : s) : NULL;
        if (s->state == 2) {
            if (free_slot == NULL)
                free_slot = s;
        } else if (memcmp(s->key, key, 38) == 0) {
            return s;
        }
    }
    return insert ? free_slot : NULL;
}

/* Rehash without the deleted slots, doubling the table when it is half full of live ones. */
static int
ign_grow(IgnoreSet *self)
{
    Py_ssize_t cap = self->live * 2 >= self->cap ? self->cap * 2 : self->cap;
    ign_slot *old = self->slots, *slots = PyMem_Calloc((size_t)cap, sizeof(ign_slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t oldcap = self->cap;
    self->slots = slots;
    self->cap = cap;
    self->filled = self->live;
    for (Py_ssize_t i = 0; i < oldcap; i++)
        if (old[i].state == 1)
            *ign_find(self, old[i].key, 1) = old[i];
    PyMem_Free(old);
    return 0;
}

static void
fast_free(fast_flow *f)
{
    if (f == NULL)
        return;
    Py_XDECREF(f->flow);
    Py_XDECREF(f->halves[0]);
    Py_XDECREF(f->halves[1]);
    Py_XDECREF(f->dissector);
    PyMem_Free(f);
}

static void
ign_delete(IgnoreSet *self, ign_slot *s)
{
    fast_free(s->fast);
    s->fast = NULL;
    s->state = 2;
    self->live--;
}

static PyObject *
IgnoreSet_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    IgnoreSet *self = (IgnoreSet *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->cap = 1024;
    self->slots = PyMem_Calloc((size_t)self->cap, sizeof(ign_slot));
    if (self->slots == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
IgnoreSet_dealloc(IgnoreSet *self)
{
    for (Py_ssize_t i = 0; i < self->cap; i++)
        if (self->slots[i].state == 1)
            fast_free(self->slots[i].fast);
    Py_XDECREF(self->sink);
    PyMem_Free(self->slots);
    PyMem_Free(self->zones);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* (src, sport, dst, dport, zone) -> key; 0 on bad arguments (exception set). */
static int
ign_parse(PyObject *args, unsigned char *key)
{
    Py_buffer a, b;
    int ap, bp, zone;
    if (!PyArg_ParseTuple(args, "y*iy*ii", &a, &ap, &b, &bp, &zone))
        return 0;
    int ok = a.len == b.len && (a.len == 4 || a.len == 16);
    if (ok)
        ign_key(key, zone, a.buf, ap, b.buf, bp, (int)a.len);
    else
        PyErr_SetString(PyExc_ValueError, "addresses of 4 or 16 bytes, both alike");
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return ok;
}

/* Put ``key`` in the set, as a connection nobody dissects here (``fast`` NULL) or a fast one
 * (which the set then owns): 0, or -1 on error (``fast`` not taken). */
static int
ign_put(IgnoreSet *self, const unsigned char *key, fast_flow *fast)
{
    if ((self->filled + 1) * 4 > self->cap * 3 && ign_grow(self) < 0)
        return -1;
    ign_slot *s = ign_find(self, key, 1);
    if (s->state != 1) {
        if (s->state == 0)
            self->filled++;
        memcpy(s->key, key, 38);
        s->state = 1;
        self->live++;
    }
    fast_free(s->fast);
    s->fast = fast;
    s->last_ts = 0;
    return 0;
}

static PyObject *
IgnoreSet_add(IgnoreSet *self, PyObject *args)
{
    unsigned char key[38];
    if (!ign_parse(args, key) || ign_put(self, key, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
IgnoreSet_discard(IgnoreSet *self, PyObject *args)
{
    unsigned char key[38];
    if (!ign_parse(args, key))
        return NULL;
    ign_slot *s = ign_find(self, key, 0);
    if (s != NULL)
        ign_delete(self, s);
    Py_RETURN_NONE;
}

static PyObject *
IgnoreSet_last_seen(IgnoreSet *self, PyObject *args)
{
    unsigned char key[38];
    if (!ign_parse(args, key))
        return NULL;
    ign_slot *s = ign_find(self, key, 0);
    if (s == NULL || s->last_ts == 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(s->last_ts);
}

/* What the set does with a decoded record of the connection ``key``: 1 when it takes it out
 * (counted), else 0 (the record goes on). Runs the sweep clock and lets a connection go at its
 * FIN, RST or SYN without ACK (see above). */
static int fast_take(IgnoreSet *self, ign_slot *s, double ts, const seg_t *g);

static int
ign_judge(IgnoreSet *self, const unsigned char *key, long long ts_ns, const seg_t *g,
          int may_skip)
{
    int flags = g->tcp[13];
    double ts = (double)ts_ns / 1e9; /* as Python's ts_ns / 1e9 */
    int sweeps = 0;                  /* the caller sweeps (or starts its clock) here */
    if (!self->have_sweep || ts >= self->next_sweep) {
        self->have_sweep = 1;
        self->next_sweep = ts + self->interval;
        sweeps = 1;
        self->fast_stop = 1;
    }
    ign_slot *s = ign_find(self, key, 0);
    if (s == NULL)
        return 0;
    if (s->fast != NULL) {
        /* only ACK (and PSH, URG): what opens or closes goes to the table, as does all after
         * a sweep or a raw record in this batch; then the connection is the table's again */
        if (!may_skip || self->fast_stop || (flags & 0x17) != 0x10) {
            ign_delete(self, s);
            return 0;
        }
        return fast_take(self, s, ts, g);
    }
    if (flags & 0x05) {
        /* RST or FIN: the table may end the connection here; from now on it sees all of this
         * 4-tuple again (a few packets: taking out too little is always safe) */
        ign_delete(self, s);
    } else if (flags & 0x02) {   /* SYN: the table looks at it; without ACK it may open */
        if (!(flags & 0x10))     /* a new connection on this 4-tuple */
            ign_delete(self, s);
    } else if (may_skip && !sweeps) {
        s->last_ts = ts_ns;
        self->dropped++;
        return 1;
    }
    return 0;
}

static int
ign_take(IgnoreSet *ign, long long ts, long gid, const seg_t *g, int may_skip)
{
    if (ign->live == 0)
        return 0; /* nothing more can go before the next arm: the clock does not matter */
    unsigned char key[38];
    int zone = gid >= 0 && gid < ign->nzones ? ign->zones[gid] : 0;
    const unsigned char *h = g->tcp;
    ign_key(key, zone, g->src, be16(h), g->dst, be16(h + 2), g->alen);
    /* not dropping (after a raw record): entries still leave at their FIN, RST or SYN */
    return ign_judge(ign, key, ts, g, may_skip && ign->dropping);
}

/* -- connections whose in-order segments go straight to their dissector --------------------
 *
 * add_fast(flow) puts a connection of the flow table (`tcp.Flow`) in the set the other way: its
 * plain in-order segments are handled here as `FlowTable.segment` handles them — the same
 * attributes of the flow and its halves updated (last_ts, packets, bytes, first_ts, next, the
 * peer's acked), the payload fed to `flow.dissector.feed(role, data, ts)` and what that returns
 * given to the sink — without a record for the table. The table adds a connection only while
 * both its directions are in order with nothing buffered, open, and dissected here; any other
 * record of it (SYN, FIN, RST, out of order, a retransmission) leaves it to the table from
 * there on, as does everything after a raw record or a sweep in the same batch (the order of
 * the table's work stays that of the records). The table takes it out when it ends it. */

static PyObject *s_last_ts, *s_packets, *s_next, *s_bytes, *s_first_ts, *s_acked, *s_feed,
    *s_addr, *s_halves, *s_client, *s_dissector, *s_zone;

static int
set_ll(PyObject *obj, PyObject *name, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, o);
    Py_DECREF(o);
    return rc;
}

/* One plain segment (ACK, no SYN/FIN/RST) of a fast connection at ``ts``: 1 when handled here,
 * 0 when it goes to the table (the connection then leaves the set), -1 on error. */
static int
fast_take(IgnoreSet *self, ign_slot *s, double ts, const seg_t *g)
{
    fast_flow *f = s->fast;
    const unsigned char *h = g->tcp;
    int side = be16(h) == f->side0_port && memcmp(g->src, f->side0, (size_t)g->alen) == 0 ? 0 : 1;
    uint32_t seq = be32(h + 4), ack = be32(h + 8);
    Py_ssize_t n = g->plen;
    if ((n && seq != f->next[side]) ||
        (be16(h) == be16(h + 2) && memcmp(g->src, g->dst, (size_t)g->alen) == 0)) {
        ign_delete(self, s); /* out of order, a retransmission; or a flow to itself */
        return 0;
    }
    int other = side ^ 1, rc = -1;
    PyObject *tso = PyFloat_FromDouble(ts), *data = NULL, *role = NULL, *events = NULL;
    if (tso == NULL || PyObject_SetAttr(f->flow, s_last_ts, tso) < 0 ||
        set_ll(f->halves[side], s_packets, ++f->packets[side]) < 0)
        goto done;
    if (!f->has_acked[other] || (int32_t)(ack - f->acked[other]) > 0) {
        f->acked[other] = ack;
        f->has_acked[other] = 1;
        if (set_ll(f->halves[other], s_acked, ack) < 0)
            goto done;
    }
    if (n) {
        f->next[side] = seq + (uint32_t)n;
        f->bytes[side] += n;
        if (set_ll(f->halves[side], s_next, f->next[side]) < 0 ||
            set_ll(f->halves[side], s_bytes, f->bytes[side]) < 0)
            goto done;
        if (!f->has_first_ts[side]) {
            f->has_first_ts[side] = 1;
            if (PyObject_SetAttr(f->halves[side], s_first_ts, tso) < 0)
                goto done;
        }
        data = PyBytes_FromStringAndSize((const char *)g->payload, n);
        role = PyLong_FromLong(f->client ^ side);
        if (data == NULL || role == NULL)
            goto done;
        /* the dissector and flow stay alive through the calls even if the entry goes */
        PyObject *d = Py_NewRef(f->dissector), *flow = Py_NewRef(f->flow);
        PyObject *args[4] = {d, role, data, tso};
        events = PyObject_VectorcallMethod(s_feed, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                           NULL);
        int ok = events != NULL;
        if (ok && PyObject_IsTrue(events) == 1 && self->sink != NULL) {
            PyObject *r = PyObject_CallFunctionObjArgs(self->sink, flow, events, NULL);
            ok = r != NULL;
            Py_XDECREF(r);
        }
        Py_DECREF(d);
        Py_DECREF(flow);
        if (!ok)
            goto done;
    }
    self->taken++;
    rc = 1;
done:
    Py_XDECREF(tso);
    Py_XDECREF(data);
    Py_XDECREF(role);
    Py_XDECREF(events);
    return rc;
}

/* An int attribute of ``obj`` (None as 0 with *has = 0). */
static int
get_ll(PyObject *obj, PyObject *name, long long *v, int *has)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    *has = o != Py_None;
    *v = *has ? PyLong_AsLongLong(o) : 0;
    Py_DECREF(o);
    return *v == -1 && PyErr_Occurred() ? -1 : 0;
}

/* add_fast(flow): see above. */
static PyObject *
IgnoreSet_add_fast(IgnoreSet *self, PyObject *flow)
{
    PyObject *addr = PyObject_GetAttr(flow, s_addr), *halves = NULL, *zone = NULL;
    fast_flow *f = PyMem_Calloc(1, sizeof(fast_flow));
    PyObject *result = NULL;
    if (f == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    halves = addr ? PyObject_GetAttr(flow, s_halves) : NULL;
    zone = halves ? PyObject_GetAttr(flow, s_zone) : NULL;
    f->dissector = zone ? PyObject_GetAttr(flow, s_dissector) : NULL;
    if (f->dissector == NULL)
        goto done;
    PyObject *key_args = NULL;
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) != 4 || !PyTuple_Check(halves) ||
        PyTuple_GET_SIZE(halves) != 2) {
        PyErr_SetString(PyExc_TypeError, "add_fast needs a tcp.Flow");
        goto done;
    }
    key_args = PyTuple_Pack(5, PyTuple_GET_ITEM(addr, 0), PyTuple_GET_ITEM(addr, 1),
                            PyTuple_GET_ITEM(addr, 2), PyTuple_GET_ITEM(addr, 3), zone);
    unsigned char key[38];
    int ok = key_args != NULL && ign_parse(key_args, key);
    Py_XDECREF(key_args);
    if (!ok)
        goto done;
    long long client, v;
    int has;
    if (get_ll(flow, s_client, &client, &has) < 0)
        goto done;
    f->client = (int)client;
    f->flow = Py_NewRef(flow);
    for (int i = 0; i < 2; i++) {
        PyObject *half = f->halves[i] = Py_NewRef(PyTuple_GET_ITEM(halves, i));
        if (get_ll(half, s_next, &v, &has) < 0)
            goto done;
        f->next[i] = (uint32_t)v;
        if (get_ll(half, s_acked, &v, &f->has_acked[i]) < 0)
            goto done;
        f->acked[i] = (uint32_t)v;
        if (get_ll(half, s_packets, &f->packets[i], &has) < 0 ||
            get_ll(half, s_bytes, &f->bytes[i], &has) < 0)
            goto done;
        PyObject *first = PyObject_GetAttr(half, s_first_ts);
        if (first == NULL)
            goto done;
        f->has_first_ts[i] = first != Py_None;
        Py_DECREF(first);
    }
    Py_buffer a0;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(addr, 0), &a0, PyBUF_SIMPLE) < 0)
        goto done;
    memcpy(f->side0, a0.buf, (size_t)(a0.len < 16 ? a0.len : 16));
    PyBuffer_Release(&a0);
    f->side0_port = (int)PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (PyErr_Occurred())
        goto done;
    if (ign_put(self, key, f) < 0)
        goto done;
    f = NULL;
    result = Py_NewRef(Py_None);
done:
    fast_free(f);
    Py_XDECREF(addr);
    Py_XDECREF(halves);
    Py_XDECREF(zone);
    return result;
}

/* take(record, zone) -> bool: for one decoded record (capfile.Decoded) the caller's loop is
 * about to hand the flow table, what the record loops would have done with it during the read
 * had its connection been in the set then (a connection added in the middle of a batch): taken
 * out (nobody dissects it here) or handled (a fast connection's plain segment): True; else
 * False, and the table handles it. Counted in ``looped``, not in ``dropped``/``taken`` (the
 * caller counted the record already). The caller's own clock decides its sweeps. */
static PyObject *
IgnoreSet_take(IgnoreSet *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "take(record, zone)");
        return NULL;
    }
    PyObject *t = args[0];
    if (self->live == 0 || PyTuple_GET_SIZE(t) != 10)
        Py_RETURN_FALSE;
    PyObject *src = PyTuple_GET_ITEM(t, 2), *dst = PyTuple_GET_ITEM(t, 4);
    PyObject *payload = PyTuple_GET_ITEM(t, 9);
    if (!PyBytes_Check(src) || !PyBytes_Check(dst) || !PyBytes_Check(payload))
        Py_RETURN_FALSE;
    Py_ssize_t alen = PyBytes_GET_SIZE(src);
    if ((alen != 4 && alen != 16) || PyBytes_GET_SIZE(dst) != alen)
        Py_RETURN_FALSE;
    long long ts_ns = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 0));
    long sport = PyLong_AsLong(PyTuple_GET_ITEM(t, 3)), dport = PyLong_AsLong(PyTuple_GET_ITEM(t, 5));
    unsigned long seq = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 6));
    unsigned long ack = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 7));
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(t, 8)), zone = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(src);
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(dst);
    unsigned char key[38], tcp[20] = {0};
    ign_key(key, (int)zone, a, (int)sport, b, (int)dport, (int)alen);
    ign_slot *slot = ign_find(self, key, 0);
    if (slot == NULL)
        Py_RETURN_FALSE;
    if (slot->fast == NULL) { /* nobody dissects it here: as ign_judge, without the clock */
        if (flags & 0x05 || ((flags & 0x02) && !(flags & 0x10))) {
            ign_delete(self, slot);
            Py_RETURN_FALSE;
        }
        if (flags & 0x02)
            Py_RETURN_FALSE;
        slot->last_ts = ts_ns;
        self->looped++;
        Py_RETURN_TRUE;
    }
    if ((flags & 0x17) != 0x10) {
        ign_delete(self, slot);
        Py_RETURN_FALSE;
    }
    tcp[0] = (unsigned char)(sport >> 8);
    tcp[1] = (unsigned char)sport;
    tcp[2] = (unsigned char)(dport >> 8);
    tcp[3] = (unsigned char)dport;
    for (int i = 0; i < 4; i++) {
        tcp[4 + i] = (unsigned char)(seq >> (24 - 8 * i));
        tcp[8 + i] = (unsigned char)(ack >> (24 - 8 * i));
    }
    tcp[13] = (unsigned char)flags;
    seg_t g = {a, b, (int)alen, tcp, (const unsigned char *)PyBytes_AS_STRING(payload),
               PyBytes_GET_SIZE(payload)};
    int rc = fast_take(self, slot, (double)ts_ns / 1e9, &g);
    if (rc < 0)
        return NULL;
    if (rc) {
        self->taken--; /* (fast_take counted it as read by the loops) */
        self->looped++;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
IgnoreSet_looped(IgnoreSet *self, void *closure)
{
    return PyLong_FromLongLong(self->looped);
}

/* set_sink(sink): sink(flow, events) gets what the fast connections' dissectors return (None:
 * forget it, which ends the reference cycle through the table). */
static PyObject *
IgnoreSet_set_sink(IgnoreSet *self, PyObject *sink)
{
    Py_XSETREF(self->sink, sink == Py_None ? NULL : Py_NewRef(sink));
    Py_RETURN_NONE;
}

static PyObject *
IgnoreSet_taken(IgnoreSet *self, void *closure)
{
    return PyLong_FromLongLong(self->taken);
}

static void
ign_stop(IgnoreSet *ign)
{
    ign->dropping = 0;
}

static int
ign_arg(PyObject *arg, IgnoreSet **ign, PyObject *out)
{
    *ign = NULL;
    if (arg == Py_None)
        return 0;
    if (!PyObject_TypeCheck(arg, &IgnoreSetType)) {
        PyErr_SetString(PyExc_TypeError, "ignore must be an IgnoreSet or None");
        return -1;
    }
    *ign = (IgnoreSet *)arg;
    /* the caller appended a raw record before this call (a block it parsed itself): it is
     * the last one in ``out``, since everything after it was appended here */
    Py_ssize_t n = PyList_GET_SIZE(out);
    if (n && !(PyTuple_Check(PyList_GET_ITEM(out, n - 1)) &&
               PyTuple_GET_SIZE(PyList_GET_ITEM(out, n - 1)) == 10))
        ign_stop(*ign);
    return 0;
}

/* arm(zones, next_sweep, interval): the next read may take records out (see above). */
static PyObject *
IgnoreSet_arm(IgnoreSet *self, PyObject *args)
{
    PyObject *zones, *sweep_arg;
    double interval;
    if (!PyArg_ParseTuple(args, "O!Od", &PyList_Type, &zones, &sweep_arg, &interval))
        return NULL;
    double next_sweep = 0.0;
    if (sweep_arg != Py_None) {
        next_sweep = PyFloat_AsDouble(sweep_arg);
        if (next_sweep == -1.0 && PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t nz = PyList_GET_SIZE(zones);
    if (nz > self->nzones) {
        int *grown = PyMem_Realloc(self->zones, sizeof(int) * (size_t)nz);
        if (grown == NULL)
            return PyErr_NoMemory();
        self->zones = grown;
    }
    for (Py_ssize_t i = 0; i < nz; i++) {
        long z = PyLong_AsLong(PyList_GET_ITEM(zones, i));
        if (z == -1 && PyErr_Occurred())
            return NULL;
        self->zones[i] = (int)z;
    }
    self->nzones = nz;
    self->have_sweep = sweep_arg != Py_None;
    self->next_sweep = next_sweep;
    self->interval = interval;
    self->dropping = 1;
    self->fast_stop = 0;
    Py_RETURN_NONE;
}

static PyObject *
IgnoreSet_dropped(IgnoreSet *self, void *closure)
{
    return PyLong_FromLongLong(self->dropped);
}

static Py_ssize_t
IgnoreSet_len(IgnoreSet *self)
{
    return self->live;
}

static PyMethodDef IgnoreSet_methods[] = {
    {"add", (PyCFunction)IgnoreSet_add, METH_VARARGS, "add(src, sport, dst, dport, zone)"},
    {"discard", (PyCFunction)IgnoreSet_discard, METH_VARARGS,
     "discard(src, sport, dst, dport, zone)"},
    {"last_seen", (PyCFunction)IgnoreSet_last_seen, METH_VARARGS,
     "last_seen(src, sport, dst, dport, zone) -> ts_ns of the last record taken out, or None"},
    {"arm", (PyCFunction)IgnoreSet_arm, METH_VARARGS,
     "arm(zones, next_sweep, interval): the next read may take records out"},
    {"add_fast", (PyCFunction)IgnoreSet_add_fast, METH_O,
     "add_fast(flow): its in-order segments go straight to its dissector"},
    {"take", (PyCFunction)(void (*)(void))IgnoreSet_take, METH_FASTCALL,
     "take(record, zone) -> bool: the record handled as the loops would (see the source)"},
    {"set_sink", (PyCFunction)IgnoreSet_set_sink, METH_O,
     "set_sink(sink): where the fast connections' events go"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef IgnoreSet_getset[] = {
    {"dropped", (getter)IgnoreSet_dropped, NULL, "records taken out so far", NULL},
    {"taken", (getter)IgnoreSet_taken, NULL, "records of fast connections handled so far", NULL},
    {"looped", (getter)IgnoreSet_looped, NULL, "records `take` handled so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods IgnoreSet_seq = {.sq_length = (lenfunc)IgnoreSet_len};

static PyTypeObject IgnoreSetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shark_tui.engine._native.IgnoreSet",
    .tp_basicsize = sizeof(IgnoreSet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Connections whose plain segments the record loops take out as they read.",
    .tp_new = IgnoreSet_new,
    .tp_dealloc = (destructor)IgnoreSet_dealloc,
    .tp_methods = IgnoreSet_methods,
    .tp_getset = IgnoreSet_getset,
    .tp_as_sequence = &IgnoreSet_seq,
};

/* -- the merge of dissect's workers ------------------------------------------------------- */

/* merge_records(bufs, poss, live, fd) -> (status, index)
 *
 * Each worker of `dissect --jobs` streams records: a header (ts: double, flow: u32, n: u32,
 * length: i32, little-endian) and ``length`` bytes of payload, in (ts, flow, n) order; the last
 * record has flow 0xFFFFFFFF (end: a summary follows) or 0xFFFFFFFE (failed). What was read of
 * stream i and not merged yet is ``bufs[2i]`` then ``bufs[2i + 1]`` (the end of one read, the
 * next read: a record may straddle them) from offset ``poss[i]``; ``live[i]`` says whether the
 * stream is still merged. The payloads of the smallest complete records (ties: the lower
 * stream, as heapq.merge) are written to ``fd`` (gathered, straight from the buffers) until a
 * live stream's next record is not complete in its buffers (status 1, that stream: read more),
 * the smallest record is an end or failed one, or has a length below 0 (status 2, that stream:
 * the caller reads it), or no stream is live (status 0). ``poss`` is updated in place; a write
 * error raises OSError. */

#define REC_HEAD 20
#define MAX_IOV 512

typedef struct {
    Py_buffer a, b;
    Py_ssize_t pos;
    int on;
} stream_t;

/* ``n`` bytes of the stream from offset ``off`` of a+b: pointers and lengths of the (at most
 * two) pieces; the count of pieces (0 for n = 0), or -1 when not all there. */
static int
stream_at(const stream_t *s, Py_ssize_t off, Py_ssize_t n, struct iovec *v)
{
    Py_ssize_t alen = s->a.len;
    if (off + n > alen + s->b.len)
        return -1;
    int k = 0;
    if (off < alen) {
        Py_ssize_t take = alen - off < n ? alen - off : n;
        v[k].iov_base = (char *)s->a.buf + off;
        v[k++].iov_len = (size_t)take;
        off += take;
        n -= take;
    }
    if (n > 0) {
        v[k].iov_base = (char *)s->b.buf + (off - alen);
        v[k++].iov_len = (size_t)n;
    }
    return k;
}

/* Write all of ``v[0:n]``; -1 with errno set on failure. The GIL is released meanwhile. */
static int
write_all(int fd, struct iovec *v, int n)
{
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    while (n > 0) {
        ssize_t w = writev(fd, v, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        while (n > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (char *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    Py_END_ALLOW_THREADS
    return rc;
}

static PyObject *
merge_records(PyObject *self, PyObject *args)
{
    PyObject *bufs, *poss, *live;
    int fd;
    if (!PyArg_ParseTuple(args, "O!O!O!i", &PyList_Type, &bufs, &PyList_Type, &poss,
                          &PyList_Type, &live, &fd))
        return NULL;
    Py_ssize_t k = PyList_GET_SIZE(poss);
    if (k > 64 || PyList_GET_SIZE(bufs) != 2 * k || PyList_GET_SIZE(live) != k) {
        PyErr_SetString(PyExc_ValueError,
                        "two buffers, a position and a flag per stream, at most 64 streams");
        return NULL;
    }
    stream_t st[64];
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    struct iovec iov[MAX_IOV];
    int niov = 0;
    for (; got < k; got++) {
        stream_t *s = &st[got];
        if (PyObject_GetBuffer(PyList_GET_ITEM(bufs, 2 * got), &s->a, PyBUF_SIMPLE) < 0)
            goto fail;
        if (PyObject_GetBuffer(PyList_GET_ITEM(bufs, 2 * got + 1), &s->b, PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&s->a);
            goto fail;
        }
        s->pos = PyLong_AsSsize_t(PyList_GET_ITEM(poss, got));
        s->on = PyObject_IsTrue(PyList_GET_ITEM(live, got));
        if ((s->pos == -1 && PyErr_Occurred()) || s->on < 0) {
            got++;
            goto fail;
        }
        if (s->pos < 0 || s->pos > s->a.len + s->b.len) {
            got++;
            PyErr_SetString(PyExc_ValueError, "a position outside its buffers");
            goto fail;
        }
    }
    int status = 0;
    Py_ssize_t index = -1;
    for (;;) {
        Py_ssize_t best = -1;
        double best_ts = 0;
        uint32_t best_flow = 0, best_n = 0;
        int32_t best_len = 0;
        for (Py_ssize_t i = 0; i < k; i++) {
            stream_t *s = &st[i];
            if (!s->on)
                continue;
            unsigned char h[REC_HEAD];
            struct iovec v[2];
            int pieces = stream_at(s, s->pos, REC_HEAD, v);
            if (pieces < 0) {
                status = 1;
                index = i;
                goto out;
            }
            memcpy(h, v[0].iov_base, v[0].iov_len);
            if (pieces == 2)
                memcpy(h + v[0].iov_len, v[1].iov_base, v[1].iov_len);
            double ts;
            uint32_t flow, n;
            int32_t length;
            memcpy(&ts, h, 8);
            memcpy(&flow, h + 8, 4);
            memcpy(&n, h + 12, 4);
            memcpy(&length, h + 16, 4);
            if (length >= 0 && stream_at(s, s->pos + REC_HEAD, length, v) < 0) {
                status = 1;
                index = i;
                goto out;
            }
            if (best < 0 || ts < best_ts ||
                (ts == best_ts && (flow < best_flow || (flow == best_flow && n < best_n)))) {
                best = i;
                best_ts = ts;
                best_flow = flow;
                best_n = n;
                best_len = length;
            }
        }
        if (best < 0)
            goto out;
        if (best_flow >= 0xFFFFFFFEu || best_len < 0) {
            status = 2;
            index = best;
            goto out;
        }
        stream_t *s = &st[best];
        if (niov + 2 > MAX_IOV) {
            if (write_all(fd, iov, niov) < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            niov = 0;
        }
        niov += stream_at(s, s->pos + REC_HEAD, best_len, iov + niov);
        s->pos += REC_HEAD + best_len;
    }
out:
    if (niov && write_all(fd, iov, niov) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    result = Py_BuildValue("(in)", status, index);
fail:
    /* the positions of what was written, also when a write failed */
    for (Py_ssize_t i = 0; i < got; i++) {
        PyObject *p = PyLong_FromSsize_t(st[i].pos);
        if (p == NULL || PyList_SetItem(poss, i, p) < 0)
            Py_CLEAR(result);
        PyBuffer_Release(&st[i].a);
        PyBuffer_Release(&st[i].b);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"pcap_records", pcap_records, METH_VARARGS, "Complete pcap records from pos (see above)."},
    {"pcapng_epbs", pcapng_epbs, METH_VARARGS, "Fast enhanced packet blocks from pos."},
    {"tcp_segment", tcp_segment, METH_VARARGS, "A plain TCP segment, or None (see above)."},
    {"merge_records", merge_records, METH_VARARGS, "Merge the workers' records (see above)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native",
    "Fast paths of capfile, packet and parallel's merge (see the source).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&IgnoreSetType) < 0)
        return NULL;
    PyObject **names[] = {&s_last_ts, &s_packets, &s_next, &s_bytes, &s_first_ts, &s_acked,
                          &s_feed, &s_addr, &s_halves, &s_client, &s_dissector, &s_zone};
    const char *texts[] = {"last_ts", "packets", "next", "bytes", "first_ts", "acked",
                           "feed", "addr", "halves", "client", "dissector", "zone"};
    for (int i = 0; i < 12; i++)
        if ((*names[i] = PyUnicode_InternFromString(texts[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "IgnoreSet", (PyObject *)&IgnoreSetType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
