/* graph.c: kind `graph`, the execution graph (docs/format.md, "Graph payload").
 *
 * Load parses the payload, resolves every call's function through the
 * module's imports and every param tensor by name, checks the input and
 * output tensors against the manifest signature (for a graph that is a plan
 * of a file with dynamic shapes, the signature at the plan's sizes), and
 * precomputes the call list. The module's one function, `main`, takes the inputs then the
 * outputs as tensors and runs the calls in order (graph_run.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "graph.h"
#include "kinds.h"
#include "manifest.h"
#include "module.h"
#include "package.h"
#include "shape.h"
#include "yamltree.h"

static bool same_type(const dpk_tensor_decl_t *a, DLDataType dtype, int32_t ndim, const int64_t *shape) {
  if (a->dtype.code != dtype.code || a->dtype.bits != dtype.bits || a->ndim != ndim) return false;
  for (int32_t i = 0; i < ndim; i++)
    if (a->shape[i] != shape[i]) return false;
  return true;
}

static dpk_status_t type_mismatch(const char *what, const dpk_tensor_decl_t *t, DLDataType dtype, int32_t ndim,
                                  const int64_t *shape, const char *whose) {
  char a[256], b[256];
  return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is %s%s but %s is %s%s", what, dpk_dtype_name(t->dtype),
                  dpk_shape_str(t->ndim, t->shape, a, sizeof a), whose, dpk_dtype_name(dtype),
                  dpk_shape_str(ndim, shape, b, sizeof b));
}

static dpk_status_t parse_tensor(graph_state *s, const dpk_kind_load_args *args, size_t i, yaml_node_t *node) {
  gtensor *t = &s->tensors[i];
  dpk_yaml_t *y = &s->yaml;
  char what[256];
  snprintf(what, sizeof what, "tensors[%zu] field 'name'", i);
  dpk_status_t status = dpk_yaml_str(dpk_yaml_get(y, node, "name"), what, &t->decl.name);
  if (status) return status;
  const char *dtype, *storage;
  snprintf(what, sizeof what, "tensor '%s' field 'dtype'", t->decl.name);
  if ((status = dpk_yaml_str(dpk_yaml_get(y, node, "dtype"), what, &dtype))) return status;
  if (dpk_dtype_parse(dtype, what, &t->decl.dtype)) return DPK_STATUS_FAILED_PRECONDITION;
  snprintf(what, sizeof what, "tensor '%s' field 'shape'", t->decl.name);
  yaml_node_t *shape = dpk_yaml_get(y, node, "shape");
  size_t ndim = dpk_yaml_len(shape);
  if (!dpk_yaml_is_seq(shape) || ndim > 32)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a sequence of at most 32 dims", what);
  t->decl.ndim = (int32_t)ndim;
  t->decl.shape = calloc(ndim ? ndim : 1, sizeof(int64_t));
  if (!t->decl.shape) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t d = 0; d < ndim; d++) {
    uint64_t v;
    if ((status = dpk_yaml_uint(dpk_yaml_item(y, shape, d), what, &v))) return status;
    if (v > INT64_MAX) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: dim %zu is too large", what, d);
    t->decl.shape[d] = (int64_t)v;
  }
  uint64_t numel;
  if (!dpk_shape_numel(t->decl.ndim, t->decl.shape, &numel) || numel > UINT64_MAX / 8)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: the element count overflows", what);
  uint64_t nbytes = numel * dpk_dtype_size(t->decl.dtype);
  snprintf(what, sizeof what, "tensor '%s' field 'storage'", t->decl.name);
  if ((status = dpk_yaml_str(dpk_yaml_get(y, node, "storage"), what, &storage))) return status;
  DLTensor *d = &s->templ[i];
  d->device.device_type = kDLCPU;
  d->ndim = t->decl.ndim;
  d->dtype = t->decl.dtype;
  d->shape = t->decl.shape;
  if (strcmp(storage, "input") == 0 || strcmp(storage, "output") == 0) {
    bool in = storage[0] == 'i';
    size_t n = in ? s->num_inputs : s->num_outputs;
    const dpk_tensor_decl_t *sig = in ? s->inputs : s->outputs;
    snprintf(what, sizeof what, "tensor '%s' field 'index'", t->decl.name);
    if ((status = dpk_yaml_uint(dpk_yaml_get(y, node, "index"), what, &t->where))) return status;
    if (t->where >= n)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is %llu but the manifest has %zu %ss", what,
                      (unsigned long long)t->where, n, storage);
    sig += t->where;
    size_t *slot = &s->io[(in ? 0 : s->num_inputs) + t->where];
    if (*slot != (size_t)-1)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s '%s' has two tensors (%zu and %zu)", storage, sig->name, *slot,
                      i);
    *slot = i;
    t->storage = in ? ST_INPUT : ST_OUTPUT;
    snprintf(what, sizeof what, "tensor %zu ('%s')", i, t->decl.name);
    if (strcmp(sig->name, t->decl.name) != 0)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is %s %llu, which the manifest calls '%s'", what, storage,
                      (unsigned long long)t->where, sig->name);
    if (!same_type(sig, t->decl.dtype, t->decl.ndim, t->decl.shape))
      return type_mismatch(what, &t->decl, sig->dtype, sig->ndim, sig->shape,
                           s->plan_io ? "the manifest's at the plan's sizes" : "the manifest's");
  } else if (strcmp(storage, "param") == 0) {
    t->storage = ST_PARAM;
    const DLTensor *p;
    int rc = args->services->import_tensor(args->ctx, t->decl.name, &p); /* the message is set */
    if (rc) return dpk_status_from_rc(rc);
    snprintf(what, sizeof what, "param tensor '%s'", t->decl.name);
    if (!same_type(&t->decl, p->dtype, p->ndim, p->shape))
      return type_mismatch(what, &t->decl, p->dtype, p->ndim, p->shape, "the imported tensor");
    d->data = p->data;
  } else if (strcmp(storage, "arena") == 0) {
    t->storage = ST_ARENA;
    snprintf(what, sizeof what, "tensor '%s' field 'offset'", t->decl.name);
    if ((status = dpk_yaml_uint(dpk_yaml_get(y, node, "offset"), what, &t->where))) return status;
    if (t->where % 64)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s %llu is not a multiple of 64", what,
                      (unsigned long long)t->where);
    if (t->where > s->arena_bytes || nbytes > s->arena_bytes - t->where)
      return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "arena tensor '%s' ends at %llu but arena_bytes is %llu", t->decl.name,
                      (unsigned long long)(t->where + nbytes), (unsigned long long)s->arena_bytes);
  } else {
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is '%s' (known: input, output, param, arena)", what, storage);
  }
  return DPK_OK;
}

