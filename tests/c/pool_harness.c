/* pool_harness.c: the worker pool (runtime_c/src/pool.c) through its
 * internal API (tests/test_threads.py builds it plain, with ASan/UBSan and
 * with TSan).
 *
 *   pool_harness ranges          for T in 1..9 and many n: every index once,
 *                                ranges contiguous, non-empty, min(n, 4 T) of
 *                                them; the caller's with own_scratch, at most
 *                                T - 1 workers, each with its own scratch
 *                                (private, 64-aligned, big enough)
 *   pool_harness oom             scratch that cannot be allocated:
 *                                RESOURCE_EXHAUSTED, nothing run
 *   pool_harness concurrent K    K threads loop at once (one gets the pool,
 *                                the others run inline); every sum right
 *   pool_harness lifecycle       the last release joins the workers; idle
 *                                workers use no CPU
 *   pool_harness fork            a forked child runs loops inline, then can
 *                                start workers of its own
 *   pool_harness latency T       ns per parallel_for on T threads, warm
 *
 * Exit 0 if every check passed, 1 otherwise (printed), 2 on usage errors. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#define MAX_N 4096
#define MAX_RANGES 128

static int failures;
#define CHECK(cond, ...)                             \
  do {                                               \
    if (!(cond)) {                                   \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
      printf(__VA_ARGS__);                           \
      printf("\n");                                  \
      if (++failures > 20) exit(1);                  \
    }                                                \
  } while (0)

typedef struct {
  int64_t begin, end;
  void *scratch;
  pthread_t thread;
} range_t;

typedef struct {
  int hits[MAX_N];
  range_t ranges[MAX_RANGES];
  int count; /* atomic */
  size_t scratch_bytes;
} record_t;

static void record(void *ctx, int64_t begin, int64_t end, void *scratch) {
  record_t *r = ctx;
  for (int64_t i = begin; i < end; i++) __atomic_add_fetch(&r->hits[i], 1, __ATOMIC_RELAXED);
  if (scratch) memset(scratch, (int)(begin & 0xff), r->scratch_bytes); /* ASan: big enough; TSan: private */
  int k = __atomic_fetch_add(&r->count, 1, __ATOMIC_RELAXED);
  if (k < MAX_RANGES) r->ranges[k] = (range_t){begin, end, scratch, pthread_self()};
}

