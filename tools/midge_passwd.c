/* midge_passwd.c - midge-passwd: create and maintain Mosquitto password files.
 *
 * Same usage and messages as mosquitto_passwd 2.0, but it always writes $7$ (PBKDF2-SHA512)
 * hashes and replaces the file atomically (temporary file in the same directory, fsync,
 * rename) with mode 0600, so a broker never reads a half-written file and a crash leaves the
 * old one intact. Lines it does not change (comments, blank lines, other users) are kept
 * byte for byte. Passwords are wiped from memory after use and never printed.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "midge/passwd.h"

#define MAX_PASSWORD_LEN 65535 /* an MQTT string cannot carry more */
#define MAX_USER_LEN 65535
#define MAX_FILE_SIZE (64u << 20) /* same bound as the broker's loader */
#define HASH_BUF 256              /* a $7$ hash is 113 bytes with the default iterations */

/* A growable byte buffer. */
struct buf {
    char *s;
    size_t len, cap;
};

/* State the signal handler must undo: the terminal's echo and a half-written temp file. */
static struct termios saved_term;
static volatile sig_atomic_t term_changed;
static char tmp_path[PATH_MAX + 32];
static volatile sig_atomic_t tmp_active;

static void usage(FILE *f)
{
    fprintf(f, "midge-passwd is a tool for managing password files for midge and mosquitto.\n\n"
               "Usage: midge-passwd [-H sha512-pbkdf2] [-c | -D] passwordfile username\n"
               "       midge-passwd [-H sha512-pbkdf2] [-c] -b passwordfile username password\n"
               "       midge-passwd -U passwordfile\n"
               " -b : run in batch mode to allow passing passwords on the command line.\n"
               " -c : create a new password file. This will overwrite existing files.\n"
               " -D : delete the username rather than adding/updating its password.\n"
               " -H : specify the hashing algorithm. Only sha512-pbkdf2 (the default) is "
               "written.\n"
               " -U : update a plain text password file to use hashed passwords.\n"
               " -h : show this help.\n\n"
               "Without -b the password is asked for twice on the terminal, or read from\n"
               "standard input (one or two lines) when that is not a terminal.\n"
               "Files are replaced atomically and written with mode 0600.\n");
}

