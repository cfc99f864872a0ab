// Generates N bytes (xorshift32, seed 1) in a malloc'd buffer and prints their
// FNV-1a 64-bit hash and a byte sum. N comes from argv[1] (default 1 MiB).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], 0, 10) : (1u << 20);
    uint8_t *buf = malloc(n);
    if (!buf) {
        fprintf(stderr, "checksum: out of memory\n");
        return 1;
    }
    uint32_t x = 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
    uint64_t h = 0xcbf29ce484222325ull, sum = 0;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ buf[i]) * 0x100000001b3ull;
        sum += buf[i];
    }
    free(buf);
    printf("checksum of %zu bytes: fnv1a64=%016llx sum=%llu\n", n, (unsigned long long)h, (unsigned long long)sum);
    return 0;
}
