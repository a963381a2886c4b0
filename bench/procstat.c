/*
 * procstat.c - CPU time and memory of the broker under test, read from /proc.
 *
 * CPU per delivered message is the figure that survives a noisy shared machine
 * (throughput does not), so it should be precise over a 5 s window:
 * /proc/PID/task/TID/schedstat gives each thread's run time in nanoseconds,
 * while /proc/PID/stat only has clock ticks (10 ms). The tick count is still
 * read, because it also covers threads that have already exited, which the
 * per-thread sum misses; the larger of the two wins.
 */
#include "bench.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool read_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    return n > 0;
}

/* Sum of the first field of every thread's schedstat: time on CPU, ns. */
static bool schedstat_ns(int pid, uint64_t *out, int *threads)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return false;
    uint64_t sum = 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char p[320], text[128];
        snprintf(p, sizeof(p), "/proc/%d/task/%s/schedstat", pid, e->d_name);
        if (!read_file(p, text, sizeof(text)))
            continue; /* the thread exited meanwhile */
        sum += strtoull(text, NULL, 10);
        n++;
    }
    closedir(d);
    *out = sum;
    *threads = n;
    return n > 0;
}

/* utime + stime from /proc/PID/stat, in ns; fields 14 and 15 after the "(comm)". */
static bool stat_ns(int pid, uint64_t *out)
{
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (!read_file(path, text, sizeof(text)))
        return false;
    char *p = strrchr(text, ')'); /* comm may contain spaces and parentheses */
    if (!p)
        return false;
    p++;
    unsigned long long utime = 0, stime = 0;
    /* After ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt(13). */
    if (sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return false;
    long hz = sysconf(_SC_CLK_TCK);
    *out = (utime + stime) * (1000000000ull / (uint64_t)(hz > 0 ? hz : 100));
    return true;
}

static uint64_t status_kib(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return 0;
    return strtoull(p + strlen(key), NULL, 10);
}

bool proc_sample(int pid, struct proc_sample *s)
{
    memset(s, 0, sizeof(*s));
    s->taken_ns = now_ns();
    bool have_sched = schedstat_ns(pid, &s->sched_ns, &s->threads);
    bool have_ticks = stat_ns(pid, &s->tick_ns);
    if (!have_sched && !have_ticks)
        return false;
    char path[64], text[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (read_file(path, text, sizeof(text))) {
        s->rss_kib = status_kib(text, "VmRSS:");
        s->hwm_kib = status_kib(text, "VmHWM:");
    }
    s->ok = true;
    return true;
}

uint64_t proc_cpu_delta(const struct proc_sample *a, const struct proc_sample *b)
{
    uint64_t sched = b->sched_ns > a->sched_ns ? b->sched_ns - a->sched_ns : 0;
    uint64_t ticks = b->tick_ns > a->tick_ns ? b->tick_ns - a->tick_ns : 0;
    /* Ticks are 10 ms steps: trust them only when they clearly exceed the precise sum,
     * which happens when a thread that ran in the window has exited. */
    if (sched == 0 || ticks > sched + 30000000ull)
        return ticks;
    return sched;
}
