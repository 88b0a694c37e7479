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
    u8 kind;      // 0: data (OpenSSL), 1: the socket closed, 2: data (Go crypto/tls);
                  // | UNREAD: the data could not be read here (user space reads it at addr)
    char comm[16];
    u64 addr;     // with UNREAD: where the chunk is in the process's memory
} __attribute__((packed));

#define UNREAD 0x80

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
BPF_ARRAY(lost, u64, 6);  // 0: chunks the ring had no room for, 1: bytes past MAX_CHUNKS, 2: unreadable,
                          // 3: Go writes copied at their RET (the entry's tail call failed),
                          // 4: stack-ABI Go RETs that met another call's entry on their thread,
                          // 5: stack-ABI Go calls dropped at their RET (the tail call failed)
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
        // a page that is not resident (paged out, say) cannot be read from a probe: the
        // header goes alone, and user space reads the bytes from /proc/PID/mem at once
        count(2, n);
        u8 kind = ev->h.kind;
        ev->h.kind = kind | UNREAD;
        ev->h.addr = lc->buf + off;
        if (events.ringbuf_output(ev, sizeof(struct hdr_t), 0) != 0)
            count(0, 1);
        ev->h.kind = kind;
        ev->h.addr = 0;
        return 0;
    }
    if (events.ringbuf_output(ev, sizeof(struct hdr_t) + n, 0) != 0)
        count(0, 1);
    return 0;
}

// One call's plaintext into the ring, in chunks; ``sk`` 0 when the socket is unknown (user space
// then finds the 5-tuple from the fd); ``lib`` 0 OpenSSL, 1 Go.
static __always_inline void emit_call(u64 id, u64 ssl, s32 fd, u32 dir, u64 sk, u64 buf,
                                      u64 total, u8 lib, struct tuple_t *known, u64 ts) {
    u32 zero = 0;
    struct event_t *ev = scratch.lookup(&zero);
    if (!ev)
        return;
    __builtin_memset(&ev->h, 0, sizeof(ev->h));
    ev->h.ts = ts ? ts : bpf_ktime_get_ns();
    ev->h.ssl = ssl;
    ev->h.pid = id >> 32;
    ev->h.tid = (u32)id;
    ev->h.fd = fd;
    ev->h.total = total;
    ev->h.dir = dir;
    ev->h.kind = lib ? 2 : 0;
    bpf_get_current_comm(&ev->h.comm, sizeof(ev->h.comm));
    if (sk) {
        read_tuple(sk, &ev->h.t);
        u8 one = 1;
        known_sk.update(&sk, &one);
    } else if (known) {
        __builtin_memcpy(&ev->h.t, known, sizeof(ev->h.t));
    }
    struct loop_ctx lc = {.buf = buf, .total = total};
    // (BCC cannot pass emit_chunk to bpf_loop: no callback relocation; a bounded loop it is)
    for (u32 i = 0; i < MAX_CHUNKS; i++)
        if (emit_chunk(i, &lc))
            break;
    if (total > (u64)MAX_CHUNKS * CHUNK)
        count(1, total - (u64)MAX_CHUNKS * CHUNK);
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
    emit_call(id, call.ssl, conn.fd >= 0 ? conn.fd : call.fd, call.dir, conn.sk, call.buf,
              total, 0, 0, 0);
}

// Go crypto/tls: plain uprobes at the entry of (*Conn).Write / (*Conn).Read and at every RET
// (a uretprobe crashes Go programs). Register ABI (Go >= 1.17): receiver RAX, buffer RBX,
// length RCX, result RAX; the goroutine (g) in R14 keys the call across thread switches. The
// fd is read through the struct offsets the binary was checked against (GO_*_OFF).
struct go_call_t {
    u64 buf;
    u64 len;  // the buffer's length at entry (the bytes a write hands over)
    u64 conn;
    s32 fd;
    u32 dir;
    u64 ts;  // at entry: writes are ordered by when they took the connection's lock, just after
    struct tuple_t t;  // from the netFD's laddr/raddr (*net.TCPAddr), read while it is open
};

// Keyed by process and goroutine: two Go programs built alike allocate their goroutines at the
// same addresses (the heap arena starts at 0xc000000000 in every one), so a g pointer alone
// matched one program's RET with another's call.
struct go_key_t {
    u64 g;
    u32 pid;
    u32 pad;
};

