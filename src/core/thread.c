/*
 * thread.c - the parallel loop behind every multi-threaded kernel: a small pool of pthreads.
 *
 * Tasks are claimed one at a time from a shared counter, each task always covers the same slice
 * of the problem and writes only its own output, so results are bitwise identical for any
 * thread count.
 *
 * Why not OpenMP: an OpenMP parallel region ends in a barrier that waits for every thread of
 * the team, including one the OS has descheduled because another process wants the core. On a
 * shared 2-core machine that turned a 2-thread training step into a wait for the next
 * scheduler tick, 5-15x slower than 1 thread (measured with libgomp's default spin policy;
 * OMP_WAIT_POLICY=passive instead added ~50 us to every call). Here only workers that joined
 * the job (under the mutex, when they woke in time) are waited for: a worker that does not get a
 * core before the caller has run the tasks finds the job closed and stays out. A worker
 * descheduled between joining and claiming can still make the caller wait; that window is a
 * few instructions long. Idle workers spin briefly (so that
 * back-to-back kernels of one training step reuse them at once) and then sleep on a condition
 * variable.
 *
 * Nested calls (a task that calls sp_parallel_for) and calls from several user threads at once
 * run inline on the calling thread: the pool serves one loop at a time.
 */
#include <unistd.h>

#include "internal.h"

int sp_threads_available(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

#if !defined(SPARROW_HAVE_THREADS)

bool sp_threads_enabled(void) { return false; }

void sp_parallel_for(int64_t ntasks, int nthreads, sp_task_fn fn, void *ctx) {
    (void)nthreads;
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
}

#else

#include <pthread.h>
#include <stdatomic.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define POOL_MAX_WORKERS 63
#define WORKER_SPINS 2000 /* ~40 us of polling (pause is ~60 cycles on Zen) before sleeping */
#define CALLER_SPINS 2000

/* One parallel loop. Lives on the caller's stack; workers touch it only between joining
 * (under the pool mutex, while the job is open) and leaving (the caller waits for that). */
typedef struct job {
    sp_task_fn fn;
    void *ctx;
    int64_t ntasks;
    int max_helpers;
    atomic_int_fast64_t next;  /* next task to claim */
    atomic_int_fast64_t done;  /* tasks finished */
    atomic_int joined, left;
    bool closed;               /* under mu: no more workers may join */
} job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work;   /* a new job was published */
    pthread_cond_t idle;   /* the caller may be waiting for tasks or leavers */
    pthread_mutex_t busy;  /* one loop at a time */
    int nworkers;
    job *current;          /* under mu */
    atomic_uint_fast64_t generation;
    bool caller_sleeping;  /* under mu */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, NULL, 0, false};

static _Thread_local bool in_pool_task;

static void run_tasks(job *j) {
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (t >= j->ntasks) break;
        j->fn(j->ctx, t);
        atomic_fetch_add_explicit(&j->done, 1, memory_order_acq_rel);
    }
}

static void wake_caller(void) {
    pthread_mutex_lock(&pool.mu);
    if (pool.caller_sleeping) pthread_cond_signal(&pool.idle);
    pthread_mutex_unlock(&pool.mu);
}

static void *worker_main(void *arg) {
    (void)arg;
    in_pool_task = true;
    uint_fast64_t seen = atomic_load(&pool.generation);
    for (;;) {
        /* wait for a new generation: spin a little, then sleep */
        for (int i = 0; i < WORKER_SPINS && atomic_load_explicit(&pool.generation,
                                                                memory_order_acquire) == seen; i++)
            CPU_RELAX();
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.work, &pool.mu);
        seen = atomic_load(&pool.generation);
        job *j = pool.current;
        bool join = j && !j->closed && atomic_load(&j->joined) < j->max_helpers;
        if (join) atomic_fetch_add(&j->joined, 1);
        pthread_mutex_unlock(&pool.mu);
        if (!join) continue;
        run_tasks(j);
        atomic_fetch_add_explicit(&j->left, 1, memory_order_acq_rel);
        wake_caller();
    }
    return NULL;
}

/* Starts workers up to n (under busy). Returns how many exist. */
static int ensure_workers(int n) {
    if (n > POOL_MAX_WORKERS) n = POOL_MAX_WORKERS;
    while (pool.nworkers < n) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* fewer threads: still correct, the caller does the rest */
        pool.nworkers++;
    }
    return pool.nworkers;
}

bool sp_threads_enabled(void) { return true; }

void sp_parallel_for(int64_t ntasks, int nthreads, sp_task_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    if (nthreads > ntasks) nthreads = (int)ntasks;
    if (nthreads <= 1 || in_pool_task || pthread_mutex_trylock(&pool.busy) != 0) {
        for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
        return;
    }
    int helpers = ensure_workers(nthreads - 1);
    if (helpers > nthreads - 1) helpers = nthreads - 1;
    job j = {.fn = fn, .ctx = ctx, .ntasks = ntasks, .max_helpers = helpers};
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    atomic_init(&j.joined, 0);
    atomic_init(&j.left, 0);
    pthread_mutex_lock(&pool.mu);
    pool.current = &j;
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.mu);

    in_pool_task = true; /* a nested sp_parallel_for inside fn runs inline */
    run_tasks(&j);
    in_pool_task = false;

    /* wait for the claimed tasks, then close the job and wait for the workers in it */
    for (int i = 0; i < CALLER_SPINS && atomic_load(&j.done) < ntasks; i++) CPU_RELAX();
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&j.done) < ntasks) {
        pool.caller_sleeping = true;
        pthread_cond_wait(&pool.idle, &pool.mu);
        pool.caller_sleeping = false;
    }
    j.closed = true;
    pool.current = NULL;
    while (atomic_load(&j.left) < atomic_load(&j.joined)) {
        pool.caller_sleeping = true;
        pthread_cond_wait(&pool.idle, &pool.mu);
        pool.caller_sleeping = false;
    }
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.busy);
}

#endif