static void on_signal(int sig)
{
    /* Only async-signal-safe calls: put the terminal back, drop the temp file, leave. */
    if (term_changed)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_term);
    if (tmp_active)
        unlink(tmp_path);
    (void)sig;
    _exit(1);
}

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *ns;
        while (cap < b->len + n + 1)
            cap *= 2;
        ns = malloc(cap);
        if (!ns)
            return -1;
        /* Copy by hand rather than realloc so old copies of hashes can be wiped. */
        if (b->len)
            memcpy(ns, b->s, b->len);
        if (b->s) {
            OPENSSL_cleanse(b->s, b->cap);
            free(b->s);
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

static void buf_free(struct buf *b)
{
    if (b->s) {
        OPENSSL_cleanse(b->s, b->cap);
        free(b->s);
    }
    b->s = NULL;
    b->len = b->cap = 0;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_blank(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_blank((*s)[*n - 1]))
        (*n)--;
}

static bool username_valid(const char *user)
{
    size_t n = strlen(user);

    if (n == 0) {
        fprintf(stderr, "Error: Username must not be empty.\n");
        return false;
    }
    if (n > MAX_USER_LEN) {
        fprintf(stderr, "Error: Username must be less than 65536 characters long.\n");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (iscntrl((unsigned char)user[i])) {
            fprintf(stderr, "Error: Username must not contain control characters.\n");
            return false;
        }
    }
    if (strchr(user, ':')) {
        fprintf(stderr, "Error: Username must not contain the ':' character.\n");
        return false;
    }
    return true;
}

static bool password_valid(const char *pw, size_t n)
{
    if (n == 0) {
        fprintf(stderr, "Error: Empty password.\n");
        return false;
    }
    if (n > MAX_PASSWORD_LEN) {
        fprintf(stderr, "Error: Password must be less than 65536 characters long.\n");
        return false;
    }
    /* A NUL would be cut off by mosquitto, which compares C strings. */
    if (memchr(pw, '\0', n)) {
        fprintf(stderr, "Error: Password must not contain a NUL byte.\n");
        return false;
    }
    return true;
}

/* Reads one line from stdin into *line (owned, wiped by the caller), without its line end.
 * Returns 1 for a line, 0 at end of input, -1 on error. */
static int read_line(char **line, size_t *cap, size_t *len)
{
    ssize_t n = getline(line, cap, stdin);

    if (n < 0)
        return ferror(stdin) ? -1 : 0;
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
        (*line)[--n] = '\0';
    *len = (size_t)n;
    return 1;
}

/* Like read_line, with echo off. Echo goes off before the prompt appears, so nothing typed
 * in answer to it can be echoed; TCSANOW (not TCSAFLUSH) keeps what was typed ahead. */
static int read_quiet(const char *prompt, char **line, size_t *cap, size_t *len)
{
    struct termios quiet;
    int rc;

    if (tcgetattr(STDIN_FILENO, &saved_term) != 0)
        return read_line(line, cap, len);
    quiet = saved_term;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    term_changed = 1;
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    printf("%s", prompt);
    fflush(stdout);
    rc = read_line(line, cap, len);
    tcsetattr(STDIN_FILENO, TCSANOW, &saved_term);
    term_changed = 0;
    printf("\n");
    return rc;
}

/* Asks for the password: twice without echo on a terminal; otherwise one line from stdin,
 * and a second one that must match if present (so `echo pw | midge-passwd` and mosquitto's
 * two-line convention both work). On success *out is owned by the caller (wipe, free).
 * Returns 0 or 1 after printing an error. */
static int get_password(char **out, size_t *out_len)
{
    char *a = NULL, *b = NULL;
    size_t acap = 0, bcap = 0, alen = 0, blen = 0;
    bool tty = isatty(STDIN_FILENO);
    int rc = 1, got;

    got = tty ? read_quiet("Password: ", &a, &acap, &alen) : read_line(&a, &acap, &alen);
    if (got > 0 && !password_valid(a, alen))
        goto out;
    if (got > 0)
        got =
            tty ? read_quiet("Reenter password: ", &b, &bcap, &blen) : read_line(&b, &bcap, &blen);
    if (got < 0) {
        fprintf(stderr, "Error: Unable to read password: %s.\n", strerror(errno));
        goto out;
    }
    if (!a || (got == 0 && (tty || alen == 0))) {
        fprintf(stderr, "Error: Empty password.\n");
        goto out;
    }
    if (got == 1 && (alen != blen || memcmp(a, b, alen) != 0)) {
        fprintf(stderr, "Error: Passwords do not match.\n");
        goto out;
    }
    *out = a;
    *out_len = alen;
    a = NULL;
    rc = 0;
out:
    if (a)
        OPENSSL_cleanse(a, acap);
    if (b)
        OPENSSL_cleanse(b, bcap);
    free(a);
    free(b);
    return rc;
}

/* Reads the whole file into b. Returns 0 or an errno value. */
static int read_file(const char *path, struct buf *b)
{
    char chunk[16384];
    size_t n;
    int err = 0;
    FILE *f = fopen(path, "rb");

    if (!f)
        return errno;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b->len + n > MAX_FILE_SIZE) {
            err = EFBIG;
            goto out;
        }
        if (buf_add(b, chunk, n) != 0) {
            err = ENOMEM;
            goto out;
        }
    }
    if (ferror(f))
        err = errno ? errno : EIO;
    if (!b->s && buf_add(b, "", 0) != 0)
        err = ENOMEM;
out:
    OPENSSL_cleanse(chunk, sizeof(chunk));
    fclose(f);
    return err;
}

/* Replaces path with data: a temp file beside it (same file system, so rename is atomic),
 * mode 0600, the old owner kept where we may, fsync, rename, fsync of the directory.
 * Returns 0 or 1 after printing an error. */
static int write_atomic(const char *path, const char *data, size_t len)
{
    struct stat old;
    bool had_old = stat(path, &old) == 0;
    char dir_buf[PATH_MAX + 1];
    int fd = -1, dfd = -1, rc = 1;
    size_t off = 0;

    if (snprintf(tmp_path, sizeof(tmp_path), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp_path)) {
        fprintf(stderr, "Error: Password file name too long.\n");
        return 1;
    }
    fd = mkstemp(tmp_path);
    if (fd < 0) {
        fprintf(stderr, "Error: Unable to open file %s for writing. %s.\n", path, strerror(errno));
        goto out;
    }
    tmp_active = 1;
    if (fchmod(fd, 0600) != 0) {
        fprintf(stderr, "Error: Unable to set mode 0600 on %s: %s.\n", tmp_path, strerror(errno));
        goto out;
    }
    /* Keep the broker able to read a file it owns when root edits it. */
    if (had_old && (old.st_uid != geteuid() || old.st_gid != getegid()) &&
        fchown(fd, old.st_uid, old.st_gid) != 0)
        fprintf(stderr, "Warning: Unable to keep the owner of %s (%s); it is now yours.\n", path,
                strerror(errno));
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "Error: Unable to write %s: %s.\n", tmp_path, strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) {
        fprintf(stderr, "Error: Unable to write %s: %s.\n", tmp_path, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        fprintf(stderr, "Error: Unable to write %s: %s.\n", tmp_path, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp_path, path) != 0) {
        fprintf(stderr, "Error: Unable to replace password file %s: %s.\n", path, strerror(errno));
        goto out;
    }
    tmp_active = 0;
    /* The rename itself is durable only once the directory is synced. */
    snprintf(dir_buf, sizeof(dir_buf), "%s", path);
    dfd = open(dirname(dir_buf), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0)
        (void)fsync(dfd);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    if (tmp_active) {
        unlink(tmp_path);
        tmp_active = 0;
    }
    return rc;
}

