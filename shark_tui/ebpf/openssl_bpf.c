// OpenSSL plaintext: SSL_read/SSL_write(_ex) uprobes, the socket from what the kernel nests
// inside the call. Defines injected by openssl.py: SELF_PID, TARGETED, KPROBES, OFF_*.
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>

#define CHUNK 16384
#define MAX_CHUNKS 64  // 1 MiB per call; the rest is counted, and a gap in the stream

struct call_t {
    u64 buf;
    u64 out_len;  // size_t * of the _ex variants, 0 otherwise
    u64 ssl;
    u64 sk;
    s32 fd;
    u32 dir;      // 0: this process writes, 1: it reads
};

struct conn_t {
    u64 sk;
    s32 fd;
    u32 pad;
};

struct tuple_t {
    u16 family;
    u16 lport;    // local, host order
    u16 rport;    // remote, host order
    u8 laddr[16];
    u8 raddr[16];
} __attribute__((packed));

struct hdr_t {
    u64 ts;
    u64 ssl;
    u32 pid;
    u32 tid;
    s32 fd;
    u32 len;      // bytes of this chunk
    u32 offset;   // of this chunk within the call
    u32 total;    // bytes the call moved
    struct tuple_t t;
    u8 dir;
    u8 kind;      // 0: data, 1: the socket closed
    char comm[16];
} __attribute__((packed));

struct event_t {
    struct hdr_t h;
    u8 data[CHUNK];
};

struct io_key_t {
    u32 pid;
    struct tuple_t t;
} __attribute__((packed));

struct io_val_t {
    u64 ssl_bytes;
    u64 plain_bytes;
};

BPF_HASH(calls, u64, struct call_t, 16384);
BPF_TABLE("lru_hash", u64, struct conn_t, ssl_conn, 65536);
BPF_TABLE("lru_hash", u64, u8, known_sk, 65536);
BPF_TABLE("lru_hash", struct io_key_t, struct io_val_t, sockio, 16384);
BPF_HASH(targets, u32, u8, 16384);
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
BPF_ARRAY(lost, u64, 4);  // 0: chunks the ring had no room for, 1: bytes past MAX_CHUNKS, 2: unreadable
BPF_RINGBUF_OUTPUT(events, 4096);  // pages: 16 MiB

static __always_inline int wanted(u32 pid) {
    if (pid == SELF_PID)
        return 0;
#if TARGETED
    return targets.lookup(&pid) != 0;
#else
    return 1;
#endif
}

static __always_inline void count(int slot, u64 n) {
    u64 *v = lost.lookup(&slot);
    if (v)
        __sync_fetch_and_add(v, n);
}

static __always_inline void read_tuple(u64 sk, struct tuple_t *t) {
    u16 family = 0, rport = 0, lport = 0;
    bpf_probe_read_kernel(&family, 2, (void *)(sk + OFF_FAMILY));
    bpf_probe_read_kernel(&rport, 2, (void *)(sk + OFF_DPORT));
    bpf_probe_read_kernel(&lport, 2, (void *)(sk + OFF_NUM));
    t->family = family;
    t->lport = lport;
    t->rport = __builtin_bswap16(rport);
    if (family == AF_INET) {
        bpf_probe_read_kernel(t->laddr, 4, (void *)(sk + OFF_SADDR));
        bpf_probe_read_kernel(t->raddr, 4, (void *)(sk + OFF_DADDR));
    } else if (family == AF_INET6) {
        bpf_probe_read_kernel(t->laddr, 16, (void *)(sk + OFF_V6_SADDR));
        bpf_probe_read_kernel(t->raddr, 16, (void *)(sk + OFF_V6_DADDR));
    }
}

static __always_inline void on_entry(struct pt_regs *ctx, u32 dir, int ex) {
    u64 id = bpf_get_current_pid_tgid();
    if (!wanted(id >> 32))
        return;
    struct call_t c = {};
    c.ssl = PT_REGS_PARM1(ctx);
    c.buf = PT_REGS_PARM2(ctx);
    c.out_len = ex ? PT_REGS_PARM4(ctx) : 0;
    c.fd = -1;
    c.dir = dir;
    calls.update(&id, &c);
}

int enter_write(struct pt_regs *ctx) { on_entry(ctx, 0, 0); return 0; }
int enter_read(struct pt_regs *ctx) { on_entry(ctx, 1, 0); return 0; }
int enter_write_ex(struct pt_regs *ctx) { on_entry(ctx, 0, 1); return 0; }
int enter_read_ex(struct pt_regs *ctx) { on_entry(ctx, 1, 1); return 0; }

struct loop_ctx {
    u64 buf;
    u64 total;
};

// One chunk of a call's plaintext into the ring; 1 stops the loop.
static __always_inline long emit_chunk(u32 i, struct loop_ctx *lc) {
    u64 off = (u64)i * CHUNK;
    if (off >= lc->total)
        return 1;
    u32 zero = 0;
    struct event_t *ev = scratch.lookup(&zero);
    if (!ev)
        return 1;
    u64 n = lc->total - off;
    if (n > CHUNK)
        n = CHUNK;
    ev->h.offset = off;
    ev->h.len = n;
    if (bpf_probe_read_user(ev->data, n, (void *)(lc->buf + off)) != 0) {
        count(2, n);
        return 0;
    }
    if (events.ringbuf_output(ev, sizeof(struct hdr_t) + n, 0) != 0)
        count(0, 1);
    return 0;
}

