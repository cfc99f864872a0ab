// Never finishes: only a CPU limit or a deadline stops it.
#include <stdio.h>

int main(void) {
    printf("spin: starting an endless loop\n");
    fflush(stdout);
    volatile unsigned long x = 0;
    for (;;) x++;
}
