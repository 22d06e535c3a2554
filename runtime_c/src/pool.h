/* pool.h: the process's worker threads (pool.c). One process-wide pool
 * serves every model's parallel_for (dpk_abi.h, __dpk_parallel). Not
 * installed. */
#ifndef DPK_POOL_H
#define DPK_POOL_H

#include "dpk.h"

#define DPK_POOL_MAX_THREADS 64 /* threads one loop uses at most, the caller included */
#define DPK_POOL_RANGES_PER_THREAD 4 /* a loop is cut into min(n, T * this) ranges, claimed one at a time */

/* What dlopen'ed model code finds in __dpk_parallel. Static. */
extern const dpk_parallel_api dpk_parallel;

/* A loaded model's hold on the pool: grows it to `threads` - 1 workers (at
 * most DPK_POOL_MAX_THREADS - 1) and counts the model; each successful retain
 * is paired with one release, and the last release joins the workers and
 * frees their scratch. RESOURCE_EXHAUSTED if a thread cannot be started
 * (then nothing is held). Thread-safe. */
dpk_status_t dpk_pool_retain(int threads);
void dpk_pool_release(void);
/* Set the calling thread's thread count for parallel_for (1 outside a run);
 * returns the previous value, to restore it. */
int dpk_pool_set_thread_count(int threads);

#endif /* DPK_POOL_H */
