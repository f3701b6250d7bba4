/*
 * pool.c - the engine's own worker threads: one parallel loop at a time over a layer's tasks.
 *
 * OpenBLAS splits each sgemm across its threads, which pays off for large matrices only; a
 * network's layers are many small pieces of work. So the engine splits them itself: a layer
 * calls nn_parallel(fn, arg, ntasks) and the caller plus the n - 1 pool threads take task
 * indices from one atomic counter until none are left. Workers spin briefly between loops (a
 * training step or a batch is a quick succession of loops), then sleep on a condition variable.
 *
 * One user at a time: a second thread calling nn_parallel while the pool is busy (two inference
 * contexts in two daemon workers, say) runs its tasks itself, serially; results never depend on
 * the thread count or on who ran which task, since tasks write disjoint outputs.
 */
#include <pthread.h>
#include <stdatomic.h>

#include <cblas.h>

#include "nn_int.h"

#define SPIN_ROUNDS 20000 /* ~50-100 us of pause instructions before a worker sleeps */

static struct {
    pthread_mutex_t user; /* held by the thread running a parallel loop */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int n; /* threads including the caller */
    pthread_t tid[NN_MAX_THREADS];
    int ids[NN_MAX_THREADS];
    atomic_uint gen;
    unsigned start_gen; /* gen when the workers were started: their first "seen" */
    atomic_int next, busy;
    nn_task_fn fn;
    void *arg;
    int ntasks;
    int quit;
} pool = {
    .user = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .n = 1,
};

static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_tasks(int worker)
{
    for (;;) {
        int i = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (i >= pool.ntasks)
            return;
        pool.fn(pool.arg, i, worker);
    }
}

static void *worker_main(void *p)
{
    const int worker = *(const int *)p;
    unsigned seen = pool.start_gen; /* not gen now: a loop may have begun already */
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool.gen, memory_order_acquire) == seen) {
            if (++spins < SPIN_ROUNDS) {
                relax();
                continue;
            }
            pthread_mutex_lock(&pool.mu);
            while (atomic_load(&pool.gen) == seen && !pool.quit)
                pthread_cond_wait(&pool.wake, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
            break;
        }
        if (pool.quit)
            return NULL;
        seen = atomic_load(&pool.gen);
        run_tasks(worker);
        if (atomic_fetch_sub_explicit(&pool.busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
    }
}

static void stop_workers(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    atomic_fetch_add(&pool.gen, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 1; i < pool.n; i++)
        (void)pthread_join(pool.tid[i], NULL);
    pool.quit = 0;
    pool.n = 1;
}

cxr_err nn_set_threads(int n)
{
    cxr_err err = CXR_OK;
    if (n < 1 || n > NN_MAX_THREADS)
        return CXR_EINVAL;
    pthread_mutex_lock(&pool.user);
    if (n != pool.n) {
        stop_workers();
        pool.start_gen = atomic_load(&pool.gen);
        for (int i = 1; i < n; i++) {
            pool.ids[i] = i;
            if (pthread_create(&pool.tid[i], NULL, worker_main, &pool.ids[i]) != 0) {
                err = CXR_ENOMEM;
                break;
            }
            pool.n = i + 1;
        }
    }
    pthread_mutex_unlock(&pool.user);
    /* the engine splits the work; a second level of threads inside sgemm would only contend */
    openblas_set_num_threads(1);
    return err;
}

int nn_get_threads(void)
{
    return pool.n;
}

void nn_parallel(nn_task_fn fn, void *arg, int ntasks)
{
    if (ntasks <= 0)
        return;
    if (pool.n <= 1 || ntasks == 1 || pthread_mutex_trylock(&pool.user) != 0) {
        for (int i = 0; i < ntasks; i++)
            fn(arg, i, 0);
        return;
    }
    if (pool.n <= 1) { /* nn_set_threads(1) ran in between */
        pthread_mutex_unlock(&pool.user);
        for (int i = 0; i < ntasks; i++)
            fn(arg, i, 0);
        return;
    }
    pool.fn = fn;
    pool.arg = arg;
    pool.ntasks = ntasks;
    atomic_store(&pool.next, 0);
    atomic_store(&pool.busy, pool.n - 1);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    run_tasks(0);
    for (int spins = 0; atomic_load_explicit(&pool.busy, memory_order_acquire) > 0;) {
        if (++spins < SPIN_ROUNDS) {
            relax();
            continue;
        }
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.busy) > 0)
            pthread_cond_wait(&pool.done, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
    pthread_mutex_unlock(&pool.user);
}
