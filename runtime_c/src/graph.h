/* graph.h: the `graph` kind's state, shared by graph.c (load: the plan)
 * and graph_run.c (run: the context pool and `main`). Not installed. */
#ifndef DPK_GRAPH_H
#define DPK_GRAPH_H

#include <pthread.h>

#include "dpk.h"
#include "manifest.h"
#include "yamltree.h"

enum { ST_INPUT, ST_OUTPUT, ST_PARAM, ST_ARENA };

typedef struct {
  dpk_tensor_decl_t decl; /* name, dtype, shape (shape owned) */
  int storage;
  uint64_t where;         /* index (input/output) or arena offset */
} gtensor;

typedef struct {
  const char *func; /* borrowed from the payload document */
  dpk_packed_fn fn;
  void *resource;
  size_t first, nargs; /* into the flattened argument list */
} gcall;

/* What one run owns; taken from the pool for the length of a run. */
typedef struct run_ctx {
  struct run_ctx *next_free, *next_all;
  void *arena;
  DLTensor *tensors;
  dpk_value *values; /* one per flattened argument: &tensors[arg] */
} run_ctx;

typedef struct {
  dpk_yaml_t yaml;
  const char *module;
  uint64_t arena_bytes;
  size_t num_tensors, num_calls, num_args;
  gtensor *tensors;
  DLTensor *templ; /* every tensor but the run's buffers */
  gcall *calls;
  size_t *args;
  int *codes;      /* DPK_TYPE_TENSOR for every argument */
  size_t num_inputs, num_outputs;
  size_t *io;      /* tensor index of each input, then each output */
  const dpk_tensor_decl_t *inputs, *outputs; /* the manifest's, or for a plan plan_io's */
  dpk_tensor_decl_t *plan_io; /* a plan's graph: the manifest's inputs then outputs at the plan's sizes (owned) */
  int64_t *plan_shapes;       /* their shapes (owned) */
  pthread_mutex_t lock;
  run_ctx *free_list, *all;
} graph_state;

/* `main`: inputs then outputs, as tensors (graph_run.c). */
int dpk_graph_main(const dpk_value *args, const int *type_codes, int nargs, dpk_value *ret, int *ret_type_code,
                   void *resource);
/* Free every run context of the pool (graph_run.c). */
void dpk_graph_free_pool(graph_state *s);

#endif /* DPK_GRAPH_H */