/* Appends "user:$7$...\n" to out. Returns 0 or 1 after printing an error. */
static int add_entry(struct buf *out, const char *user, size_t user_len, const char *pw,
                     size_t pw_len)
{
    char hash[HASH_BUF];
    int rc = 1;

    if (passwd_hash(pw, pw_len, hash, sizeof(hash)) != 0) {
        fprintf(stderr, "Error: Unable to hash password.\n");
        goto out;
    }
    if (buf_add(out, user, user_len) != 0 || buf_add(out, ":", 1) != 0 ||
        buf_add(out, hash, strlen(hash)) != 0 || buf_add(out, "\n", 1) != 0) {
        fprintf(stderr, "Error: Out of memory.\n");
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(hash, sizeof(hash));
    return rc;
}

/* True when field is a hash the broker accepts, so -U must leave it alone. */
static bool is_valid_hash(const char *field, size_t n)
{
    struct buf line = {0};
    struct mq_passwd *p = NULL;
    bool ok = false;

    if (n == 0 || field[0] != '$' || memchr(field, ':', n))
        return false;
    if (buf_add(&line, "u:", 2) != 0 || buf_add(&line, field, n) != 0)
        goto out;
    p = passwd_parse(line.s, line.len, "-", NULL, NULL);
    ok = passwd_count(p) == 1;
out:
    passwd_free(p);
    buf_free(&line);
    return ok;
}

enum mode { MODE_UPDATE, MODE_DELETE, MODE_UPGRADE };

/* Rewrites the lines of in into out for one mode. Comments and blank lines are copied;
 * a line without "user:something" stops everything, as in mosquitto_passwd. For
 * MODE_UPDATE the first line of user is replaced and later ones dropped, and the user is
 * appended when absent. Returns 0 or 1 after printing an error. */
static int rewrite(const struct buf *in, struct buf *out, enum mode mode, const char *user,
                   const char *pw, size_t pw_len)
{
    const char *s = in->s, *end = in->s + in->len;
    size_t user_len = user ? strlen(user) : 0;
    unsigned line = 0;
    bool found = false;

    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *next = nl ? nl + 1 : end;
        const char *u = s, *colon, *field = NULL;
        size_t un = (size_t)(next - s), fn = 0;
        bool match;

        line++;
        trim(&u, &un);
        if (s[0] == '#' || un == 0) {
            if (buf_add(out, s, (size_t)(next - s)) != 0)
                goto nomem;
            if (!nl && buf_add(out, "\n", 1) != 0)
                goto nomem;
            s = next;
            continue;
        }
        colon = memchr(s, ':', (size_t)(next - s));
        if (colon) {
            u = s;
            un = (size_t)(colon - s);
            trim(&u, &un);
            field = colon + 1;
            fn = (size_t)(next - field);
            trim(&field, &fn);
        }
        if (!colon || un == 0 || fn == 0) {
            fprintf(stderr, "Error: Corrupt password file at line %u.\n", line);
            return 1;
        }
        match = user && un == user_len && memcmp(u, user, un) == 0;
        if (mode == MODE_UPGRADE && !is_valid_hash(field, fn)) {
            if (fn >= 3 && field[0] == '$' && (field[1] == '6' || field[1] == '7') &&
                field[2] == '$') {
                fprintf(stderr, "Error: Corrupt password hash at line %u.\n", line);
                return 1;
            }
            if (!password_valid(field, fn) || add_entry(out, u, un, field, fn) != 0)
                return 1;
        } else if (match && mode == MODE_UPDATE && !found) {
            if (add_entry(out, u, un, pw, pw_len) != 0)
                return 1;
        } else if (!match) {
            if (buf_add(out, s, (size_t)(next - s)) != 0)
                goto nomem;
            if (!nl && buf_add(out, "\n", 1) != 0)
                goto nomem;
        }
        found = found || match;
        s = next;
    }
    if (mode == MODE_UPDATE && !found)
        return add_entry(out, user, user_len, pw, pw_len);
    if (mode == MODE_DELETE && !found) {
        fprintf(stderr, "Warning: User %s not found in password file.\n", user);
        return 1;
    }
    return 0;
nomem:
    fprintf(stderr, "Error: Out of memory.\n");
    return 1;
}

