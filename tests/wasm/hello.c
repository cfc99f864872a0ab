// Hello world through wasi-libc: printf (fd_write), args, environment, clocks, entropy.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    printf("hello, world from wasm32-wasi\n");
    printf("argc=%d argv[0]=%s argv[1]=%s\n", argc, argv[0], argc > 1 ? argv[1] : "(none)");
    const char *greeting = getenv("GREETING");
    printf("env GREETING=%s\n", greeting ? greeting : "(unset)");
    struct timespec t;
    int ok = clock_gettime(CLOCK_MONOTONIC, &t) == 0 && clock_gettime(CLOCK_REALTIME, &t) == 0 && t.tv_sec > 1600000000;
    unsigned char r[16] = {0};
    int nonzero = 0;
    if (getentropy(r, sizeof r) == 0)
        for (unsigned i = 0; i < sizeof r; i++) nonzero |= r[i];
    printf("clock %s, random %s\n", ok ? "ok" : "BAD", nonzero ? "ok" : "BAD");
    fprintf(stderr, "hello on stderr\n");
    return 0;
}
