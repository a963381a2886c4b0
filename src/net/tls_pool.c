/* tls_pool.c - threads that run TLS handshake steps (transport_tls.c) off the loop thread.
 *
 * Why: a full handshake's first step (the server's signature, the key exchange) costs the
 * broker 0.4-1.2 ms of CPU; on the loop thread a storm of them delays every connected
 * client's traffic by whole steps (bench scenario TS). The workers run at nice 10, so
 * with the broker pinned to one CPU the loop thread still preempts them when it has work:
 * handshakes get most of the CPU time the loop thread leaves. Owns its threads, its lock,
 * two FIFO queues, the done list and a uv_async (unreferenced: it never keeps the loop
 * alive); never touches a job's contents. Invariant: a job is on at most one list, and
 * only the thread that owns it (see tls_pool.h) touches its owner's state.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "midge/log.h"
#include "tls_pool.h"

#define POOL_MAX_WORKERS 64

struct tls_pool {
    uv_async_t async; /* first: the close callback frees the pool from it */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct tls_job *head[2], *tail[2]; /* queued, by queue */
    struct tls_job *done_head, *done_tail;
    unsigned idle; /* workers waiting on cv */
    bool stop;
    tls_job_fn run, done;
    unsigned nthreads;
    pthread_t threads[];
};

static void list_append(struct tls_job **head, struct tls_job **tail, struct tls_job *j)
{
    j->next = NULL;
    j->prev = *tail;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void list_unlink(struct tls_job **head, struct tls_job **tail, struct tls_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        *head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        *tail = j->prev;
    j->next = j->prev = NULL;
}

/* Niceness of a worker: the loop thread (nice 0) gets about ten times its share of a
 * CPU they both want, and preempts it on waking. Not SCHED_IDLE: measured in a storm on a
 * shared machine, idle-priority workers were starved by other processes while holding
 * locks the loop thread then waited for (connected clients' p50 15 ms instead of 0.16). */
#define WORKER_NICE 10

static void lower_priority(void)
{
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORKER_NICE);
}

static void *worker(void *arg)
{
    struct tls_pool *p = arg;
    lower_priority();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        unsigned q = p->head[0] ? 0 : 1;
        struct tls_job *j = p->head[q];
        if (!j) {
            if (p->stop)
                break;
            p->idle++;
            pthread_cond_wait(&p->cv, &p->mu);
            p->idle--;
            continue;
        }
        list_unlink(&p->head[q], &p->tail[q], j);
        j->state = TLS_JOB_RUNNING;
        pthread_mutex_unlock(&p->mu);
        p->run(j);
        pthread_mutex_lock(&p->mu);
        j->state = TLS_JOB_DONE;
        bool wake = !p->done_head;
        list_append(&p->done_head, &p->done_tail, j);
        if (wake) {
            /* Outside the lock: a worker preempted there would hold the loop thread up. */
            pthread_mutex_unlock(&p->mu);
            uv_async_send(&p->async); /* the one libuv call allowed off the loop thread */
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Loop thread: hand up to max finished jobs back, oldest first (0: all). Returns true
 * when some are left. */
static bool drain_done(struct tls_pool *p, unsigned max)
{
    for (unsigned n = 0; !max || n < max; n++) {
        pthread_mutex_lock(&p->mu);
        struct tls_job *j = p->done_head;
        if (j)
            list_unlink(&p->done_head, &p->done_tail, j);
        pthread_mutex_unlock(&p->mu);
        if (!j)
            return false;
        j->state = TLS_JOB_IDLE;
        p->done(j); /* may free j's owner, or submit j again */
    }
    pthread_mutex_lock(&p->mu);
    bool left = p->done_head != NULL;
    pthread_mutex_unlock(&p->mu);
    return left;
}

/* Finished steps per wake-up of the loop: each costs the loop thread tens of microseconds
 * (a handshake's end sets up its record layer, then CONNECT), so a storm's completions
 * are spread over wake-ups, between the connected clients' traffic. */
#define DONE_PER_WAKEUP 16

static void on_async(uv_async_t *h)
{
    struct tls_pool *p = (struct tls_pool *)h;
    if (drain_done(p, DONE_PER_WAKEUP))
        uv_async_send(&p->async); /* the rest at the next wake-up */
}

struct tls_pool *tls_pool_new(uv_loop_t *loop, unsigned workers, tls_job_fn run, tls_job_fn done)
{
    if (workers > POOL_MAX_WORKERS)
        workers = POOL_MAX_WORKERS;
    struct tls_pool *p = calloc(1, sizeof(*p) + workers * sizeof(pthread_t));
    if (!p) {
        mq_log(MQ_LOG_ERR, "out of memory for the TLS handshake threads");
        return NULL;
    }
    p->run = run;
    p->done = done;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    uv_async_init(loop, &p->async, on_async);
    uv_unref((uv_handle_t *)&p->async);
    /* Signals stay the loop thread's (libuv's signal handling): the workers block them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (; p->nthreads < workers; p->nthreads++)
        if ((err = pthread_create(&p->threads[p->nthreads], NULL, worker, p)) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!p->nthreads) {
        mq_log(MQ_LOG_ERR, "cannot start a TLS handshake thread: %s", strerror(err));
        tls_pool_free(p);
        return NULL;
    }
    return p;
}

void tls_pool_submit(struct tls_pool *p, struct tls_job *job, unsigned q)
{
    q = q ? 1 : 0;
    pthread_mutex_lock(&p->mu);
    job->state = TLS_JOB_QUEUED;
    job->queue = (unsigned char)q;
    list_append(&p->head[q], &p->tail[q], job);
    if (p->idle)
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

bool tls_pool_cancel(struct tls_pool *p, struct tls_job *job)
{
    bool taken = false;
    pthread_mutex_lock(&p->mu);
    if (job->state == TLS_JOB_QUEUED) {
        list_unlink(&p->head[job->queue], &p->tail[job->queue], job);
        job->state = TLS_JOB_IDLE;
        taken = true;
    }
    pthread_mutex_unlock(&p->mu);
    return taken;
}

void tls_pool_each_queued(struct tls_pool *p, void (*fn)(struct tls_job *job, void *arg), void *arg)
{
    pthread_mutex_lock(&p->mu);
    for (unsigned q = 0; q < 2; q++)
        for (struct tls_job *j = p->head[q]; j; j = j->next)
            fn(j, arg);
    pthread_mutex_unlock(&p->mu);
}

static void on_close(uv_handle_t *h)
{
    struct tls_pool *p = (struct tls_pool *)h;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void tls_pool_free(struct tls_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    drain_done(p, 0); /* steps that finished after their connections left: their owners go */
    uv_close((uv_handle_t *)&p->async, on_close);
}