BPF_HASH(go_calls, struct go_key_t, struct go_call_t, 16384);

// One end of a netFD: the *net.TCPAddr in an interface at ``iface``: IP (a slice of 4 or 16
// bytes) and Port. Returns the family (0: unknown).
static __always_inline u16 go_addr(u64 iface, u8 *ip, u16 *port) {
    u64 addr = 0, ipptr = 0, iplen = 0;
    s64 p = 0;
    bpf_probe_read_user(&addr, 8, (void *)(iface + 8));
    if (!addr)
        return 0;
    bpf_probe_read_user(&ipptr, 8, (void *)(addr + GO_IP_OFF));
    bpf_probe_read_user(&iplen, 8, (void *)(addr + GO_IP_OFF + 8));
    bpf_probe_read_user(&p, 8, (void *)(addr + GO_PORT_OFF));
    *port = (u16)p;
    if (iplen == 16) {
        bpf_probe_read_user(ip, 16, (void *)ipptr);
        return AF_INET6;  // v4-mapped addresses are turned back into IPv4 in user space
    }
    if (iplen == 4) {
        bpf_probe_read_user(ip, 4, (void *)ipptr);
        return AF_INET;
    }
    return 0;
}

// fd and 5-tuple of a *tls.Conn: conn (a net.Conn interface: itab, data) -> *net.TCPConn ->
// conn.fd (*netFD) -> pfd.Sysfd, laddr, raddr.
static __always_inline s32 go_conn(u64 conn, struct tuple_t *t) {
    u64 data = 0, netfd = 0;
    s64 fd = -1;
    bpf_probe_read_user(&data, 8, (void *)(conn + GO_CONN_OFF + 8));
    if (!data)
        return -1;
    bpf_probe_read_user(&netfd, 8, (void *)(data + GO_CONNFD_OFF));
    if (!netfd)
        return -1;
    bpf_probe_read_user(&fd, 8, (void *)(netfd + GO_PFD_OFF + GO_SYSFD_OFF));
    u16 f1 = go_addr(netfd + GO_LADDR_OFF, t->laddr, &t->lport);
    u16 f2 = go_addr(netfd + GO_RADDR_OFF, t->raddr, &t->rport);
    t->family = f1 == f2 ? f1 : 0;
    return (s32)fd;
}

// A Go write's plaintext is copied at entry, where the buffer certainly holds what the call
// hands over (and no RET has to find the call again). The copy loop does not fit in the entry
// program beside the fd lookup (the verifier's limit), so the entry program leaves the call in
// `go_pending` and tail-calls `go_emit`; should the tail call fail, the write is emitted
// at its RET as before (counted).
BPF_PERCPU_ARRAY(go_pending, struct go_call_t, 1);
BPF_PROG_ARRAY(go_tail, 1);

static __always_inline void go_entry(struct pt_regs *ctx, u32 dir) {
    u64 id = bpf_get_current_pid_tgid();
    if (!wanted(id >> 32))
        return;
    struct go_call_t c = {};
    c.conn = ctx->ax;
    c.buf = ctx->bx;
    c.len = ctx->cx;
    c.dir = dir;
    c.ts = bpf_ktime_get_ns();
    c.fd = go_conn(c.conn, &c.t);
    struct go_key_t g = {.g = ctx->r14, .pid = id >> 32};
    if (dir == 0 && c.len > 0) {
        u32 zero = 0;
        go_pending.update(&zero, &c);
        go_calls.delete(&g);  // nothing for this write's RET to find
        go_tail.call(ctx, 0);  // does not return when it works
    }
    go_calls.update(&g, &c);  // a stack-growth restart fires this twice: the same values
}

int go_enter_write(struct pt_regs *ctx) { go_entry(ctx, 0); return 0; }
int go_enter_read(struct pt_regs *ctx) { go_entry(ctx, 1); return 0; }

