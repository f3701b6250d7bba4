/*
 * pool.c - the engine's own worker threads: one parallel loop at a time over a layer's tasks.
 *
 * OpenBLAS splits each sgemm across its threads, which pays off for large matrices only; a
 * network's layers are many small pieces of work. So the engine splits them itself: a layer
 * calls nn_parallel(fn, arg, ntasks) and the caller plus the n - 1 pool threads take runs of
 * task indices from one atomic counter until none are left. Workers spin briefly between loops (a
 * training step or a batch is a quick succession of loops), then sleep on a condition variable.
 *
 * One user at a time: a second thread calling nn_parallel while the pool is busy (two inference
 * contexts in two daemon workers, say) runs its tasks itself, serially; results never depend on
 * the thread count or on who ran which task, since tasks write disjoint outputs.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <cblas.h>

#include "nn_int.h"

#define SPIN_ROUNDS 20000 /* ~50-100 us of pause instructions before a thread sleeps */

/*
 * Tasks are claimed from one 64-bit ticket: the loop's number in the high half, the next task
 * in the low half, advanced by compare-and-swap. A thread claims only tasks of the loop it was
 * woken for, so a worker that wakes late (its core busy with another process) finds the loop
 * finished or a newer one, and takes nothing it should not; the caller never waits for workers
 * that have not started, only for tasks that were claimed (pending). Loop numbers go up by two:
 * an odd number means "being set up" (fn, arg and ntasks are being written), and no task can
 * be claimed under it.
 */
static struct {
    pthread_mutex_t user; /* held by the thread running a parallel loop */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int n; /* threads including the caller */
    pthread_t tid[NN_MAX_THREADS];
    int ids[NN_MAX_THREADS];
    /* the two words every task touches, each on its own cache line, apart from the fields
     * that are only read during a loop: on a VM whose two vCPUs sit on different dies a line
     * passed back and forth costs ~350 ns, and with one line for all of them every claim
     * also evicted fn, arg and ntasks from the other core */
    _Alignas(64) _Atomic uint64_t ticket;
    _Alignas(64) atomic_int pending;
    _Alignas(64) atomic_int sleeping_caller;
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

static uint32_t loop_of(uint64_t t)
{
    return (uint32_t)(t >> 32);
}

/* Runs tasks of loop `loop` until none is left to claim. Tasks are claimed in runs, half of
 * what is left shared among the threads (guided scheduling): a loop of n tasks costs each
 * thread about log2(n) claims instead of n, and every claim moves the ticket's cache line
 * between cores (measured on the 2-vCPU AMD EPYC VM: ~75 ns when the vCPUs share a CCX,
 * ~350 ns when the hypervisor has put them on different dies, where one claim per task made
 * batch 1 on two threads 4.3 ms instead of 1.8). The last runs are single tasks, so the
 * threads still finish together. */
static void run_tasks(uint32_t loop, int worker)
{
    uint64_t t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    for (;;) {
        const uint32_t next = (uint32_t)t, n = (uint32_t)pool.ntasks;
        uint32_t k;
        if (loop_of(t) != loop || next >= n)
            return;
        k = (n - next) / (2u * (uint32_t)pool.n);
        if (k < 1)
            k = 1;
        if (!atomic_compare_exchange_weak_explicit(&pool.ticket, &t, t + k,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue; /* t now holds the current ticket */
        for (uint32_t i = next; i < next + k; i++)
            pool.fn(pool.arg, (int)i, worker);
        if (atomic_fetch_sub(&pool.pending, (int)k) == (int)k &&
            atomic_load(&pool.sleeping_caller)) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
        t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    }
}

static void *worker_main(void *p)
{
    const int worker = *(const int *)p;
    uint32_t seen = loop_of(atomic_load(&pool.ticket));
    for (;;) {
        int spins = 0;
        uint32_t now;
        while ((now = loop_of(atomic_load_explicit(&pool.ticket, memory_order_acquire))) ==
                   seen ||
               (now & 1u)) {
            if (++spins < SPIN_ROUNDS) {
                relax();
                continue;
            }
            pthread_mutex_lock(&pool.mu);
            while ((loop_of(atomic_load(&pool.ticket)) == seen ||
                    (loop_of(atomic_load(&pool.ticket)) & 1u)) &&
                   !pool.quit)
                pthread_cond_wait(&pool.wake, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
            spins = 0;
            if (pool.quit)
                return NULL;
        }
        if (pool.quit)
            return NULL;
        seen = now;
        run_tasks(now, worker);
    }
}

static void stop_workers(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    pool.ntasks = 0;
    atomic_fetch_add(&pool.ticket, (uint64_t)2 << 32);
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

/* Set by nn_serial_begin on the calling thread: its loops run serially and nn_get_threads()
 * says 1, so each layer splits its work exactly as on one thread. */
static _Thread_local int serial;

void nn_serial(int on)
{
    serial = on;
}

int nn_get_threads(void)
{
    return serial ? 1 : pool.n;
}

void nn_parallel(nn_task_fn fn, void *arg, int ntasks)
{
    uint32_t loop;
    if (ntasks <= 0)
        return;
    if (serial || pool.n <= 1 || ntasks == 1 || pthread_mutex_trylock(&pool.user) != 0) {
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
    loop = loop_of(atomic_load(&pool.ticket)) + 2;
    atomic_store(&pool.ticket, (uint64_t)(loop - 1) << 32); /* odd: being set up */
    pool.fn = fn;
    pool.arg = arg;
    pool.ntasks = ntasks;
    atomic_store(&pool.pending, ntasks);
    pthread_mutex_lock(&pool.mu);
    atomic_store_explicit(&pool.ticket, (uint64_t)loop << 32, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    run_tasks(loop, 0);
    for (int spins = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0;) {
        if (++spins < SPIN_ROUNDS) {
            relax();
            continue;
        }
        pthread_mutex_lock(&pool.mu);
        atomic_store(&pool.sleeping_caller, 1);
        while (atomic_load(&pool.pending) > 0)
            pthread_cond_wait(&pool.done, &pool.mu);
        atomic_store(&pool.sleeping_caller, 0);
        pthread_mutex_unlock(&pool.mu);
    }
    pthread_mutex_unlock(&pool.user);
}
