// The persistent file area (/data) through plain libc: a run counter that survives
// runs, a 100 KiB file read back, a sorted directory listing, unlink, a directory tree
// (mkdir, rename, readdir, rmdir; relative paths through the "." preopen and absolute
// ones under /data; '..' out of the area refused), and the quota.
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BIG_BYTES (100 * 1024)
#define MAX_NAMES 64

static int run_counter(void) {
    int runs = 0;
    FILE *f = fopen("/data/runs", "r");
    if (f) {
        if (fscanf(f, "%d", &runs) != 1) runs = 0;
        fclose(f);
    }
    runs++;
    f = fopen("/data/runs", "w");
    if (!f) { printf("open runs for writing: %s\n", strerror(errno)); return 1; }
    fprintf(f, "%d\n", runs);
    if (fclose(f) != 0) { printf("close runs: %s\n", strerror(errno)); return 1; }
    printf("runs=%d\n", runs);
    return 0;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + (i >> 8)); }

static int big_file(void) {
    static unsigned char buf[BIG_BYTES], back[BIG_BYTES + 1];
    for (size_t i = 0; i < BIG_BYTES; i++) buf[i] = pattern(i);
    FILE *f = fopen("/data/big", "wb");
    if (!f || fwrite(buf, 1, BIG_BYTES, f) != BIG_BYTES || fclose(f) != 0) {
        printf("write big: %s\n", strerror(errno));
        return 1;
    }
    f = fopen("/data/big", "rb");
    if (!f) { printf("open big: %s\n", strerror(errno)); return 1; }
    size_t n = fread(back, 1, sizeof back, f);
    fclose(f);
    struct stat st;
    if (stat("/data/big", &st) != 0 || st.st_size != BIG_BYTES) { printf("stat big: wrong size\n"); return 1; }
    if (n != BIG_BYTES || memcmp(buf, back, BIG_BYTES) != 0) { printf("big file differs (%zu bytes)\n", n); return 1; }
    printf("big file ok\n");
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_files(void) {
    DIR *d = opendir("/data");
    if (!d) { printf("opendir: %s\n", strerror(errno)); return 1; }
    char *names[MAX_NAMES];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && count < MAX_NAMES) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof names[0], by_name);
    printf("files:");
    for (int i = 0; i < count; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
    return 0;
}

static int unlink_temp(void) {
    if (unlink("/data/tmp") != 0) { printf("unlink: %s\n", strerror(errno)); return 1; }
    if (fopen("/data/tmp", "r") != NULL || errno != ENOENT) { printf("tmp still there\n"); return 1; }
    if (unlink("/data/tmp") == 0 || errno != ENOENT) { printf("second unlink did not fail\n"); return 1; }
    printf("unlink ok\n");
    return 0;
}

#define CHECK(cond, what) do { if (!(cond)) { printf("tree: %s: %s\n", what, strerror(errno)); return 1; } } while (0)

// Names in directory `path` other than . and .., sorted, joined by ',' into out.
static int names_in(const char *path, char *out, size_t out_len) {
    DIR *d = opendir(path);
    if (!d) return -1;
    char *names[MAX_NAMES];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && count < MAX_NAMES) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof names[0], by_name);
    out[0] = 0;
    for (int i = 0; i < count; i++) {
        if (i) strncat(out, ",", out_len - strlen(out) - 1);
        strncat(out, names[i], out_len - strlen(out) - 1);
        free(names[i]);
    }
    return count;
}

// A directory tree, mixing relative paths (the "." preopen, the same area) and /data
// ones; leaves the area as it found it.
static int tree(void) {
    char list[256];
    CHECK(mkdir("tree", 0755) == 0, "mkdir tree");
    CHECK(mkdir("tree", 0755) != 0 && errno == EEXIST, "mkdir twice");
    CHECK(mkdir("/data/tree/a", 0755) == 0 && mkdir("tree/a/b", 0755) == 0, "mkdir nested");
    CHECK(mkdir("tree/none/c", 0755) != 0 && errno == ENOENT, "mkdir without parent");
    FILE *f = fopen("tree/a/b/leaf", "w");
    CHECK(f && fputs("leaf\n", f) >= 0 && fclose(f) == 0, "write leaf");
    CHECK(rename("tree/a", "/data/tree/moved") == 0, "rename dir");
    CHECK(fopen("tree/a/b/leaf", "r") == NULL && errno == ENOENT, "old name gone");
    struct stat st;
    CHECK(stat("/data/tree/moved/b/leaf", &st) == 0 && st.st_size == 5, "stat moved leaf");
    CHECK(stat("tree/moved/b", &st) == 0 && S_ISDIR(st.st_mode), "stat moved dir");
    CHECK(rename("tree/moved/b/leaf", "tree/leaf2") == 0, "rename file");
    CHECK(names_in("tree", list, sizeof list) == 2, "readdir tree");
    printf("tree: %s\n", list);
    CHECK(names_in("/data/tree/moved", list, sizeof list) == 1, "readdir moved");
    printf("tree/moved: %s\n", list);
    CHECK(rmdir("tree/moved") != 0 && errno == ENOTEMPTY, "rmdir non-empty");
    CHECK(mkdir("../outside", 0755) != 0, "mkdir outside the area");
    CHECK(fopen("/data/../escape", "w") == NULL, "open outside the area");
    CHECK(fopen("tree/moved/../../../escape", "w") == NULL, "open outside through the tree");
    CHECK(unlink("tree/leaf2") == 0 && rmdir("tree/moved/b") == 0 && rmdir("tree/moved") == 0, "clean up");
    CHECK(rmdir("/data/tree") == 0, "rmdir tree");
    CHECK(stat("tree", &st) != 0 && errno == ENOENT, "tree gone");
    printf("tree ok (mkdir, rename, readdir, rmdir, relative paths)\n");
    return 0;
}

// Writes 64 KiB chunks until the area refuses (at most 65 MiB, above any quota).
static int quota(void) {
    static unsigned char chunk[64 * 1024];
    FILE *f = fopen("/data/hog", "w");
    if (!f) { printf("open hog: %s\n", strerror(errno)); return 1; }
    int failed = 0;
    for (int i = 0; i < 65 * 16 && !failed; i++) failed = fwrite(chunk, 1, sizeof chunk, f) != sizeof chunk;
    int saved = errno;
    failed |= fclose(f) != 0;
    if (failed) saved = errno;
    unlink("/data/hog");
    if (!failed) { printf("quota not enforced\n"); return 1; }
    printf("quota enforced (%s)\n", strerror(saved));
    return 0;
}

int main(void) {
    if (run_counter() || big_file()) return 1;
    FILE *t = fopen("/data/tmp", "w");
    if (!t || fputs("scratch\n", t) < 0 || fclose(t) != 0) { printf("write tmp: %s\n", strerror(errno)); return 1; }
    if (list_files() || unlink_temp() || tree() || quota()) return 1;
    return 0;
}