int main(int argc, char *argv[])
{
    bool batch = false, create = false, delete_user = false, upgrade = false;
    const char *file_arg = NULL, *user = NULL;
    char *password = NULL, *path = NULL;
    size_t password_len = 0;
    struct buf in = {0}, out = {0};
    int idx, npos, rc = 1, err;

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);

    if (argc == 1) {
        usage(stderr);
        goto out;
    }
    for (idx = 1; idx < argc && argv[idx][0] == '-' && argv[idx][1] != '\0'; idx++) {
        const char *a = argv[idx];
        if (!strcmp(a, "--")) {
            idx++;
            break;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(a, "-b")) {
            batch = true;
        } else if (!strcmp(a, "-c")) {
            create = true;
        } else if (!strcmp(a, "-D")) {
            delete_user = true;
        } else if (!strcmp(a, "-U")) {
            upgrade = true;
        } else if (!strcmp(a, "-H")) {
            if (idx + 1 == argc) {
                fprintf(stderr, "Error: -H argument given but not enough other arguments.\n");
                goto out;
            }
            idx++;
            if (!strcmp(argv[idx], "sha512")) {
                fprintf(stderr, "Error: -H sha512 is not supported: midge-passwd writes only "
                                "sha512-pbkdf2 ($7$) hashes.\n");
                goto out;
            } else if (strcmp(argv[idx], "sha512-pbkdf2") != 0) {
                fprintf(stderr, "Error: Unknown hash type '%s'\n", argv[idx]);
                goto out;
            }
        } else {
            fprintf(stderr, "Error: Unknown option '%s'.\n\n", a);
            usage(stderr);
            goto out;
        }
    }

    if (create && delete_user) {
        fprintf(stderr, "Error: -c and -D cannot be used together.\n");
        goto out;
    }
    if (create && upgrade) {
        fprintf(stderr, "Error: -c and -U cannot be used together.\n");
        goto out;
    }
    if (delete_user && upgrade) {
        fprintf(stderr, "Error: -D and -U cannot be used together.\n");
        goto out;
    }
    if (delete_user && batch) {
        fprintf(stderr, "Error: -b and -D cannot be used together.\n");
        goto out;
    }
    if (upgrade && batch) {
        fprintf(stderr, "Error: -b and -U cannot be used together.\n");
        goto out;
    }

    npos = argc - idx;
    if (upgrade) {
        if (npos != 1) {
            fprintf(stderr, "Error: -U argument given but password file missing.\n");
            goto out;
        }
    } else if (npos != (batch ? 3 : 2)) {
        if (npos > (batch ? 3 : 2))
            usage(stderr);
        else if (create)
            fprintf(stderr, batch ? "Error: -c argument given but password file, username, "
                                    "or password missing.\n"
                                  : "Error: -c argument given but password file or username "
                                    "missing.\n");
        else if (delete_user)
            fprintf(stderr, "Error: -D argument given but password file or username missing.\n");
        else
            usage(stderr);
        goto out;
    }
    file_arg = argv[idx];
    if (!upgrade) {
        user = argv[idx + 1];
        if (!username_valid(user))
            goto out;
    }
    if (batch) {
        password_len = strlen(argv[idx + 2]);
        if (!password_valid(argv[idx + 2], password_len))
            goto out;
        password = strdup(argv[idx + 2]);
        if (!password) {
            fprintf(stderr, "Error: Out of memory.\n");
            goto out;
        }
    }

    /* Edit the file a symlink points to, not the link (as mosquitto_passwd does). */
    path = realpath(file_arg, NULL);
    if (!path) {
        if (errno != ENOENT || !create) {
            fprintf(stderr, "Error: Unable to open password file %s. %s.\n", file_arg,
                    strerror(errno));
            goto out;
        }
        path = strdup(file_arg);
        if (!path) {
            fprintf(stderr, "Error: Out of memory.\n");
            goto out;
        }
    }

    if (!create) {
        err = read_file(path, &in);
        if (err) {
            fprintf(stderr, "Error: Unable to open password file %s. %s.\n", file_arg,
                    strerror(err));
            goto out;
        }
    }
    if (!batch && !delete_user && !upgrade && get_password(&password, &password_len) != 0)
        goto out;

    if (create) {
        if (add_entry(&out, user, strlen(user), password, password_len) != 0)
            goto out;
    } else {
        enum mode mode = delete_user ? MODE_DELETE : upgrade ? MODE_UPGRADE : MODE_UPDATE;
        if (rewrite(&in, &out, mode, user, password, password_len) != 0)
            goto out;
    }
    rc = write_atomic(path, out.s ? out.s : "", out.len);
out:
    if (password) {
        OPENSSL_cleanse(password, password_len);
        free(password);
    }
    free(path);
    buf_free(&in);
    buf_free(&out);
    return rc;
}
