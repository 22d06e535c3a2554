/* pool.c: the process's worker threads and dpk_parallel_api.parallel_for.
 *
 * One pool per process, started by the first model that wants more than one
 * thread, grown to the largest count a loaded model wants, joined by the
 * last dpk_pool_release. A loop is cut into up to DPK_POOL_RANGES_PER_THREAD
 * ranges per thread, which the caller and the workers it wakes claim one at a time
 * (an atomic counter): a worker the OS has not scheduled yet costs nothing,
 * since the others take its ranges, and a worker that has not started when
 * the caller runs out of ranges is cancelled rather than waited for. Which
 * thread runs a range never changes a result (ranges are independent). Each
 * worker has its own mailbox (a sequence number), so a loop wakes only the
 * workers it uses. One loop at a time uses the pool: a caller that finds it
 * busy runs its whole loop inline instead of waiting. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "pool.h"

#define SPIN_NS 50000 /* a worker spins this long after a loop before it sleeps */

enum { IDLE, POSTED, RUNNING }; /* worker_t.state: a loop handed to it, then taken up by it */

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

typedef struct worker {
  pthread_t thread;
  pthread_mutex_t lock; /* with `wake`: sleeping only */
  pthread_cond_t wake;
  unsigned seq;         /* atomic: bumped to hand this worker a range */
  int sleeping;         /* atomic */
  int state;            /* atomic: IDLE, POSTED (by the caller), RUNNING (by the worker) */
  void *scratch;        /* 64-aligned, scratch_size bytes; grown by the caller under `busy` */
  size_t scratch_size;
  int index;            /* runs range index + 1 */
} worker_t;

static struct {
  pthread_mutex_t admin; /* refs and the worker count change under it (and `busy`) */
  pthread_mutex_t busy;  /* held by the loop using the workers */
  int refs, count, stopping; /* stopping: atomic */
  worker_t workers[DPK_POOL_MAX_THREADS - 1];
  /* The current loop, written before the mailboxes are bumped. */
  dpk_task_fn fn;
  void *ctx;
  int64_t base, rem, ranges;
  int64_t next; /* atomic: the next range to claim */
} pool = {.admin = PTHREAD_MUTEX_INITIALIZER, .busy = PTHREAD_MUTEX_INITIALIZER};

static __thread int thread_count = 1; /* of the model this thread is running */

int dpk_pool_set_thread_count(int threads) {
  int old = thread_count;
  thread_count = threads;
  return old;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claim and run ranges of the current loop until none is left (the first
 * `rem` ranges are one longer). */
static void run_ranges(void *scratch) {
  for (;;) {
    int64_t k = __atomic_fetch_add(&pool.next, 1, __ATOMIC_RELAXED);
    if (k >= pool.ranges) return;
    int64_t begin = k * pool.base + (k < pool.rem ? k : pool.rem);
    pool.fn(pool.ctx, begin, begin + pool.base + (k < pool.rem), scratch);
  }
}

/* Spin a little (a loop often follows a loop), then sleep until `seq` moves. */
static unsigned wait_for_work(worker_t *w, unsigned seen) {
  unsigned seq;
  int64_t deadline = now_ns() + SPIN_NS;
  for (int i = 1;; i++) {
    if ((seq = __atomic_load_n(&w->seq, __ATOMIC_ACQUIRE)) != seen) return seq;
    CPU_RELAX();
    if (i % 64 == 0 && now_ns() > deadline) break;
  }
  pthread_mutex_lock(&w->lock);
  /* Store `sleeping`, then read `seq`; dispatch stores `seq`, then reads
   * `sleeping` (both seq_cst): one of the two sees the other's store. */
  __atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
  while ((seq = __atomic_load_n(&w->seq, __ATOMIC_SEQ_CST)) == seen) pthread_cond_wait(&w->wake, &w->lock);
  __atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&w->lock);
  return seq;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  unsigned seen = 0;
  for (;;) {
    seen = wait_for_work(w, seen);
    if (__atomic_load_n(&pool.stopping, __ATOMIC_ACQUIRE)) return NULL; /* stored before the bump that woke us */
    /* A wake-up may be stale (its loop was cancelled); only a POSTED state is a loop to join. */
    int posted = POSTED;
    if (__atomic_compare_exchange_n(&w->state, &posted, RUNNING, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
      run_ranges(w->scratch);
      __atomic_store_n(&w->state, IDLE, __ATOMIC_RELEASE);
    }
  }
}

static void post(worker_t *w) {
  __atomic_add_fetch(&w->seq, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&w->sleeping, __ATOMIC_SEQ_CST)) {
    pthread_mutex_lock(&w->lock);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
  }
}

/* Join every worker and free their scratch. Under admin and busy. */
static void stop_all(void) {
  __atomic_store_n(&pool.stopping, 1, __ATOMIC_RELEASE); /* a worker woken for a cancelled loop may read it now */
  for (int i = 0; i < pool.count; i++) post(&pool.workers[i]);
  for (int i = 0; i < pool.count; i++) {
    worker_t *w = &pool.workers[i];
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w->scratch);
    memset(w, 0, sizeof *w);
  }
  pool.count = 0;
  __atomic_store_n(&pool.stopping, 0, __ATOMIC_RELAXED); /* every worker is joined */
}

