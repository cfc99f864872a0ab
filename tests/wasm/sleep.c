// Sleeping through wasi-libc (poll_oneoff with a clock subscription): usleep,
// nanosleep, clock_nanosleep with TIMER_ABSTIME on the monotonic clock, and sleep(0).
// Each sleep must take at least what was asked and less than ten times that.
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0) return -1;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int within(const char *what, int64_t start, int64_t end, int64_t want_ns) {
    int64_t took = end - start;
    int ok = start >= 0 && end >= 0 && took >= want_ns && took < 10 * want_ns;
    if (!ok) printf("%s: wanted %lld ns, took %lld ns\n", what, (long long)want_ns, (long long)took);
    return ok;
}

int main(void) {
    int ok = 1;
    int64_t t0 = now_ns();
    ok &= usleep(50000) == 0;
    int64_t t1 = now_ns();
    ok &= within("usleep(50000)", t0, t1, 50000000);

    struct timespec req = {0, 20000000};
    ok &= nanosleep(&req, NULL) == 0;
    int64_t t2 = now_ns();
    ok &= within("nanosleep(20 ms)", t1, t2, 20000000);
    printf(ok ? "slept ok\n" : "slept BAD\n");

    struct timespec at;
    int abs_ok = clock_gettime(CLOCK_MONOTONIC, &at) == 0;
    int64_t t3 = (int64_t)at.tv_sec * 1000000000 + at.tv_nsec;
    at.tv_nsec += 10000000;
    if (at.tv_nsec >= 1000000000) {
        at.tv_sec += 1;
        at.tv_nsec -= 1000000000;
    }
    abs_ok &= clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == 0;
    abs_ok &= within("clock_nanosleep(abstime +10 ms)", t3, now_ns(), 10000000);
    printf(abs_ok ? "abstime ok\n" : "abstime BAD\n");

    int64_t t4 = now_ns();
    int zero_ok = sleep(0) == 0 && now_ns() - t4 < 50000000;
    printf(zero_ok ? "sleep(0) ok\n" : "sleep(0) BAD\n");
    return ok && abs_ok && zero_ok ? 0 : 1;
}
