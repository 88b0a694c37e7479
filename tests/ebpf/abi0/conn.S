// A stand-in for a Go < 1.17 binary's crypto/tls.(*Conn).Write and Read, for the stack-ABI
// (ABI0) Go TLS probes: the functions carry Go's symbol names and take their arguments and
// leave their results on the stack as ABI0 does — at entry 0(SP) the return address, 8(SP) the
// receiver (*Conn), 16/24/32(SP) the buffer's pointer/length/capacity, 40(SP) n and 48(SP) err
// (an interface, 2 words) to be written. Their bodies find the fd through the same structures the
// probes follow (tls.Conn.conn -> net.TCPConn -> netFD -> pfd.Sysfd; offsets -D'd from goelf's
// table) and make one real write(2)/read(2) on it: no encryption, the probes only see the calls.
// Each has a Go-like prologue (a stack-bound check the probes skip, a frame) and two RETs.
// The offsets come from the command line: GO_CONN_OFF, GO_CONNFD_OFF, GO_PFD_OFF, GO_SYSFD_OFF.
    .intel_syntax noprefix

    .data
    .balign 8
fake_stackguard:  // the bound Go's prologue compares SP with: 0, so the check never branches
    .quad 0

    .text

// long abi0_call(void *fn, void *conn, void *buf, long len): calls fn as ABI0 would, returns n
    .globl abi0_call
    .type abi0_call, @function
abi0_call:
    push rbp
    mov rbp, rsp
    sub rsp, 64
    mov [rsp], rsi          // the callee's 8(SP): the receiver
    mov [rsp + 8], rdx      // 16(SP): b.ptr
    mov [rsp + 16], rcx     // 24(SP): b.len
    mov [rsp + 24], rcx     // 32(SP): b.cap
    mov qword ptr [rsp + 32], -1  // 40(SP): n, written by the callee
    mov qword ptr [rsp + 40], 0   // 48(SP): err
    mov qword ptr [rsp + 48], 0
    call rdi
    mov rax, [rsp + 32]
    leave
    ret
    .size abi0_call, .-abi0_call

// the fd of the receiver at 8(SP) of the caller's frame, given in rax; result in rdi
#define LOAD_FD \
    mov rax, [rax + GO_CONN_OFF + 8];   /* conn interface's data: *net.TCPConn */ \
    mov rax, [rax + GO_CONNFD_OFF];     /* net.conn.fd: *netFD */ \
    mov rdi, [rax + GO_PFD_OFF + GO_SYSFD_OFF]

#define ABI0_IO(NAME, SYSNO) \
    .globl NAME; \
    .type NAME, @function; \
NAME: \
    cmp rsp, [rip + fake_stackguard];  /* Go's stack-bound check, never taken */ \
    jbe 9f; \
    sub rsp, 24;                       /* a frame: the arguments are now 32(SP) on */ \
    mov [rsp + 16], rbp; \
    lea rbp, [rsp + 16]; \
    mov rdx, [rsp + 24 + 24];          /* b.len */ \
    test rdx, rdx; \
    jnz 1f; \
    mov qword ptr [rsp + 24 + 40], 0;  /* an empty buffer: n = 0, no syscall */ \
    mov rbp, [rsp + 16]; \
    add rsp, 24; \
    ret; \
1:  mov rax, [rsp + 24 + 8];           /* the receiver */ \
    LOAD_FD; \
    mov rsi, [rsp + 24 + 16];          /* b.ptr */ \
    mov eax, SYSNO; \
    syscall; \
    test rax, rax; \
    jns 2f; \
    mov [rsp + 24 + 56], rax;          /* an error: n = 0, err's data word = -errno */ \
    xor eax, eax; \
2:  mov [rsp + 24 + 40], rax;          /* n */ \
    mov rbp, [rsp + 16]; \
    add rsp, 24; \
    ret; \
9:  jmp NAME; \
    .size NAME, .-NAME

ABI0_IO("crypto/tls.(*Conn).Write", 1)
ABI0_IO("crypto/tls.(*Conn).Read", 0)

// their addresses for the C side (whose compiler cannot spell those names)
    .data
    .balign 8
    .globl go_write_fn, go_read_fn
go_write_fn:
    .quad "crypto/tls.(*Conn).Write"
go_read_fn:
    .quad "crypto/tls.(*Conn).Read"

// Go's build info before Go 1.18: the magic, pointer size 8, flags 0 (little-endian, strings
// not inline), then pointers to two Go string headers (pointer, length): the version, modinfo.
    .section .go.buildinfo, "aw"
    .balign 16
    .ascii "\377 Go buildinf:"
    .byte 8, 0
    .quad buildversion
    .quad modinfo
    .data
    .balign 8
buildversion:
    .quad version_text, version_end - version_text
modinfo:
    .quad version_text, 0
version_text:
    .ascii GO_VERSION
version_end:
    .section .note.GNU-stack, "", @progbits