/* Start workers until there are `want`. Under admin and busy. Workers block
 * every asynchronous signal, so signals keep going to the application's
 * threads; the synchronous ones (a fault in the worker itself) stay
 * deliverable (blocking them is undefined behaviour). */
static dpk_status_t grow(int want) {
  sigset_t all, old;
  sigfillset(&all);
  static const int synchronous[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
  for (size_t i = 0; i < sizeof synchronous / sizeof *synchronous; i++) sigdelset(&all, synchronous[i]);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = 0;
  while (pool.count < want && !rc) {
    worker_t *w = &pool.workers[pool.count];
    w->index = pool.count;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
      pthread_cond_destroy(&w->wake);
      pthread_mutex_destroy(&w->lock);
    } else {
      pool.count++;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "cannot start worker thread %d of %d: %s", pool.count + 1, want, strerror(rc));
  return DPK_OK;
}

/* A forked child has none of the workers: it forgets them (its loops then
 * run inline until a load starts new ones). */
static void forget_workers(void) {
  pthread_mutex_init(&pool.admin, NULL);
  pthread_mutex_init(&pool.busy, NULL);
  for (int i = 0; i < pool.count; i++) free(pool.workers[i].scratch);
  memset(pool.workers, 0, sizeof pool.workers);
  pool.count = 0;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, forget_workers); }

dpk_status_t dpk_pool_retain(int threads) {
  pthread_once(&atfork_once, register_atfork);
  int want = (threads < DPK_POOL_MAX_THREADS ? threads : DPK_POOL_MAX_THREADS) - 1;
  dpk_status_t status = DPK_OK;
  pthread_mutex_lock(&pool.admin);
  if (pool.count < want) {
    pthread_mutex_lock(&pool.busy);
    status = grow(want);
    if (status && pool.refs == 0) stop_all();
    pthread_mutex_unlock(&pool.busy);
  }
  if (!status) pool.refs++;
  pthread_mutex_unlock(&pool.admin);
  return status;
}

void dpk_pool_release(void) {
  pthread_mutex_lock(&pool.admin);
  if (pool.refs > 0 && --pool.refs == 0) {
    pthread_mutex_lock(&pool.busy);
    stop_all();
    pthread_mutex_unlock(&pool.busy);
  }
  pthread_mutex_unlock(&pool.admin);
}

/* Scratch of at least `bytes` (and never NULL) for the first `n` workers;
 * grown, never shrunk. */
static dpk_status_t ensure_scratch(int n, size_t bytes) {
  if (bytes < 64) bytes = 64;
  for (int i = 0; i < n; i++) {
    worker_t *w = &pool.workers[i];
    if (w->scratch_size >= bytes) continue;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
      return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "parallel_for: cannot allocate %zu bytes of scratch for worker %d", bytes, i + 1);
    free(w->scratch);
    w->scratch = p;
    w->scratch_size = bytes;
  }
  return DPK_OK;
}

static int parallel_for(int64_t n, dpk_task_fn fn, void *ctx, size_t scratch_bytes, void *own_scratch) {
  int64_t parts = thread_count;
  if (parts < 2 || n < 2 || pthread_mutex_trylock(&pool.busy) != 0) {
    fn(ctx, 0, n, own_scratch);
    return DPK_OK;
  }
  if (parts > pool.count + 1) parts = pool.count + 1;
  if (parts < 2) { /* no workers (a model on 1 thread loaded them all) */
    pthread_mutex_unlock(&pool.busy);
    fn(ctx, 0, n, own_scratch);
    return DPK_OK;
  }
  int64_t ranges = n < parts * DPK_POOL_RANGES_PER_THREAD ? n : parts * DPK_POOL_RANGES_PER_THREAD;
  if (parts > ranges) parts = ranges;
  dpk_status_t status = ensure_scratch((int)parts - 1, scratch_bytes);
  if (status) {
    pthread_mutex_unlock(&pool.busy);
    return status;
  }
  pool.fn = fn;
  pool.ctx = ctx;
  pool.ranges = ranges;
  pool.base = n / ranges;
  pool.rem = n % ranges;
  __atomic_store_n(&pool.next, 0, __ATOMIC_RELAXED);
  for (int i = 0; i < parts - 1; i++) {
    __atomic_store_n(&pool.workers[i].state, POSTED, __ATOMIC_RELEASE); /* after the loop's fields */
    post(&pool.workers[i]);
  }
  run_ranges(own_scratch);
  /* Every range is claimed. A worker that has not taken up the loop yet is
   * cancelled; one that has may still run its last range: wait for it by
   * spinning, yielding the core if it was descheduled. */
  for (int i = 0; i < parts - 1; i++) {
    worker_t *w = &pool.workers[i];
    int posted = POSTED;
    if (__atomic_compare_exchange_n(&w->state, &posted, IDLE, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    for (int spins = 1; __atomic_load_n(&w->state, __ATOMIC_ACQUIRE) != IDLE; spins++) {
      if (spins < 4096) CPU_RELAX(); else sched_yield();
    }
  }
  pthread_mutex_unlock(&pool.busy);
  return DPK_OK;
}

const dpk_parallel_api dpk_parallel = {DPK_ABI_VERSION, parallel_for};
