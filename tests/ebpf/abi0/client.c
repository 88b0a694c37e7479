/* The synthetic stack-ABI "Go" client (tests/ebpf/abi0prog.py builds it with conn.S): HTTP/1.1
 * requests over one loopback TCP connection, every write and read through the ABI0 functions
 * named crypto/tls.(*Conn).Write/Read, whose receiver is laid out as a Go *tls.Conn is (the
 * offsets are -D'd from goelf's table; only the fields the probes follow are filled in).
 *
 * usage: client PORT SECRET N. Prints "ready PID", waits for a line on stdin (the test first
 * sees the probes attached), makes N GETs of /abi0/items/I with "X-Secret: SECRET", then
 * prints one JSON line: {"local": "127.0.0.1:PORT", "statuses": [...], "echo": [...]}. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

long abi0_call(void *fn, void *conn, void *buf, long len);
extern void *go_write_fn, *go_read_fn;  /* crypto/tls.(*Conn).Write and Read (conn.S) */

static void put(char *base, long off, uint64_t v) { memcpy(base + off, &v, 8); }

/* a *net.TCPAddr: IP (a 4-byte slice, as Go makes for an IPv4 socket), Port, Zone "" */
static char *tcpaddr(struct sockaddr_in *sa) {
    char *a = calloc(1, 64);
    unsigned char *ip = malloc(4);
    memcpy(ip, &sa->sin_addr, 4);
    put(a, GO_IP_OFF, (uint64_t)ip);
    put(a, GO_IP_OFF + 8, 4);
    put(a, GO_IP_OFF + 16, 4);
    put(a, GO_PORT_OFF, ntohs(sa->sin_port));
    return a;
}

static char dummy_itab[64];

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: client PORT SECRET N\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[3]);
    const char *secret = argv[2];
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(port)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&peer, sizeof peer) != 0)
        die("connect");
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &len) != 0)
        die("getsockname");

    /* *netFD: pfd (poll.FD, Sysfd inside), laddr and raddr (net.Addr interfaces) */
    char *netfd = calloc(1, 256);
    put(netfd, GO_PFD_OFF + GO_SYSFD_OFF, (uint64_t)fd);
    put(netfd, GO_LADDR_OFF, (uint64_t)dummy_itab);
    put(netfd, GO_LADDR_OFF + 8, (uint64_t)tcpaddr(&local));
    put(netfd, GO_RADDR_OFF, (uint64_t)dummy_itab);
    put(netfd, GO_RADDR_OFF + 8, (uint64_t)tcpaddr(&peer));
    /* *net.TCPConn: net.conn{fd} at 0 */
    char *tcpconn = calloc(1, 64);
    put(tcpconn, GO_CONNFD_OFF, (uint64_t)netfd);
    /* *tls.Conn: conn (a net.Conn interface: itab, data) */
    char *conn = calloc(1, 1024);
    put(conn, GO_CONN_OFF, (uint64_t)dummy_itab);
    put(conn, GO_CONN_OFF + 8, (uint64_t)tcpconn);

    printf("{\"local\": \"127.0.0.1:%d\", \"statuses\": [", ntohs(local.sin_port));
    char echo[4096] = "";
    for (int i = 0; i < n; i++) {
        char req[1024];
        int m = snprintf(req, sizeof req,
                         "GET /abi0/items/%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         "X-Secret: %s\r\nUser-Agent: abi0-client\r\n\r\n", i, port, secret);
        for (int off = 0; off < m;) {
            long w = abi0_call(go_write_fn, conn, req + off, m - off);
            if (w <= 0)
                die("write");
            off += w;
        }
        /* the response: headers, then Content-Length bytes of body; a small buffer, so a
         * response takes several reads */
        static char resp[65536];
        long have = 0, need = -1;
        while (need < 0 || have < need) {
            long r = abi0_call(go_read_fn, conn, resp + have, 512 < sizeof resp - have ? 512 : 0);
            if (r <= 0)
                die("read");
            have += r;
            resp[have] = 0;
            char *end = strstr(resp, "\r\n\r\n");
            if (need < 0 && end) {
                char *cl = strcasestr(resp, "content-length:");
                need = (end - resp) + 4 + (cl ? atol(cl + 15) : 0);
            }
        }
        int status = atoi(resp + 9);
        printf("%s%d", i ? ", " : "", status);
        char *x = strcasestr(resp, "x-echo:");
        if (x) {
            x += 7;
            while (*x == ' ')
                x++;
            size_t k = strcspn(x, "\r\n");
            snprintf(echo + strlen(echo), sizeof echo - strlen(echo), "%s\"%.*s\"",
                     i ? ", " : "", (int)k, x);
        }
        memmove(resp, resp + need, have - need);  /* (nothing follows: one call at a time) */
    }
    printf("], \"echo\": [%s]}\n", echo);
    close(fd);
    return 0;
}
