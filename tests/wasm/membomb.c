// Allocates and touches 1 MiB blocks, keeping them all, until something stops it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *volatile keep; // the blocks form a list reachable from here, so none is elided

int main(void) {
    for (unsigned mib = 1;; mib++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("membomb: malloc failed at %u MiB\n", mib);
            return 2;
        }
        memset(p, (int)mib, 1 << 20);
        *(void **)p = keep;
        keep = p;
        if (mib % 8 == 0) printf("membomb: %u MiB\n", mib);
    }
}