static dpk_status_t parse_calls(graph_state *s, const dpk_kind_load_args *args, yaml_node_t *calls) {
  dpk_yaml_t *y = &s->yaml;
  s->num_calls = dpk_yaml_len(calls);
  for (size_t c = 0; c < s->num_calls; c++) s->num_args += dpk_yaml_len(dpk_yaml_get(y, dpk_yaml_item(y, calls, c), "args"));
  s->calls = calloc(s->num_calls ? s->num_calls : 1, sizeof *s->calls);
  s->args = calloc(s->num_args ? s->num_args : 1, sizeof *s->args);
  s->codes = calloc(s->num_args ? s->num_args : 1, sizeof *s->codes);
  if (!s->calls || !s->args || !s->codes) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  size_t next = 0;
  for (size_t c = 0; c < s->num_calls; c++) {
    yaml_node_t *node = dpk_yaml_item(y, calls, c);
    gcall *call = &s->calls[c];
    char what[256];
    snprintf(what, sizeof what, "calls[%zu] field 'func'", c);
    dpk_status_t status = dpk_yaml_str(dpk_yaml_get(y, node, "func"), what, &call->func);
    if (status) return status;
    yaml_node_t *list = dpk_yaml_get(y, node, "args");
    snprintf(what, sizeof what, "call %zu (%s) field 'args'", c, call->func);
    if (!dpk_yaml_is_seq(list))
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a sequence of tensor indices", what);
    call->first = next;
    call->nargs = dpk_yaml_len(list);
    for (size_t a = 0; a < call->nargs; a++, next++) {
      uint64_t v;
      if ((status = dpk_yaml_uint(dpk_yaml_item(y, list, a), what, &v))) return status;
      if (v >= s->num_tensors)
        return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "%s: argument %zu is tensor %llu but the graph has %zu tensors", what,
                        a, (unsigned long long)v, s->num_tensors);
      s->args[next] = (size_t)v;
      s->codes[next] = DPK_TYPE_TENSOR;
    }
    if (args->services->import_function(args->ctx, call->func, &call->fn, &call->resource)) return DPK_STATUS_NOT_FOUND;
  }
  return DPK_OK;
}

static void graph_free(void *state);

