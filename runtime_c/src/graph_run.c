/* graph_run.c: running a `graph` module (see graph.c for its load).
 *
 * Runs are thread-safe: each concurrent run takes a context from a pool
 * (a mutex-protected free list; a new context is made only when every
 * context is busy). A context owns a 64-byte-aligned arena, its own
 * DLTensor array and the precomputed packed arguments of every call, so a
 * run does no lookup, parsing or allocation once the pool is warm. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "graph.h"
#include "manifest.h"
#include "shape.h"

static void ctx_free(run_ctx *c) {
  if (!c) return;
  free(c->arena);
  free(c->tensors);
  free(c->values);
  free(c);
}

static run_ctx *ctx_new(const graph_state *s) {
  run_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  size_t arena = (size_t)((s->arena_bytes + 63) / 64 * 64);
  if (posix_memalign(&c->arena, 64, arena ? arena : 64)) c->arena = NULL;
  c->tensors = malloc((s->num_tensors ? s->num_tensors : 1) * sizeof *c->tensors);
  c->values = malloc((s->num_args ? s->num_args : 1) * sizeof *c->values);
  if (!c->arena || !c->tensors || !c->values) {
    ctx_free(c);
    return NULL;
  }
  memcpy(c->tensors, s->templ, s->num_tensors * sizeof *c->tensors);
  for (size_t i = 0; i < s->num_tensors; i++)
    if (s->tensors[i].storage == ST_ARENA) c->tensors[i].data = (uint8_t *)c->arena + s->tensors[i].where;
  for (size_t a = 0; a < s->num_args; a++) c->values[a].v_tensor = &c->tensors[s->args[a]];
  return c;
}

static run_ctx *acquire(graph_state *s) {
  pthread_mutex_lock(&s->lock);
  run_ctx *c = s->free_list;
  if (c) s->free_list = c->next_free;
  pthread_mutex_unlock(&s->lock);
  if (c) return c;
  c = ctx_new(s);
  if (!c) return NULL;
  pthread_mutex_lock(&s->lock);
  c->next_all = s->all;
  s->all = c;
  pthread_mutex_unlock(&s->lock);
  return c;
}

static void release(graph_state *s, run_ctx *c) {
  pthread_mutex_lock(&s->lock);
  c->next_free = s->free_list;
  s->free_list = c;
  pthread_mutex_unlock(&s->lock);
}

int dpk_graph_main(const dpk_value *args, const int *type_codes, int nargs, dpk_value *ret, int *ret_type_code,
                   void *resource) {
  graph_state *s = resource;
  (void)ret;
  if (ret_type_code) *ret_type_code = DPK_TYPE_NULL;
  size_t n = s->num_inputs + s->num_outputs;
  if (nargs < 0 || (size_t)nargs != n)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "module '%s' function 'main' takes %zu tensors (%zu inputs, %zu "
                    "outputs) but was given %d arguments", s->module, n, s->num_inputs, s->num_outputs, nargs);
  for (size_t i = 0; i < n; i++) {
    bool in = i < s->num_inputs;
    const dpk_tensor_decl_t *decl = in ? &s->inputs[i] : &s->outputs[i - s->num_inputs];
    if (type_codes[i] != DPK_TYPE_TENSOR)
      return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "%s '%s' must be passed as a tensor (type code %d, not %d)",
                      in ? "input" : "output", decl->name, DPK_TYPE_TENSOR, type_codes[i]);
    dpk_status_t status = dpk_check_tensor(args[i].v_tensor, in ? "input" : "output", decl);
    if (status) return status;
  }
  run_ctx *c = acquire(s);
  if (!c) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "module '%s': out of memory for a run context", s->module);
  for (size_t i = 0; i < n; i++) {
    const DLTensor *t = args[i].v_tensor;
    c->tensors[s->io[i]].data = (uint8_t *)t->data + t->byte_offset;
  }
  dpk_clear_error();
  int rc = 0;
  for (size_t k = 0; k < s->num_calls && !rc; k++) {
    const gcall *call = &s->calls[k];
    dpk_value r;
    int r_code = DPK_TYPE_NULL;
    if (call->fn(&c->values[call->first], &s->codes[call->first], (int)call->nargs, &r, &r_code, call->resource))
      rc = dpk_last_error()[0] ? dpk_fail_context(DPK_STATUS_INTERNAL, "call %zu (%s) failed", k, call->func)
                               : dpk_fail(DPK_STATUS_INTERNAL, "call %zu (%s) failed (no message)", k, call->func);
  }
  release(s, c);
  return rc;
}

void dpk_graph_free_pool(graph_state *s) {
  for (run_ctx *c = s->all, *next; c; c = next) {
    next = c->next_all;
    ctx_free(c);
  }
  s->all = s->free_list = NULL;
}
