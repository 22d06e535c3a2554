/* threads.c: how many threads a model uses, and keeping OpenBLAS to one.
 *
 * dpk_load_options_t.num_threads > 0 wins, else DPK_NUM_THREADS, else the
 * CPUs this process may run on (its affinity mask, which taskset, cgroups
 * cpusets and container runtimes narrow; sysconf would count the machine's). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"
#include "threads.h"

#define MAX_ENV_THREADS 1024

static int affinity_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN); /* more than CPU_SETSIZE CPUs, or no affinity */
  return n > 0 ? (int)(n < MAX_ENV_THREADS ? n : MAX_ENV_THREADS) : 1;
}

dpk_status_t dpk_threads_resolve(int requested, int *out_threads) {
  *out_threads = 0;
  if (requested < 0)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "num_threads is %d: give a positive count, or 0 for the default", requested);
  if (requested > 0) {
    *out_threads = requested;
    return DPK_OK;
  }
  const char *env = getenv("DPK_NUM_THREADS");
  if (!env) {
    *out_threads = affinity_cpus();
    return DPK_OK;
  }
  char *end;
  errno = 0;
  long n = strtol(env, &end, 10);
  if (env[0] < '0' || env[0] > '9' || errno || *end || n < 1 || n > MAX_ENV_THREADS)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "DPK_NUM_THREADS='%s' is not a thread count: give an integer from 1 to %d",
                    env, MAX_ENV_THREADS);
  *out_threads = (int)n;
  return DPK_OK;
}

/* dsopack's kernels split BLAS calls over its own threads; OpenBLAS's threads
 * on top would oversubscribe the cores (and spin). A user who set OpenBLAS's
 * own variables has chosen, so those are left alone. */
void dpk_threads_tame_openblas(void *const *handles, size_t count) {
  if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS")) return;
  for (size_t i = 0; i < count; i++) {
    void *sym = handles[i] ? dlsym(handles[i], "openblas_set_num_threads") : NULL;
    if (sym) {
      void (*set_num_threads)(int);
      *(void **)&set_num_threads = sym; /* object to function pointer, as POSIX dlsym allows */
      set_num_threads(1);
    }
  }
}