static int by_begin(const void *a, const void *b) {
  const range_t *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void check_loop(int threads, int64_t n, size_t scratch_bytes) {
  static record_t r;
  static unsigned char own[1 << 16];
  memset(&r, 0, sizeof r);
  r.scratch_bytes = scratch_bytes;
  int status = dpk_parallel.parallel_for(n, record, &r, scratch_bytes, own);
  CHECK(status == 0, "T=%d n=%lld: status %d (%s)", threads, (long long)n, status, dpk_last_error());
  int64_t cut = (int64_t)threads * DPK_POOL_RANGES_PER_THREAD;
  int want = (int)(n < cut ? (n < 1 ? 1 : n) : cut);
  if (n < 2 || threads < 2) want = 1;
  CHECK(r.count == want, "T=%d n=%lld: %d ranges, expected %d", threads, (long long)n, r.count, want);
  qsort(r.ranges, (size_t)r.count, sizeof r.ranges[0], by_begin);
  pthread_t seen[MAX_RANGES];
  void *scratch_of[MAX_RANGES];
  int workers = 0;
  for (int k = 0; k < r.count; k++) {
    range_t *g = &r.ranges[k];
    CHECK(g->begin == (k ? r.ranges[k - 1].end : 0), "T=%d n=%lld: range %d starts at %lld", threads, (long long)n, k,
          (long long)g->begin);
    CHECK(g->end > g->begin || (n < 2 && r.count == 1), "T=%d n=%lld: range %d is empty", threads, (long long)n, k);
    if (pthread_equal(g->thread, pthread_self())) {
      CHECK(g->scratch == own, "T=%d n=%lld: range %d on the caller did not get own_scratch", threads, (long long)n, k);
      continue;
    }
    CHECK(g->scratch && g->scratch != own && (uintptr_t)g->scratch % 64 == 0,
          "T=%d n=%lld: range %d scratch %p (own %p)", threads, (long long)n, k, g->scratch, (void *)own);
    int w = 0;
    while (w < workers && !pthread_equal(seen[w], g->thread)) w++;
    if (w == workers) {  /* a worker's first range: its scratch is no other worker's */
      for (int j = 0; j < workers; j++) CHECK(scratch_of[j] != g->scratch, "two workers share scratch %p", g->scratch);
      seen[workers] = g->thread;
      scratch_of[workers++] = g->scratch;
    }
    CHECK(scratch_of[w] == g->scratch, "T=%d n=%lld: a worker's ranges got two scratch buffers", threads, (long long)n);
  }
  CHECK(workers <= threads - 1 || workers == 0, "T=%d n=%lld: %d workers ran ranges", threads, (long long)n, workers);
  if (r.count) CHECK(r.ranges[r.count - 1].end == n, "T=%d n=%lld: last range ends at %lld", threads,
                     (long long)n, (long long)r.ranges[r.count - 1].end);
  for (int64_t i = 0; i < n; i++) CHECK(r.hits[i] == 1, "T=%d n=%lld: index %lld ran %d times", threads, (long long)n, (long long)i, r.hits[i]);
}

static int ranges(void) {
  static const int64_t sizes[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 1000, 4095, 4096};
  static const size_t scratch[] = {0, 64, 1000, 1 << 16, 64};
  for (int threads = 1; threads <= 9; threads++) {
    if (dpk_pool_retain(threads)) return printf("retain %d: %s\n", threads, dpk_last_error()), 1;
    int outer = dpk_pool_set_thread_count(threads);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
      check_loop(threads, sizes[i], scratch[i % (sizeof scratch / sizeof *scratch)]);
    dpk_pool_set_thread_count(outer);
    check_loop(1, 100, 64); /* outside a run: inline */
  }
  for (int threads = 1; threads <= 9; threads++) dpk_pool_release();
  if (!failures) printf("ranges OK\n");
  return failures != 0;
}

static int ran;
static void mark(void *ctx, int64_t begin, int64_t end, void *scratch) {
  (void)ctx, (void)begin, (void)end, (void)scratch;
  __atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
}

static int oom(void) {
  if (dpk_pool_retain(4)) return 1;
  dpk_pool_set_thread_count(4);
  char own[64];
  int status = dpk_parallel.parallel_for(100, mark, NULL, SIZE_MAX / 4, own);
  CHECK(status == DPK_STATUS_RESOURCE_EXHAUSTED, "status %d", status);
  CHECK(ran == 0, "%d ranges ran", ran);
  CHECK(strstr(dpk_last_error(), "scratch") != NULL, "message '%s'", dpk_last_error());
  check_loop(4, 100, 64); /* the pool still works */
  dpk_pool_release();
  if (!failures) printf("oom OK: %s\n", dpk_last_error());
  return failures != 0;
}

/* ---- concurrent callers ---- */
typedef struct { const int64_t *data; int64_t sums[DPK_POOL_MAX_THREADS]; int parts; } sum_t;
static void sum_range(void *ctx, int64_t begin, int64_t end, void *scratch) {
  sum_t *s = ctx;
  int64_t total = 0;
  for (int64_t i = begin; i < end; i++) total += s->data[i];
  *(int64_t *)scratch = total; /* scratch is private: no other range writes it */
  int k = __atomic_fetch_add(&s->parts, 1, __ATOMIC_RELAXED);
  s->sums[k] = *(int64_t *)scratch;
}

static int64_t data[MAX_N];
static int inline_runs, pooled_runs;

static void *caller(void *arg) {
  int id = (int)(intptr_t)arg, bad = 0;
  dpk_pool_set_thread_count(2 + id % 3);
  for (int it = 0; it < 2000; it++) {
    sum_t s;
    memset(&s, 0, sizeof s);
    s.data = data;
    int64_t own[8], n = 1 + (it * 37 + id) % MAX_N, total = 0;
    if (dpk_parallel.parallel_for(n, sum_range, &s, sizeof own, own)) bad++;
    for (int k = 0; k < s.parts; k++) total += s.sums[k];
    if (total != n * (n - 1) / 2) bad++;
    __atomic_add_fetch(s.parts == 1 ? &inline_runs : &pooled_runs, 1, __ATOMIC_RELAXED);
  }
  return (void *)(intptr_t)bad;
}

static int concurrent(int k) {
  for (int i = 0; i < MAX_N; i++) data[i] = i;
  if (dpk_pool_retain(4)) return 1;
  pthread_t threads[64];
  for (int i = 0; i < k && i < 64; i++) pthread_create(&threads[i], NULL, caller, (void *)(intptr_t)i);
  int bad = 0;
  for (int i = 0; i < k && i < 64; i++) {
    void *rc;
    pthread_join(threads[i], &rc);
    bad += (int)(intptr_t)rc;
  }
  dpk_pool_release();
  CHECK(bad == 0, "%d wrong sums or failed calls", bad);
  printf("concurrent %d: %d loops on the pool, %d inline\n", k, pooled_runs, inline_runs);
  return failures != 0;
}

/* ---- lifecycle ---- */
static int thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  if (!d) return -1;
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* The thread count once it is `want`, or what it is after 1 s: pthread_join returns when a worker's exit
 * clears its tid, a moment before the kernel drops its task from /proc/self/task. */
static int thread_count_settled(int want) {
  struct timespec pause = {0, 1000 * 1000};
  int n = thread_count();
  for (int i = 0; i < 1000 && n != want; ++i) {
    nanosleep(&pause, NULL);
    n = thread_count();
  }
  return n;
}

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int lifecycle(void) {
  if (dpk_pool_retain(2)) return 1; /* TSan starts a thread of its own at the first pthread_create */
  int with_worker = thread_count();
  dpk_pool_release();
  int base = thread_count_settled(with_worker - 1);
  if (dpk_pool_retain(3) || dpk_pool_retain(5)) return 1;
  CHECK(thread_count() == base + 4, "%d threads after retain(3), retain(5); %d before", thread_count(), base);
  int outer = dpk_pool_set_thread_count(5);
  check_loop(5, 1000, 64);
  dpk_pool_set_thread_count(outer);
  double cpu = cpu_seconds();
  struct timespec pause = {0, 300 * 1000 * 1000};
  nanosleep(&pause, NULL);
  double idle = cpu_seconds() - cpu;
  CHECK(idle < 0.05, "4 idle workers used %.3f s of CPU in 0.3 s", idle);
  dpk_pool_release();
  CHECK(thread_count() == base + 4, "a release with a model left stopped the workers");
  dpk_pool_release();
  int after = thread_count_settled(base);
  CHECK(after == base, "%d threads after the last release, %d before", after, base);
  if (dpk_pool_retain(2)) return 1; /* and it starts again */
  CHECK(thread_count() == base + 1, "%d threads after a new retain(2)", thread_count());
  dpk_pool_release();
  if (!failures) printf("lifecycle OK: idle workers used %.1f ms of CPU in 300 ms\n", idle * 1e3);
  return failures != 0;
}

/* A forked child has no workers: its loops run inline, then a new retain starts them. */
static int forked(void) {
  if (dpk_pool_retain(3)) return 1;
  int outer = dpk_pool_set_thread_count(3);
  check_loop(3, 100, 64);
  pid_t pid = fork();
  if (pid == 0) {
    static record_t r;
    char own[64];
    r.scratch_bytes = sizeof own;
    int ok = dpk_parallel.parallel_for(100, record, &r, sizeof own, own) == 0 && r.count == 1 && r.ranges[0].end == 100;
    ok = ok && dpk_pool_retain(3) == 0;
    check_loop(3, 100, 64);
    dpk_pool_release();
    _exit(ok && !failures ? 0 : 1);
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0, "the forked child failed (status %d)", wstatus);
  check_loop(3, 100, 64);
  dpk_pool_set_thread_count(outer);
  dpk_pool_release();
  if (!failures) printf("fork OK\n");
  return failures != 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int latency(int threads) {
  if (dpk_pool_retain(threads)) return 1;
  dpk_pool_set_thread_count(threads);
  char own[64];
  double best = 1e9;
  for (int batch = 0; batch < 20; batch++) {
    int iters = 20000;
    double t0 = now();
    for (int i = 0; i < iters; i++) dpk_parallel.parallel_for(threads, mark, NULL, 64, own);
    double per = (now() - t0) / iters;
    if (per < best) best = per;
  }
  dpk_pool_release();
  printf("latency %d threads: %.0f ns per parallel_for (best batch of 20000)\n", threads, best * 1e9);
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "ranges") == 0) return ranges();
  if (strcmp(mode, "oom") == 0) return oom();
  if (strcmp(mode, "concurrent") == 0 && argc > 2) return concurrent(atoi(argv[2]));
  if (strcmp(mode, "lifecycle") == 0) return lifecycle();
  if (strcmp(mode, "fork") == 0) return forked();
  if (strcmp(mode, "latency") == 0 && argc > 2) return latency(atoi(argv[2]));
  fprintf(stderr, "usage: pool_harness ranges | oom | concurrent K | lifecycle | fork | latency T\n");
  return 2;
}