// Stack ABI (ABI0, Go < 1.17): at entry the return address is at 0(SP), the receiver at 8(SP),
// the buffer's pointer and length at 16(SP) and 24(SP); at a RET SP is back at the return
// address and n is at 40(SP). No register holds g before Go 1.17, so a call is keyed by process
// and thread (bit 63 set: never a g pointer, which is a user-space address). A goroutine can
// leave its thread inside these calls: a Read waiting for data parks in the netpoller (holding
// the Conn's input lock) and resumes on whichever thread runs it next, as can a Write waiting
// for socket space. Its RET then finds nothing under its new thread (the call is lost), or
// another call's entry: a RET takes an entry only when the receiver still on its stack is the
// entry's and, for a read, the buffer too, so a read copies the returning call's bytes from its
// own buffer (a write is copied at entry; only its fallback at RET, when the tail call failed,
// compares the receiver alone). Parameter slots belong to the caller's frame; Read does not
// assign its receiver or buffer, so they are still there at its RET.
#define GO_STACK_KEY (1ULL << 63)

static __always_inline void go_entry_stack(struct pt_regs *ctx, u32 dir) {
    u64 id = bpf_get_current_pid_tgid();
    if (!wanted(id >> 32))
        return;
    u64 sp = ctx->sp;
    struct go_call_t c = {};
    bpf_probe_read_user(&c.conn, 8, (void *)(sp + 8));
    bpf_probe_read_user(&c.buf, 8, (void *)(sp + 16));
    bpf_probe_read_user(&c.len, 8, (void *)(sp + 24));
    c.dir = dir;
    c.ts = bpf_ktime_get_ns();
    c.fd = go_conn(c.conn, &c.t);
    struct go_key_t k = {.g = GO_STACK_KEY | (u32)id, .pid = id >> 32};
    if (dir == 0 && c.len > 0) {
        u32 zero = 0;
        go_pending.update(&zero, &c);
        go_calls.delete(&k);
        go_tail.call(ctx, 0);
    }
    go_calls.update(&k, &c);
}

int go_enter_write_stack(struct pt_regs *ctx) { go_entry_stack(ctx, 0); return 0; }
int go_enter_read_stack(struct pt_regs *ctx) { go_entry_stack(ctx, 1); return 0; }

// Also the stack ABI's reads, at their RET (``len`` then holds n, ``ts`` 0: now): that program
// with the copy loop inline is past the verifier's limit too.
int go_emit(struct pt_regs *ctx) {
    u32 zero = 0;
    struct go_call_t *cp = go_pending.lookup(&zero);
    if (!cp)
        return 0;
    struct go_call_t call = *cp;
    emit_call(bpf_get_current_pid_tgid(), call.conn, call.fd, call.dir, 0, call.buf, call.len,
              1, call.t.family ? &call.t : 0, call.ts);
    return 0;
}

int go_return(struct pt_regs *ctx) {
    struct go_key_t g = {.g = ctx->r14, .pid = bpf_get_current_pid_tgid() >> 32};
    struct go_call_t *cp = go_calls.lookup(&g);
    if (!cp)
        return 0;
    struct go_call_t call = *cp;
    go_calls.delete(&g);
    s64 n = (s64)ctx->ax;
    if (n <= 0)
        return 0;
    if (call.dir == 0)
        count(3, 1);
    emit_call(bpf_get_current_pid_tgid(), call.conn, call.fd, call.dir, 0, call.buf, n, 1,
              call.t.family ? &call.t : 0, call.dir == 0 ? call.ts : 0);
    return 0;
}

int go_return_stack(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct go_key_t k = {.g = GO_STACK_KEY | (u32)id, .pid = id >> 32};
    struct go_call_t *cp = go_calls.lookup(&k);
    if (!cp)
        return 0;
    struct go_call_t call = *cp;
    u64 sp = ctx->sp, conn = 0, buf = 0;
    s64 n = 0;
    bpf_probe_read_user(&conn, 8, (void *)(sp + 8));
    bpf_probe_read_user(&buf, 8, (void *)(sp + 16));
    // a write may reslice b before returning (the 1/n-1 record split of TLS 1.0): its
    // receiver alone is compared
    if (conn != call.conn || (call.dir == 1 && buf != call.buf)) {
        count(4, 1);  // not this call's entry: it is left for its own RET
        return 0;
    }
    go_calls.delete(&k);
    bpf_probe_read_user(&n, 8, (void *)(sp + 40));
    if (n <= 0)
        return 0;
    if (call.dir == 0)
        count(3, 1);
    else
        call.ts = 0;
    call.len = n;
    u32 zero = 0;
    go_pending.update(&zero, &call);
    go_tail.call(ctx, 0);  // go_emit; does not return when it works
    count(5, 1);
    return 0;
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
