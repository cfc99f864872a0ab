// The persistent file area (/data) through plain libc: a run counter that survives
// runs, a 100 KiB file read back, a sorted directory listing, unlink, a directory tree
// (mkdir, rename, readdir, rmdir; relative paths through the "." preopen and absolute
// ones under /data; '..' out of the area refused), symlinks (inside followed, outside
// refused with EPERM), hard links, stored times, a symlink left by the previous run,
// and the quota reached in the middle of a tree.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
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

// Symlinks, hard links and times (issue 17); leaves the area as it found it.
static int links(void) {
    char buf[64];
    struct stat st, lst;
    FILE *f = fopen("ln-target", "w");
    CHECK(f && fputs("target\n", f) >= 0 && fclose(f) == 0, "write ln-target");
    CHECK(mkdir("ln", 0755) == 0, "mkdir ln");
    CHECK(symlink("../ln-target", "ln/sym") == 0, "symlink inside");
    CHECK(symlink("x", "/data/ln/sym") != 0 && errno == EEXIST, "symlink over a name");
    ssize_t n = readlink("/data/ln/sym", buf, sizeof buf);
    CHECK(n == 12 && memcmp(buf, "../ln-target", 12) == 0, "readlink");
    CHECK(stat("ln/sym", &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 7, "stat through the symlink");
    CHECK(lstat("ln/sym", &lst) == 0 && S_ISLNK(lst.st_mode) && lst.st_size == 12, "lstat the symlink");
    f = fopen("ln/sym", "r");
    CHECK(f && fgets(buf, sizeof buf, f) && strcmp(buf, "target\n") == 0, "read through the symlink");
    fclose(f);
    CHECK(symlink("..", "ln/up") == 0 && stat("ln/up/ln-target", &st) == 0, "symlink to the parent");
    // Links out of the area can be made (as under wasmtime) but never followed.
    CHECK(symlink("../../escape", "ln/out") == 0 && symlink("/etc/passwd", "ln/abs") == 0, "symlinks out made");
    CHECK(fopen("ln/out", "r") == NULL && errno == EPERM, "symlink out of the area refused");
    CHECK(fopen("ln/abs", "r") == NULL && errno == EPERM, "absolute symlink refused");
    CHECK(fopen("ln/up/../escape", "w") == NULL, "symlink then .. out of the area refused");
    // A hard link shares the file: one inode, two names, writes seen through both.
    CHECK(link("ln-target", "ln/hard") == 0, "link");
    CHECK(stat("ln/hard", &st) == 0 && st.st_nlink == 2 && stat("ln-target", &lst) == 0 && st.st_ino == lst.st_ino, "one inode");
    f = fopen("ln/hard", "a");
    CHECK(f && fputs("more\n", f) >= 0 && fclose(f) == 0, "append through the link");
    CHECK(stat("ln-target", &st) == 0 && st.st_size == 12, "size through the other name");
    // Times: a write stamps the node's clock; utimensat stores given times.
    CHECK(st.st_mtime > 1600000000, "mtime from the node clock");
    struct timespec ts[2] = {{1000, 0}, {2000, 500}};
    CHECK(utimensat(AT_FDCWD, "ln-target", ts, 0) == 0, "utimensat");
    CHECK(stat("ln/hard", &st) == 0 && st.st_atime == 1000 && st.st_mtim.tv_sec == 2000 && st.st_mtim.tv_nsec == 500,
          "times through the hard link");
    CHECK(unlink("ln-target") == 0 && stat("ln/hard", &st) == 0 && st.st_nlink == 1, "unlink one name");
    CHECK(stat("ln/sym", &st) != 0 && errno == ENOENT, "dangling symlink");
    const char *names[] = {"ln/sym", "ln/up", "ln/out", "ln/abs", "ln/hard"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) CHECK(unlink(names[i]) == 0, names[i]);
    CHECK(rmdir("ln") == 0, "rmdir ln");
    printf("links ok (symlink, readlink, lstat, escapes refused, hard link, times)\n");
    return 0;
}

// The symlink `last` the previous run left (pointing at `runs`), read and removed
// before the listing; `message` says what was found.
static void previous(char *message, size_t len) {
    char target[64];
    struct stat st;
    ssize_t n = readlink("last", target, sizeof target - 1);
    if (n < 0) {
        snprintf(message, len, "no link from a previous run");
        return;
    }
    target[n] = 0;
    int ok = stat("last", &st) == 0 && S_ISREG(st.st_mode) && lstat("last", &st) == 0 && S_ISLNK(st.st_mode);
    snprintf(message, len, "previous run left last -> %s (%s)", target, ok ? "resolves" : "broken");
    unlink("last");
}

// Writes 64 KiB chunks into a nested directory until the area refuses (at most 65
// MiB, above any quota): the quota reached in the middle of a tree.
static int quota(void) {
    static unsigned char chunk[64 * 1024];
    if (mkdir("q", 0755) != 0 || mkdir("q/r", 0755) != 0) { printf("mkdir q/r: %s\n", strerror(errno)); return 1; }
    FILE *f = fopen("/data/q/r/hog", "w");
    if (!f) { printf("open hog: %s\n", strerror(errno)); return 1; }
    int failed = 0;
    for (int i = 0; i < 65 * 16 && !failed; i++) failed = fwrite(chunk, 1, sizeof chunk, f) != sizeof chunk;
    int saved = errno;
    failed |= fclose(f) != 0;
    if (failed) saved = errno;
    unlink("/data/q/r/hog");
    rmdir("q/r");
    rmdir("q");
    if (!failed) { printf("quota not enforced\n"); return 1; }
    printf("quota enforced (%s)\n", strerror(saved));
    return 0;
}

int main(void) {
    char message[128];
    previous(message, sizeof message);
    if (run_counter() || big_file()) return 1;
    FILE *t = fopen("/data/tmp", "w");
    if (!t || fputs("scratch\n", t) < 0 || fclose(t) != 0) { printf("write tmp: %s\n", strerror(errno)); return 1; }
    if (list_files() || unlink_temp() || tree()) return 1;
    printf("%s\n", message);
    if (links() || quota()) return 1;
    if (symlink("runs", "last") != 0) { printf("symlink last: %s\n", strerror(errno)); return 1; }
    return 0;
}
