/* The file-system differential test in C, at the system-call level: one
 * sequence of calls, run in eremite (on its RAM file system, through the
 * Linux ABI) and natively (in a directory on tmpfs), prints a transcript;
 * the two must match line for line. `fsdiff ROOT` works below ROOT, which
 * must not exist yet, and prints paths relative to it. A result prints as
 * "label: ok VALUE" or "label: err ERRNO". Inode numbers and times are
 * never printed. (examples/fsdiff is the same idea through Rust's std.) */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *root;

/* Print a call's result: its value, or the error. */
static void show(const char *label, long result) {
    if (result < 0)
        printf("%s: err %d\n", label, errno);
    else
        printf("%s: ok %ld\n", label, result);
}

/* Print a string result (NULL: the error). */
static void show_text(const char *label, const char *text) {
    if (!text)
        printf("%s: err %d\n", label, errno);
    else
        printf("%s: ok %s\n", label, text);
}

static char *at(const char *rel) {
    static char path[8192];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return path;
}

/* A path from the system, with the root replaced by "<root>". */
static const char *relative(const char *path) {
    static char out[8192];
    size_t n = strlen(root);
    if (strncmp(path, root, n) == 0)
        snprintf(out, sizeof out, "<root>%s", path + n);
    else
        snprintf(out, sizeof out, "%s", path);
    return out;
}

static const char *kind(mode_t mode) {
    return S_ISDIR(mode) ? "dir" : S_ISLNK(mode) ? "link" : S_ISREG(mode) ? "file" : "other";
}

/* Type, permissions, size (not for directories) and link count. */
static void describe(const char *label, int dirfd, const char *path, int flags) {
    struct stat st;
    if (fstatat(dirfd, path, &st, flags) < 0) {
        printf("%s: err %d\n", label, errno);
        return;
    }
    printf("%s: ok %s mode %o size %lld nlink %lu\n", label, kind(st.st_mode),
           (unsigned)(st.st_mode & 07777), S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size,
           S_ISDIR(st.st_mode) ? 0UL : (unsigned long)st.st_nlink);
}

/* statx(2) has no wrapper in every C library: the system call. */
struct statx_t {
    unsigned mask, blksize;
    unsigned long long attributes;
    unsigned nlink, uid, gid;
    unsigned short mode, spare0;
    unsigned long long ino, size, blocks, attributes_mask;
    unsigned long long times[8];
    unsigned rdev_major, rdev_minor, dev_major, dev_minor;
    unsigned long long spare[14];
};

static void describe_statx(const char *label, int dirfd, const char *path, int flags) {
    struct statx_t sx;
    memset(&sx, 0, sizeof sx);
    if (syscall(SYS_statx, dirfd, path, flags, 0x7ff, &sx) < 0) {
        printf("%s: err %d\n", label, errno);
        return;
    }
    printf("%s: ok basic %s %s mode %o size %llu nlink %u\n", label,
           (sx.mask & 0x7ff) == 0x7ff ? "all" : "some", kind(sx.mode), sx.mode & 07777,
           S_ISDIR(sx.mode) ? 0ULL : sx.size, S_ISDIR(sx.mode) ? 0U : sx.nlink);
}

/* The names in a directory, sorted, with their types from getdents64. */
static void list(const char *label, const char *rel) {
    DIR *dir = opendir(at(rel));
    if (!dir) {
        printf("%s: err %d\n", label, errno);
        return;
    }
    char names[64][300];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && count < 64) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char t = e->d_type == DT_DIR ? 'd' : e->d_type == DT_LNK ? 'l' : e->d_type == DT_REG ? 'f' : '?';
        snprintf(names[count++], 300, "%s:%c", e->d_name, t);
    }
    closedir(dir);
    qsort(names, (size_t)count, 300, (int (*)(const void *, const void *))strcmp);
    printf("%s: ok", label);
    for (int i = 0; i < count; i++)
        printf(" %s", names[i]);
    printf("\n");
}

