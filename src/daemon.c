/* daemon.c - log destinations from the configuration, -d, the pid file, and the
 * switch from root to the configured user.
 */
#include "midge/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "midge/config.h"
#include "midge/notify.h"

int daemon_log_options(const struct mq_config *cfg, bool verbose, struct mq_log_options *out)
{
    *out = log_default_options();
    unsigned dest = cfg->log_dest;
    out->types = dest ? (verbose ? MQ_LOG_ALL_TYPES : cfg->log_types) : 0;
    out->to_stderr = dest & MQ_LOG_DEST_STDERR;
    out->to_stdout = dest & MQ_LOG_DEST_STDOUT;
    out->to_syslog = dest & MQ_LOG_DEST_SYSLOG;
    out->timestamps = cfg->log_timestamp;
    out->ts_format = cfg->log_timestamp_format;
    out->journal_priority = notify_stderr_is_journal();
    out->file_fd = -1;
    if ((dest & MQ_LOG_DEST_FILE) && cfg->log_file) {
        out->file_fd = open(cfg->log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (out->file_fd < 0) {
            mq_log(MQ_LOG_ERR, "log_dest file: cannot open %s: %s", cfg->log_file, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int daemon_detach(int *ready_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        mq_log(MQ_LOG_ERR, "-d: cannot create a pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        mq_log(MQ_LOG_ERR, "-d: cannot fork: %s", strerror(errno));
        return -1;
    }
    if (pid > 0) {
        /* Parent: exit with the child's start-up result, so `midge -d && ...` works. */
        close(p[1]);
        char ok = 0;
        ssize_t n;
        do
            n = read(p[0], &ok, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 && ok == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    /* Stay in the working directory: configuration paths are relative to it, as in
     * Mosquitto. Standard streams go to /dev/null; log to a file or syslog instead. */
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    *ready_fd = p[1];
    return 0;
}

void daemon_ready(int fd, bool ok)
{
    if (fd < 0)
        return;
    char b = ok ? 1 : 0;
    ssize_t n = write(fd, &b, 1);
    (void)n;
    close(fd);
}

int daemon_write_pidfile(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        mq_log(MQ_LOG_ERR, "pid_file: cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        mq_log(MQ_LOG_ERR, "pid_file: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

void daemon_remove_pidfile(const char *path)
{
    if (path)
        unlink(path);
}

int daemon_drop_privileges(const char *user, const char *log_file, const char *pid_file)
{
    if (geteuid() != 0 || !user || !strcmp(user, "root"))
        return 0;
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        mq_log(MQ_LOG_ERR, "user %s: no such user%s%s (refusing to keep running as root)", user,
               errno ? ": " : "", errno ? strerror(errno) : "");
        return -1;
    }
    /* Files we created as root must stay usable: a reload reopens the log file. */
    if (log_file && chown(log_file, pw->pw_uid, pw->pw_gid) < 0)
        mq_log(MQ_LOG_WARNING, "user %s: cannot hand %s over: %s", user, log_file, strerror(errno));
    if (pid_file && chown(pid_file, pw->pw_uid, pw->pw_gid) < 0)
        mq_log(MQ_LOG_WARNING, "user %s: cannot hand %s over: %s", user, pid_file, strerror(errno));
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        mq_log(MQ_LOG_ERR, "user %s: cannot switch to it: %s", user, strerror(errno));
        return -1;
    }
    mq_log(MQ_LOG_INFO, "running as user %s (uid %ld)", user, (long)pw->pw_uid);
    return 0;
}
