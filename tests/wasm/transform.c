// A batch tool for the data-in-and-out test: reads all of stdin (a key) and the input
// file /data/input.bin, and writes the input XORed with the key, followed by every
// byte value once, both to /data/result.bin and to stdout, as raw bytes.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BYTES (1 << 20)

static unsigned char key[4096], input[MAX_BYTES], out[MAX_BYTES + 256];

int main(void) {
    size_t key_len = fread(key, 1, sizeof key, stdin);
    FILE *f = fopen("/data/input.bin", "rb");
    if (!f) { fprintf(stderr, "open input: %s\n", strerror(errno)); return 1; }
    size_t n = fread(input, 1, sizeof input, f);
    fclose(f);
    if (key_len == 0) { fprintf(stderr, "empty stdin\n"); return 2; }
    for (size_t i = 0; i < n; i++) out[i] = input[i] ^ key[i % key_len];
    for (int b = 0; b < 256; b++) out[n + b] = (unsigned char)b;
    size_t total = n + 256;
    f = fopen("/data/result.bin", "wb");
    if (!f || fwrite(out, 1, total, f) != total || fclose(f) != 0) {
        fprintf(stderr, "write result: %s\n", strerror(errno));
        return 3;
    }
    if (fwrite(out, 1, total, stdout) != total || fflush(stdout) != 0) return 4;
    fprintf(stderr, "transformed %zu bytes with a %zu-byte key\n", n, key_len);
    return 0;
}