static void read_all(const char *label, int dirfd, const char *path) {
    int fd = openat(dirfd, path, O_RDONLY);
    if (fd < 0) {
        printf("%s: err %d\n", label, errno);
        return;
    }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        printf("%s: err %d\n", label, errno);
        return;
    }
    buf[n] = 0;
    printf("%s: ok \"%s\"\n", label, buf);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fsdiff ROOT\n");
        return 2;
    }
    root = argv[1];
    umask(022);
    if (mkdir(root, 0755) < 0) {
        perror("mkdir ROOT");
        return 1;
    }
    int dir = open(root, O_RDONLY | O_DIRECTORY);
    show("open root as a directory", dir >= 0 ? 0 : -1);

    /* Creating and opening, relative to a directory descriptor. */
    int fd = openat(dir, "f", O_CREAT | O_EXCL | O_WRONLY, 0666);
    show("openat O_CREAT|O_EXCL", fd >= 0 ? 0 : -1);
    describe("umask applied", dir, "f", 0);
    show("openat O_EXCL again", openat(dir, "f", O_CREAT | O_EXCL | O_WRONLY, 0666));
    show("write", write(fd, "0123456789", 10));
    show("read a write-only fd", read(fd, (char[4]){0}, 4));
    show("pwrite at 20 (a hole)", pwrite(fd, "XY", 2, 20));
    show("lseek SEEK_CUR after pwrite", lseek(fd, 0, SEEK_CUR));
    show("lseek SEEK_END", lseek(fd, 0, SEEK_END));
    show("lseek before the start", lseek(fd, -100, SEEK_SET));
    show("lseek bad whence", lseek(fd, 0, 42));
    struct iovec out[3] = {{"ab", 2}, {"", 0}, {"cde", 3}};
    show("writev at the end", writev(fd, out, 3));
    show("fsync", fsync(fd));
    close(fd);
    describe("describe f", dir, "f", 0);
    describe_statx("statx f", dir, "f", 0);

    fd = openat(dir, "f", O_RDONLY);
    char a[4], b[6];
    struct iovec in[2] = {{a, 4}, {b, 6}};
    show("readv", readv(fd, in, 2));
    printf("readv bytes: %.4s|%.6s\n", a, b);
    char hole[4];
    show("pread across the hole", pread(fd, hole, 4, 18));
    printf("hole bytes: %d %d %c %c\n", hole[0], hole[1], hole[2], hole[3]);
    show("pread past the end", pread(fd, hole, 4, 1000));
    show("write a read-only fd", write(fd, "x", 1));
    show("ftruncate a read-only fd", ftruncate(fd, 0));
    close(fd);

    /* Status flags, O_APPEND, O_TRUNC, dup. */
    fd = openat(dir, "f", O_WRONLY);
    int flags = fcntl(fd, F_GETFL);
    show("F_GETFL access mode", flags & O_ACCMODE);
    show("F_SETFL O_APPEND", fcntl(fd, F_SETFL, flags | O_APPEND));
    show("F_GETFL has O_APPEND", (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    int copy = dup(fd);
    show("dup shares the offset", write(copy, "!", 1) == 1 ? lseek(fd, 0, SEEK_CUR) : -1);
    show("dup2 onto 100", dup2(fd, 100));
    show("dup3 same fd", dup3(100, 100, 0));
    show("close 100", close(100));
    show("close 100 again", close(100));
    close(copy);
    close(fd);
    describe("after append", dir, "f", 0);
    fd = openat(dir, "f", O_WRONLY | O_TRUNC);
    close(fd);
    describe("after O_TRUNC", dir, "f", 0);
    show("truncate to 5", truncate(at("f"), 5));
    describe("after truncate", dir, "f", 0);

    /* Directories. */
    show("mkdirat d", mkdirat(dir, "d", 0777));
    describe("describe d", dir, "d", 0);
    show("mkdirat d again", mkdirat(dir, "d", 0777));
    show("mkdirat under a file", mkdirat(dir, "f/x", 0777));
    show("open a file as a directory", openat(dir, "f", O_RDONLY | O_DIRECTORY));
    show("open a directory for writing", openat(dir, "d", O_WRONLY));
    show("openat missing", openat(dir, "missing", O_RDONLY));
    show("openat path through a file", openat(dir, "f/g", O_RDONLY));
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "d/n%d", i);
        int made = openat(dir, name, O_CREAT | O_WRONLY, 0600);
        show(name, made >= 0 ? write(made, name, strlen(name)) : -1);
        close(made);
    }
    show("mkdirat d/sub", mkdirat(dir, "d/sub", 0700));
    list("list d", "d");
    show("unlinkat a directory without AT_REMOVEDIR", unlinkat(dir, "d/sub", 0));
    show("unlinkat a file with AT_REMOVEDIR", unlinkat(dir, "d/n0", AT_REMOVEDIR));
    show("unlinkat a non-empty directory", unlinkat(dir, "d", AT_REMOVEDIR));
    show("unlinkat d/sub", unlinkat(dir, "d/sub", AT_REMOVEDIR));
    list("list d", "d");

    /* The current directory. */
    char cwd[4096];
    show("chdir d", chdir(at("d")));
    show_text("getcwd", getcwd(cwd, sizeof cwd) ? relative(cwd) : NULL);
    read_all("read relative n1", AT_FDCWD, "n1");
    show("fchdir root", fchdir(dir));
    show_text("getcwd", getcwd(cwd, sizeof cwd) ? relative(cwd) : NULL);
    read_all("read relative d/n2", AT_FDCWD, "d/n2");
    show("chdir a file", chdir(at("f")));
    show("getcwd too small", getcwd(cwd, 3) ? 0 : -1);

    /* Links. */
    show("linkat", linkat(dir, "f", dir, "hard", 0));
    describe("nlink after linkat", dir, "f", 0);
    show("linkat onto an existing name", linkat(dir, "f", dir, "hard", 0));
    show("symlinkat", symlinkat("d/n1", dir, "sl"));
    describe("lstat sl", dir, "sl", AT_SYMLINK_NOFOLLOW);
    describe("stat sl", dir, "sl", 0);
    describe_statx("statx sl nofollow", dir, "sl", AT_SYMLINK_NOFOLLOW);
    char target[256];
    ssize_t n = readlinkat(dir, "sl", target, sizeof target);
    printf("readlinkat sl: %s\n", n < 0 ? "error" : (target[n] = 0, target));
    show("readlinkat a file", readlinkat(dir, "f", target, sizeof target));
    show("readlinkat small buffer", readlinkat(dir, "sl", target, 2));
    show("faccessat R_OK|W_OK", faccessat(dir, "f", R_OK | W_OK, 0));
    show("faccessat X_OK on a 644 file", faccessat(dir, "f", X_OK, 0));
    show("fchmodat 755", fchmodat(dir, "f", 0755, 0));
    show("faccessat X_OK after chmod", faccessat(dir, "f", X_OK, 0));
    describe("describe f", dir, "f", 0);
    show("symlinkat loop a", symlinkat("loop-b", dir, "loop-a"));
    show("symlinkat loop b", symlinkat("loop-a", dir, "loop-b"));
    show("open a loop", openat(dir, "loop-a", O_RDONLY));
    show("statx AT_EMPTY_PATH on an fd", (fd = openat(dir, "hard", O_RDONLY)) < 0 ? -1 : 0);
    describe_statx("statx of the fd", fd, "", AT_EMPTY_PATH);
    close(fd);

    /* Rename. */
    show("renameat f to d/f2", renameat(dir, "f", dir, "d/f2"));
    describe("nlink of hard after rename", dir, "hard", 0);
    show("renameat missing", renameat(dir, "f", dir, "g"));
    show("renameat a dir over a file", renameat(dir, "d", dir, "hard"));
    show("renameat a file over a dir", renameat(dir, "hard", dir, "d"));
    show("mkdirat e", mkdirat(dir, "e", 0755));
    show("renameat e over non-empty d", renameat(dir, "e", dir, "d"));
    show("renameat d into itself", renameat(dir, "d", dir, "d/sub2"));
    list("list root", "");

    /* Device files. */
    fd = open("/dev/null", O_RDWR);
    show("write /dev/null", write(fd, "gone", 4));
    show("read /dev/null", read(fd, target, 4));
    close(fd);
    fd = open("/dev/zero", O_RDONLY);
    memset(target, 7, 8);
    show("read /dev/zero", read(fd, target, 8));
    show("zeros", target[0] == 0 && target[7] == 0);
    close(fd);

    /* Names that are too long, descriptors that are not open. */
    char longname[300];
    memset(longname, 'n', 256);
    longname[256] = 0;
    show("a 256-byte name", openat(dir, longname, O_CREAT | O_WRONLY, 0600));
    show("read fd 999", read(999, target, 1));
    show("fstat fd -1", fstat(-1, &(struct stat){0}));

    /* Clean up, deepest first. */
    const char *files[] = {"d/n1", "d/n2", "d/f2", "hard", "sl", "loop-a", "loop-b", 0};
    for (int i = 0; files[i]; i++)
        show(files[i], unlinkat(dir, files[i], 0));
    show("rmdir d", unlinkat(dir, "d", AT_REMOVEDIR));
    show("rmdir e", unlinkat(dir, "e", AT_REMOVEDIR));
    list("list root", "");
    close(dir);
    show("rmdir root", rmdir(root));
    printf("end of transcript\n");
    return 0;
}