static dpk_status_t parse(graph_state *s, const dpk_kind_load_args *args) {
  if (!args->payload) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "a graph module needs a payload");
  dpk_status_t status = dpk_yaml_parse(args->payload, args->payload_size, "the graph payload", &s->yaml);
  if (status) return status;
  dpk_yaml_t *y = &s->yaml;
  yaml_node_t *root = dpk_yaml_root(y);
  int64_t version;
  if ((status = dpk_yaml_int(dpk_yaml_get(y, root, "version"), "field 'version'", &version))) return status;
  if (version != 1)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "graph payload version %lld is not supported (this runtime reads 1)",
                    (long long)version);
  if ((status = dpk_yaml_uint(dpk_yaml_get(y, root, "arena_bytes"), "field 'arena_bytes'", &s->arena_bytes)))
    return status;
  yaml_node_t *tensors = dpk_yaml_get(y, root, "tensors"), *calls = dpk_yaml_get(y, root, "calls");
  if (!dpk_yaml_is_seq(tensors) || !dpk_yaml_is_seq(calls))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "fields 'tensors' and 'calls' must be sequences");
  s->num_tensors = dpk_yaml_len(tensors);
  s->tensors = calloc(s->num_tensors ? s->num_tensors : 1, sizeof *s->tensors);
  s->templ = calloc(s->num_tensors ? s->num_tensors : 1, sizeof *s->templ);
  s->io = malloc((s->num_inputs + s->num_outputs + 1) * sizeof *s->io);
  if (!s->tensors || !s->templ || !s->io) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < s->num_inputs + s->num_outputs; i++) s->io[i] = (size_t)-1;
  for (size_t i = 0; i < s->num_tensors; i++)
    if ((status = parse_tensor(s, args, i, dpk_yaml_item(y, tensors, i)))) return status;
  for (size_t i = 0; i < s->num_inputs + s->num_outputs; i++) {
    if (s->io[i] == (size_t)-1) {
      bool in = i < s->num_inputs;
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "the graph has no tensor for %s '%s'", in ? "input" : "output",
                      in ? s->inputs[i].name : s->outputs[i - s->num_inputs].name);
    }
  }
  return parse_calls(s, args, calls);
}

/* A plan's graph runs the signature with each dynamic axis at the plan's size. */
static dpk_status_t plan_signature(graph_state *s, const dpk_package_t *pkg, size_t plan) {
  size_t n = s->num_inputs + s->num_outputs, axes = 0;
  for (size_t i = 0; i < n; i++) axes += (size_t)(i < s->num_inputs ? pkg->inputs[i] : pkg->outputs[i - s->num_inputs]).ndim;
  s->plan_io = calloc(n ? n : 1, sizeof *s->plan_io);
  s->plan_shapes = calloc(axes ? axes : 1, sizeof *s->plan_shapes);
  if (!s->plan_io || !s->plan_shapes) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  int64_t *shape = s->plan_shapes;
  for (size_t i = 0; i < n; i++) {
    dpk_tensor_decl_t *d = &s->plan_io[i];
    *d = i < s->num_inputs ? pkg->inputs[i] : pkg->outputs[i - s->num_inputs];
    dpk_package_plan_shape(pkg, plan, d, shape);
    d->shape = shape;
    shape += d->ndim;
  }
  s->inputs = s->plan_io;
  s->outputs = s->plan_io + s->num_inputs;
  return DPK_OK;
}

static int graph_load(const dpk_kind_load_args *args, void **out_state) {
  *out_state = NULL;
  graph_state *s = calloc(1, sizeof *s);
  if (!s) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  const dpk_package_t *pkg = dpk_ctx_package(args->ctx);
  s->module = args->module_name;
  s->num_inputs = pkg->num_inputs;
  s->num_outputs = pkg->num_outputs;
  s->inputs = pkg->inputs;
  s->outputs = pkg->outputs;
  pthread_mutex_init(&s->lock, NULL);
  size_t plan = dpk_package_plan_of(pkg, (size_t)(dpk_ctx_module(args->ctx) - pkg->modules));
  dpk_status_t status = pkg->num_dims && plan != (size_t)-1 ? plan_signature(s, pkg, plan) : DPK_OK;
  if (!status) status = parse(s, args);
  if (status) {
    graph_free(s);
    return status;
  }
  *out_state = s;
  return 0;
}

static int graph_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  *out_fn = NULL;
  *out_resource = NULL;
  if (strcmp(name, "main") != 0) return DPK_STATUS_NOT_FOUND;
  *out_fn = dpk_graph_main;
  *out_resource = state;
  return 0;
}

static void graph_free(void *state) {
  graph_state *s = state;
  if (!s) return;
  dpk_graph_free_pool(s);
  for (size_t i = 0; s->tensors && i < s->num_tensors; i++) free(s->tensors[i].decl.shape);
  free(s->tensors);
  free(s->templ);
  free(s->calls);
  free(s->args);
  free(s->codes);
  free(s->io);
  free(s->plan_io);
  free(s->plan_shapes);
  pthread_mutex_destroy(&s->lock);
  dpk_yaml_free(&s->yaml);
  free(s);
}

const dpk_kind dpk_kind_graph = {"graph", DPK_ABI_VERSION, graph_load, graph_get_function, graph_free, NULL};
