/* The per-packet loops of `capfile` and `packet` in C: the same results, faster.
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

/* One record: decoded when its link type is given (>= 0) and it is a plain TCP segment. */
static PyObject *record(long long ts, long gid, const unsigned char *data, Py_ssize_t n,
                        uint32_t orig, int linktype);

static PyObject *
pcap_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    int big, rec_size;
    long long mult;
    PyObject *out;
    int linktype = -1;
    if (!PyArg_ParseTuple(args, "y*npiLO!|i", &view, &pos, &big, &rec_size, &mult, &PyList_Type,
                          &out, &linktype))
        return NULL;
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
        if (append_steal(out, record(ts, 0, h + rec_size, caplen, orig, linktype)) < 0) {
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
    PyObject *ifs, *out, *linktypes = NULL;
    if (!PyArg_ParseTuple(args, "y*npO!O!|O!", &view, &pos, &big, &PyList_Type, &ifs,
                          &PyList_Type, &out, &PyList_Type, &linktypes))
        return NULL;
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
        if (append_steal(out, record(ts, fi->gid, b + 28, caplen, orig, fi->linktype)) < 0)
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

static PyObject *
record(long long ts, long gid, const unsigned char *data, Py_ssize_t n, uint32_t orig,
       int linktype)
{
    seg_t g;
    if (linktype >= 0 && decode(linktype, data, n, &g))
        return seg_tuple(&g, 1, ts, gid);
    return packet_tuple(ts, gid, data, n, orig);
}

/* -- connections nobody dissects here ------------------------------------------------------ */

/* IgnoreSet: connections (4-tuple and zone) whose plain data and ACK segments the flow table
 * would only count, because nothing of them is dissected in this process (another worker's
 * share, or ruled out by a filter). `filter` takes those out of a batch of decoded records
 * before Python sees them, counting them; every SYN, FIN and RST still goes through.
 *
 * The caller adds a connection while it handles one batch; the set acts from the next. At that
 * point the set holds exactly the connections the table would ignore, and within a batch an
 * entry leaves the set at the first record after which the table might no longer ignore them:
 * a RST or a FIN (the table may end the connection), a SYN without ACK (it may start a new
 * one on the 4-tuple). Leaving early only means the table sees a few more records, which it
 * handles as always. The caller also removes connections it ends otherwise (eviction). */

typedef struct {
    unsigned char key[38]; /* zone, address length, lower end (addr, port), higher end */
    uint8_t state;         /* 0 empty, 1 used, 2 deleted */
    long long last_ts;     /* of the last record taken out */
} ign_slot;

typedef struct {
    PyObject_HEAD
    ign_slot *slots;
    Py_ssize_t cap, live, filled;
    long long dropped;
} IgnoreSet;

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
ign_delete(IgnoreSet *self, ign_slot *s)
{
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
    PyMem_Free(self->slots);
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

static PyObject *
IgnoreSet_add(IgnoreSet *self, PyObject *args)
{
    unsigned char key[38];
    if (!ign_parse(args, key))
        return NULL;
    if ((self->filled + 1) * 4 > self->cap * 3 && ign_grow(self) < 0)
        return NULL;
    ign_slot *s = ign_find(self, key, 1);
    if (s->state != 1) {
        if (s->state == 0)
            self->filled++;
        memcpy(s->key, key, 38);
        s->state = 1;
        self->live++;
    }
    s->last_ts = 0;
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

/* filter(items, zones, next_sweep, interval) -> the items left: decoded records of ignored
 * connections without SYN, FIN or RST are taken out (counted in ``dropped``); everything else
 * stays, in order. The caller sweeps its table at the first record it processes with
 * ts >= next_sweep (then next_sweep = ts + interval; None: set by the first record): such a
 * record is never taken out, so the sweeps fall on the same records as without the set. After
 * a raw (undecoded) record nothing is taken out: whether the caller processes it is not known
 * here. */
static PyObject *
IgnoreSet_filter(IgnoreSet *self, PyObject *args)
{
    PyObject *items, *zones, *sweep_arg;
    double interval;
    if (!PyArg_ParseTuple(args, "O!O!Od", &PyList_Type, &items, &PyList_Type, &zones,
                          &sweep_arg, &interval))
        return NULL;
    if (self->live == 0)
        return Py_NewRef(items);
    int have_sweep = sweep_arg != Py_None;
    double next_sweep = have_sweep ? PyFloat_AsDouble(sweep_arg) : 0.0;
    if (have_sweep && next_sweep == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), nz = PyList_GET_SIZE(zones);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    unsigned char key[38];
    int dropping = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 10) {
            dropping = 0;
            goto keep;
        }
        long long ts_ns = PyLong_AsLongLong(PyTuple_GET_ITEM(it, 0));
        double ts = (double)ts_ns / 1e9; /* as Python's ts_ns / 1e9 */
        int sweeps = 0;                  /* the caller sweeps (or starts its clock) here */
        if (!have_sweep || ts >= next_sweep) {
            have_sweep = 1;
            next_sweep = ts + interval;
            sweeps = 1;
        }
        PyObject *src = PyTuple_GET_ITEM(it, 2), *dst = PyTuple_GET_ITEM(it, 4);
        if (!PyBytes_Check(src) || !PyBytes_Check(dst) ||
            PyBytes_GET_SIZE(src) != PyBytes_GET_SIZE(dst) ||
            (PyBytes_GET_SIZE(src) != 4 && PyBytes_GET_SIZE(src) != 16))
            goto keep; /* not one of the reader's decoded records */
        long gid = PyLong_AsLong(PyTuple_GET_ITEM(it, 1));
        Py_ssize_t alen = PyBytes_GET_SIZE(src);
        int zone = gid >= 0 && gid < nz ? (int)PyLong_AsLong(PyList_GET_ITEM(zones, gid)) : 0;
        int sport = (int)PyLong_AsLong(PyTuple_GET_ITEM(it, 3));
        int dport = (int)PyLong_AsLong(PyTuple_GET_ITEM(it, 5));
        long flags = PyLong_AsLong(PyTuple_GET_ITEM(it, 8));
        if (PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        ign_key(key, zone, (const unsigned char *)PyBytes_AS_STRING(src), sport,
                (const unsigned char *)PyBytes_AS_STRING(dst), dport, (int)alen);
        ign_slot *s = ign_find(self, key, 0);
        if (s == NULL)
            goto keep;
        if (flags & 0x05) {
            /* RST or FIN: the table may end the connection here; from now on it sees all of
             * this 4-tuple again (a few packets: taking out too little is always safe) */
            ign_delete(self, s);
        } else if (flags & 0x02) {   /* SYN: the table looks at it; without ACK it may open */
            if (!(flags & 0x10))     /* a new connection on this 4-tuple */
                ign_delete(self, s);
        } else if (dropping && !sweeps) {
            s->last_ts = ts_ns;
            self->dropped++;
            continue;
        }
    keep:
        if (PyList_Append(out, it) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
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
    {"filter", (PyCFunction)IgnoreSet_filter, METH_VARARGS, "filter(items, zones) -> items"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef IgnoreSet_getset[] = {
    {"dropped", (getter)IgnoreSet_dropped, NULL, "records taken out so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods IgnoreSet_seq = {.sq_length = (lenfunc)IgnoreSet_len};

static PyTypeObject IgnoreSetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shark_tui.engine._native.IgnoreSet",
    .tp_basicsize = sizeof(IgnoreSet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Connections whose plain segments are taken out of decoded batches.",
    .tp_new = IgnoreSet_new,
    .tp_dealloc = (destructor)IgnoreSet_dealloc,
    .tp_methods = IgnoreSet_methods,
    .tp_getset = IgnoreSet_getset,
    .tp_as_sequence = &IgnoreSet_seq,
};

static PyMethodDef methods[] = {
    {"pcap_records", pcap_records, METH_VARARGS, "Complete pcap records from pos (see above)."},
    {"pcapng_epbs", pcapng_epbs, METH_VARARGS, "Fast enhanced packet blocks from pos."},
    {"tcp_segment", tcp_segment, METH_VARARGS, "A plain TCP segment, or None (see above)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Fast paths of capfile and packet (see the source).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&IgnoreSetType) < 0)
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
