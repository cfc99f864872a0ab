// Echo server on the workload's first listening socket (the manifest's first `listen`
// port): accepts N connections one after another (N = argv[1], default 1), echoes
// each until the peer ends its stream, then prints what it served. The listener is the
// first fd >= 3 that fstat calls a socket (fd 5 when the workload has /data and . at fds 3 and 4).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int find_listener(void) {
    for (int fd = 3; fd < 64; fd++) {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            if (errno == EBADF) break;
            continue;
        }
        if (S_ISSOCK(st.st_mode)) return fd;
    }
    return -1;
}

// Sends all of `len` bytes; returns 0, or -1 on error.
static int send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, 0);
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    int want = argc > 1 ? atoi(argv[1]) : 1;
    int lfd = find_listener();
    if (lfd < 0) {
        printf("no listening socket\n");
        return 1;
    }
    static char buf[16 * 1024];
    long long total = 0;
    int served = 0;
    for (; served < want; served++) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            printf("accept: %s\n", strerror(errno));
            return 1;
        }
        for (;;) {
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n == 0) break;
            if (n < 0) {
                printf("recv: %s\n", strerror(errno));
                break;
            }
            if (send_all(c, buf, (size_t)n) != 0) {
                printf("send: %s\n", strerror(errno));
                break;
            }
            total += n;
        }
        shutdown(c, SHUT_WR);
        close(c);
    }
    printf("served %d connections, %lld bytes\n", served, total);
    return 0;
}