static __always_inline void on_return(struct pt_regs *ctx, int ex) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t *cp = calls.lookup(&id);
    if (!cp)
        return;
    struct call_t call = *cp;
    calls.delete(&id);
    int ret = (int)PT_REGS_RC(ctx);  // an int: -1 comes back as 0xffffffff in rax
    u64 total = 0;
    if (ex) {
        if (ret != 1)
            return;
        bpf_probe_read_user(&total, sizeof(total), (void *)call.out_len);
    } else {
        if (ret <= 0)
            return;
        total = ret;
    }
    struct conn_t conn = {};
    if (call.sk) {
        conn.sk = call.sk;
        conn.fd = call.fd;
        ssl_conn.update(&call.ssl, &conn);
    } else {
        struct conn_t *known = ssl_conn.lookup(&call.ssl);
        if (known)
            conn = *known;
        else
            conn.fd = call.fd;
    }
    u32 zero = 0;
    struct event_t *ev = scratch.lookup(&zero);
    if (!ev)
        return;
    __builtin_memset(&ev->h, 0, sizeof(ev->h));
    ev->h.ts = bpf_ktime_get_ns();
    ev->h.ssl = call.ssl;
    ev->h.pid = id >> 32;
    ev->h.tid = (u32)id;
    ev->h.fd = conn.fd >= 0 ? conn.fd : call.fd;
    ev->h.total = total;
    ev->h.dir = call.dir;
    bpf_get_current_comm(&ev->h.comm, sizeof(ev->h.comm));
    if (conn.sk) {
        read_tuple(conn.sk, &ev->h.t);
        u8 one = 1;
        known_sk.update(&conn.sk, &one);
    }
    struct loop_ctx lc = {.buf = call.buf, .total = total};
    // (BCC cannot pass emit_chunk to bpf_loop: no callback relocation; a bounded loop it is)
    for (u32 i = 0; i < MAX_CHUNKS; i++)
        if (emit_chunk(i, &lc))
            break;
    if (total > (u64)MAX_CHUNKS * CHUNK)
        count(1, total - (u64)MAX_CHUNKS * CHUNK);
}

int return_write(struct pt_regs *ctx) { on_return(ctx, 0); return 0; }
int return_read(struct pt_regs *ctx) { on_return(ctx, 0); return 0; }
int return_write_ex(struct pt_regs *ctx) { on_return(ctx, 1); return 0; }
int return_read_ex(struct pt_regs *ctx) { on_return(ctx, 1); return 0; }

// The socket under an SSL call; per process and connection, bytes inside and outside SSL calls
// (tls-status: a process whose TLS connections never pass through SSL_read/SSL_write).
static __always_inline void on_sock(u64 sk, long bytes) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t *c = calls.lookup(&id);
    if (c)
        c->sk = sk;
    if (bytes <= 0 || !wanted(id >> 32))
        return;
    struct io_key_t k = {};
    k.pid = id >> 32;
    read_tuple(sk, &k.t);
    struct io_val_t zero = {};
    struct io_val_t *v = sockio.lookup_or_try_init(&k, &zero);
    if (!v)
        return;
    if (c)
        __sync_fetch_and_add(&v->ssl_bytes, bytes);
    else
        __sync_fetch_and_add(&v->plain_bytes, bytes);
}

#if KPROBES
int kp_tcp_sendmsg(struct pt_regs *ctx) { on_sock(PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx)); return 0; }
int kp_tcp_recvmsg(struct pt_regs *ctx) { on_sock(PT_REGS_PARM1(ctx), 1); return 0; }
#elif TRACEPOINTS
TRACEPOINT_PROBE(sock, sock_send_length) {
    if (args->protocol == IPPROTO_TCP)
        on_sock((u64)args->sk, args->ret);
    return 0;
}
TRACEPOINT_PROBE(sock, sock_recv_length) {
    if (args->protocol == IPPROTO_TCP)
        on_sock((u64)args->sk, args->ret);
    return 0;
}
#endif

static __always_inline void on_fd(int fd) {
    u64 id = bpf_get_current_pid_tgid();
    struct call_t *c = calls.lookup(&id);
    if (c && c->fd < 0)
        c->fd = fd;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { on_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { on_fd(args->fd); return 0; }

// A connection we reported closed: the synthetic stream gets its FINs.
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP || args->newstate != 7 /* TCP_CLOSE */)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (!known_sk.lookup(&sk))
        return 0;
    known_sk.delete(&sk);
    u32 zero = 0;
    struct event_t *ev = scratch.lookup(&zero);
    if (!ev)
        return 0;
    __builtin_memset(&ev->h, 0, sizeof(ev->h));
    ev->h.ts = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    ev->h.pid = id >> 32;
    ev->h.tid = (u32)id;
    ev->h.fd = -1;
    ev->h.kind = 1;
    ev->h.t.family = args->family;
    ev->h.t.lport = args->sport;
    ev->h.t.rport = args->dport;
    if (args->family == AF_INET) {
        __builtin_memcpy(ev->h.t.laddr, args->saddr, 4);
        __builtin_memcpy(ev->h.t.raddr, args->daddr, 4);
    } else {
        __builtin_memcpy(ev->h.t.laddr, args->saddr_v6, 16);
        __builtin_memcpy(ev->h.t.raddr, args->daddr_v6, 16);
    }
    if (events.ringbuf_output(ev, sizeof(struct hdr_t), 0) != 0)
        count(0, 1);
    return 0;
}
