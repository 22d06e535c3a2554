/* threads.h: how many threads a model uses, and OpenBLAS's own (threads.c).
 * Not installed. */
#ifndef DPK_THREADS_H
#define DPK_THREADS_H

#include "dpk.h"

/* A model's thread count at load into *out_threads: `requested` > 0, else
 * DPK_NUM_THREADS, else the CPUs in the affinity mask. INVALID_ARGUMENT if
 * `requested` < 0 or the variable is not an integer in 1..1024. */
dpk_status_t dpk_threads_resolve(int requested, int *out_threads);
/* After the `requires` libraries are open (`count` dlopen handles, NULL
 * entries skipped): one that exports openblas_set_num_threads is set to 1
 * thread, unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set. */
void dpk_threads_tame_openblas(void *const *handles, size_t count);

#endif /* DPK_THREADS_H */
