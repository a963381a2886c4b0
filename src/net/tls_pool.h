/* tls_pool.h - a small pool of low-priority threads that run TLS handshake steps off the
 * loop thread (src/net/tls_pool.c), so that a reconnect storm's signatures and key
 * exchanges do not delay the connected clients' traffic.
 *
 * The pool knows nothing of TLS: a job is a struct embedded in its owner, run on a worker
 * (run), then handed back to the loop thread (done) through a uv_async. A job belongs to
 * one thread at a time: the loop thread until tls_pool_submit, the pool until done is
 * called on the loop thread; tls_pool_cancel takes back a job no worker has started.
 */
#ifndef MIDGE_TLS_POOL_H
#define MIDGE_TLS_POOL_H

#include <stdbool.h>
#include <uv.h>

enum tls_job_state { TLS_JOB_IDLE, TLS_JOB_QUEUED, TLS_JOB_RUNNING, TLS_JOB_DONE };

struct tls_job {
    struct tls_job *next, *prev; /* the pool's queue or done list; the pool's */
    unsigned char state;         /* enum tls_job_state; read on the loop thread only */
    unsigned char queue;         /* 0: served first, 1: after every job of queue 0 */
};

struct tls_pool;

typedef void (*tls_job_fn)(struct tls_job *job);

/* Start a pool of threads workers on loop: each lowers its own priority to nice 10, so
 * the loop thread preempts it, and gets most of a CPU they share. run is called on a worker, done
 * on the loop thread afterwards. Returns the pool (owned: tls_pool_free), or NULL after logging
 * why. Call on the loop thread. */
struct tls_pool *tls_pool_new(uv_loop_t *loop, unsigned workers, tls_job_fn run, tls_job_fn done);

/* Queue job (state TLS_JOB_IDLE, embedded in memory that stays valid until done runs) at
 * the end of queue q (0 or 1): jobs of queue 0 are started before those of queue 1, each
 * queue oldest first. The pool owns the job until done. Loop thread only. */
void tls_pool_submit(struct tls_pool *p, struct tls_job *job, unsigned q);

/* Take back a queued job that no worker has started: true (done will not be called); false
 * when a worker has it or has finished it (done will be called). Loop thread only. */
bool tls_pool_cancel(struct tls_pool *p, struct tls_job *job);

/* Call fn(job, arg) for each job still queued, oldest first, under the pool's lock (fn
 * must not call into the pool). Loop thread only. */
void tls_pool_each_queued(struct tls_pool *p, void (*fn)(struct tls_job *job, void *arg),
                          void *arg);

/* Stop the workers once the queues are empty (cancel what must not run first), wait for
 * them, call done for the jobs they finished, and close the pool's handle; the pool is
 * freed by the loop's close callback. Loop thread only; p may be NULL. */
void tls_pool_free(struct tls_pool *p);

#endif
