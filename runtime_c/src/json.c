/* json.c: the `json` module kind: a region of the model graph serialized as
 * JSON (docs/format.md, "JSON payload"), interpreted with the runtime's own
 * float32 kernels (kernels/); the ops' shape rules are in json_ops.c.
 *
 * load parses and checks the whole payload (ops, names, shapes, workspace
 * layout) and builds a plan: one step per node, each with a kernel and its
 * operands pre-resolved. A weight operand is a data pointer fixed at load;
 * every other operand is (argument slot, byte offset), so a call only checks
 * its arguments and runs the steps: no parsing, lookup or allocation. The
 * plan is immutable after load, so calls are thread-safe.
 *
 * The function's arguments: the `inputs` tensors, the `outputs` tensors,
 * then, if workspace_bytes > 0, a uint8 tensor of at least workspace_bytes
 * that holds the intermediates at their offsets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "json_plan.h"
#include "kinds.h"
#include "shape.h"
#include "yamltree.h"

#define JSON_VERSION 1
#define WORKSPACE_ALIGN 64
#define MAX_ELEMENTS (INT64_C(1) << 58) /* keeps every byte count far from overflow */

typedef struct json_arg {
  char *name;
  int32_t ndim;
  int64_t shape[DPK_JSON_MAX_DIMS];
} json_arg; /* every argument tensor is float32 */

typedef struct json_module {
  char *function;
  int num_inputs, num_outputs, num_args; /* num_args counts the workspace */
  json_arg *args;                        /* inputs, then outputs */
  uint64_t workspace_bytes;
  size_t num_steps;
  dpk_json_step *steps;
} json_module;

static void module_free(json_module *m) {
  if (!m) return;
  if (m->args)
    for (int i = 0; i < m->num_inputs + m->num_outputs; i++) free(m->args[i].name);
  free(m->args);
  free(m->function);
  free(m->steps);
  free(m);
}

/* ---- small helpers --------------------------------------------------------- */

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = malloc(n);
  if (copy) memcpy(copy, s, n);
  return copy;
}

static bool is_float32(DLDataType t) { return t.code == kDLFloat && t.bits == 32 && t.lanes == 1; }

/* ---- load ------------------------------------------------------------------ */

typedef enum { ROLE_INPUT, ROLE_OUTPUT, ROLE_INTERMEDIATE } json_role;

/* A tensor of the function (not a weight), while loading. */
typedef struct json_tensor {
  const char *name; /* borrowed from the document */
  json_role role;
  dpk_json_shape shape;
  dpk_json_ref ref;
  uint64_t nbytes;
  int64_t written_by, last_read; /* node indices; -1 if none */
} json_tensor;

typedef struct json_loader {
  const dpk_kind_load_args *args;
  dpk_yaml_t yaml;
  json_tensor *tensors;
  size_t num_tensors;
  json_module *module;
} json_loader;

static json_tensor *find_tensor(json_loader *L, const char *name) {
  for (size_t i = 0; i < L->num_tensors; i++)
    if (strcmp(L->tensors[i].name, name) == 0) return &L->tensors[i];
  return NULL;
}

static dpk_status_t parse_shape(json_loader *L, yaml_node_t *node, const char *what, dpk_json_shape *out) {
  size_t rank = dpk_yaml_len(node);
  if (!dpk_yaml_is_seq(node) || rank > DPK_JSON_MAX_DIMS)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a list of at most %d sizes", what, DPK_JSON_MAX_DIMS);
  out->ndim = (int32_t)rank;
  int64_t count = 1;
  char item[200];
  for (size_t d = 0; d < rank; d++) {
    snprintf(item, sizeof item, "%s[%zu]", what, d);
    dpk_status_t status = dpk_yaml_int(dpk_yaml_item(&L->yaml, node, d), item, &out->shape[d]);
    if (status) return status;
    if (out->shape[d] < 1 || out->shape[d] > MAX_ELEMENTS / count)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "%s is %lld; sizes must be >= 1 and the tensor under 2^58 elements", item,
                      (long long)out->shape[d]);
    count *= out->shape[d];
  }
  return DPK_OK;
}

/* A {name?, dtype, shape[, offset]} mapping; `name` is NULL for intermediates
 * (the key is the name). */
static dpk_status_t add_tensor(json_loader *L, yaml_node_t *node, const char *name, const char *what, json_role role,
                               int32_t slot) {
  char field[160];
  dpk_status_t status;
  if (!dpk_yaml_is_map(node)) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a mapping", what);
  if (!name) {
    snprintf(field, sizeof field, "%s.name", what);
    if ((status = dpk_yaml_str(dpk_yaml_get(&L->yaml, node, "name"), field, &name))) return status;
  }
  if (find_tensor(L, name))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: the name '%s' is declared twice", what, name);
  json_tensor *t = &L->tensors[L->num_tensors];
  memset(t, 0, sizeof *t);
  t->name = name;
  t->role = role;
  t->written_by = t->last_read = -1;
  t->ref.slot = slot;

  const char *dtype_name;
  DLDataType dtype;
  snprintf(field, sizeof field, "%s.dtype", what);
  if ((status = dpk_yaml_str(dpk_yaml_get(&L->yaml, node, "dtype"), field, &dtype_name))) return status;
  if ((status = dpk_dtype_parse(dtype_name, field, &dtype))) return status;
  if (!is_float32(dtype))
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "%s ('%s') is %s; the json kind computes in float32 only", what, name,
                    dtype_name);
  snprintf(field, sizeof field, "%s.shape", what);
  if ((status = parse_shape(L, dpk_yaml_get(&L->yaml, node, "shape"), field, &t->shape))) return status;
  t->nbytes = (uint64_t)dpk_json_count(t->shape.ndim, t->shape.shape) * sizeof(float);

  if (role == ROLE_INTERMEDIATE) {
    snprintf(field, sizeof field, "%s.offset", what);
    if ((status = dpk_yaml_uint(dpk_yaml_get(&L->yaml, node, "offset"), field, &t->ref.offset))) return status;
    if (t->ref.offset % WORKSPACE_ALIGN)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is %llu, not a multiple of %d", field,
                      (unsigned long long)t->ref.offset, WORKSPACE_ALIGN);
    const uint64_t ws = L->module->workspace_bytes;
    if (t->ref.offset > ws || t->nbytes > ws - t->ref.offset)
      return dpk_fail(DPK_STATUS_OUT_OF_RANGE,
                      "intermediate '%s' (%llu bytes at offset %llu) ends past the workspace (workspace_bytes %llu)",
                      name, (unsigned long long)t->nbytes, (unsigned long long)t->ref.offset, (unsigned long long)ws);
  } else {
    json_arg *arg = &L->module->args[slot];
    if (!(arg->name = dup_str(name))) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    arg->ndim = t->shape.ndim;
    memcpy(arg->shape, t->shape.shape, sizeof arg->shape);
  }
  L->num_tensors++;
  return DPK_OK;
}

/* The signature: inputs, outputs, workspace and intermediates. */
static dpk_status_t parse_tensors(json_loader *L, yaml_node_t *root) {
  json_module *m = L->module;
  yaml_node_t *inputs = dpk_yaml_get(&L->yaml, root, "inputs");
  yaml_node_t *outputs = dpk_yaml_get(&L->yaml, root, "outputs");
  yaml_node_t *inter = dpk_yaml_get(&L->yaml, root, "intermediates");
  yaml_node_t *ws = dpk_yaml_get(&L->yaml, root, "workspace_bytes");
  if (!dpk_yaml_is_seq(inputs)) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'inputs' must be a list");
  if (!dpk_yaml_is_seq(outputs) || dpk_yaml_len(outputs) == 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'outputs' must be a non-empty list");
  if (inter && !dpk_yaml_is_map(inter))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'intermediates' must be a mapping");
  dpk_status_t status;
  if (ws && (status = dpk_yaml_uint(ws, "field 'workspace_bytes'", &m->workspace_bytes))) return status;

  const size_t ni = dpk_yaml_len(inputs), no = dpk_yaml_len(outputs), nt = dpk_yaml_map_len(inter);
  if (ni + no > 65536)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%zu inputs and outputs is too many (at most 65536)", ni + no);
  m->num_inputs = (int)ni;
  m->num_outputs = (int)no;
  m->num_args = (int)(ni + no) + (m->workspace_bytes > 0);
  m->args = calloc(ni + no, sizeof *m->args);
  L->tensors = calloc(ni + no + nt, sizeof *L->tensors);
  if (!m->args || !L->tensors)
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu tensors", ni + no + nt);

  char what[160];
  for (size_t i = 0; i < ni; i++) {
    snprintf(what, sizeof what, "inputs[%zu]", i);
    if ((status = add_tensor(L, dpk_yaml_item(&L->yaml, inputs, i), NULL, what, ROLE_INPUT, (int32_t)i))) return status;
  }
  for (size_t i = 0; i < no; i++) {
    snprintf(what, sizeof what, "outputs[%zu]", i);
    if ((status = add_tensor(L, dpk_yaml_item(&L->yaml, outputs, i), NULL, what, ROLE_OUTPUT, (int32_t)(ni + i))))
      return status;
  }
  for (size_t i = 0; i < nt; i++) {
    const char *name = dpk_yaml_map_key(&L->yaml, inter, i);
    if (!name) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "intermediates: key %zu is not a string", i);
    snprintf(what, sizeof what, "intermediates.%.100s", name);
    if ((status = add_tensor(L, dpk_yaml_map_value(&L->yaml, inter, i), name, what, ROLE_INTERMEDIATE,
                             (int32_t)(ni + no))))
      return status;
  }
  return DPK_OK;
}

/* A node input: a tensor of the function, or a weight from the imports. */
static dpk_status_t resolve_input(json_loader *L, size_t index, const char *where, const char *name,
                                  dpk_json_shape *out_shape, dpk_json_ref *out_ref) {
  json_tensor *t = find_tensor(L, name);
  if (t) {
    if (t->role != ROLE_INPUT && t->written_by < 0)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s reads '%s' before any node writes it", where, name);
    t->last_read = (int64_t)index;
    *out_shape = t->shape;
    *out_ref = t->ref;
    return DPK_OK;
  }
  const DLTensor *w = NULL;
  int rc = L->args->services->import_tensor(L->args->ctx, name, &w);
  if (rc && rc != DPK_STATUS_NOT_FOUND) /* a kind's get_tensor failed: its message, in context */
    return dpk_fail_context(dpk_status_from_rc(rc), "%s: weight '%s'", where, name);
  if (rc || !w)
    return dpk_fail(DPK_STATUS_NOT_FOUND,
                    "%s: input '%s' is not an input, output or intermediate of function '%s', nor a weight in the "
                    "module's imports",
                    where, name, L->module->function);
  if (!is_float32(w->dtype))
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "%s: weight '%s' is %s; the json kind computes in float32 only", where,
                    name, dpk_dtype_name(w->dtype));
  if (w->ndim < 0 || w->ndim > DPK_JSON_MAX_DIMS || w->strides || !w->data)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: weight '%s' must be compact with at most %d dimensions", where,
                    name, DPK_JSON_MAX_DIMS);
  out_shape->ndim = w->ndim;
  for (int32_t d = 0; d < w->ndim; d++) out_shape->shape[d] = w->shape[d];
  out_ref->slot = -1;
  out_ref->offset = 0;
  out_ref->weight = (const float *)((const char *)w->data + w->byte_offset);
  return DPK_OK;
}

static dpk_status_t parse_node(json_loader *L, size_t index, yaml_node_t *node, dpk_json_step *step) {
  char what[160], where[160], sa[200], sb[200];
  dpk_status_t status;
  const char *op, *output;
  if (!dpk_yaml_is_map(node)) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "nodes[%zu] must be a mapping", index);
  snprintf(what, sizeof what, "nodes[%zu].op", index);
  if ((status = dpk_yaml_str(dpk_yaml_get(&L->yaml, node, "op"), what, &op))) return status;
  const dpk_json_op *spec = dpk_json_find_op(op);
  if (!spec)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED,
                    "node %zu: op '%s' is not implemented by the json kind (it implements: %s)", index, op,
                    dpk_json_op_names);
  snprintf(where, sizeof where, "node %zu (%s)", index, op);

  yaml_node_t *inputs = dpk_yaml_get(&L->yaml, node, "inputs");
  const size_t n_in = dpk_yaml_len(inputs);
  if (!dpk_yaml_is_seq(inputs) || n_in < (size_t)spec->min_inputs || n_in > (size_t)spec->max_inputs)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: 'inputs' must list %d to %d tensor names, got %zu", where,
                    spec->min_inputs, spec->max_inputs, n_in);
  yaml_node_t *attrs = dpk_yaml_get(&L->yaml, node, "attrs");
  if (attrs && !dpk_yaml_is_map(attrs))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: 'attrs' must be a mapping", where);

  dpk_json_shape in[DPK_JSON_MAX_INPUTS];
  for (size_t j = 0; j < n_in; j++) {
    const char *name;
    snprintf(what, sizeof what, "nodes[%zu].inputs[%zu]", index, j);
    if ((status = dpk_yaml_str(dpk_yaml_item(&L->yaml, inputs, j), what, &name))) return status;
    if ((status = resolve_input(L, index, where, name, &in[j], &step->in[j]))) return status;
  }
  step->num_inputs = (int)n_in;

  snprintf(what, sizeof what, "nodes[%zu].output", index);
  if ((status = dpk_yaml_str(dpk_yaml_get(&L->yaml, node, "output"), what, &output))) return status;
  json_tensor *t = find_tensor(L, output);
  if (!t || t->role == ROLE_INPUT)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: output '%s' is not declared in 'outputs' or 'intermediates'",
                    where, output);
  if (t->written_by >= 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: output '%s' is already written by node %lld", where, output,
                    (long long)t->written_by);
  t->written_by = (int64_t)index;
  step->out = t->ref;

  dpk_json_node ctx = {&L->yaml, attrs, where};
  dpk_json_shape result;
  memset(&result, 0, sizeof result);
  if ((status = spec->build(&ctx, in, (int)n_in, step, &result))) return status;
  if (result.ndim != t->shape.ndim || memcmp(result.shape, t->shape.shape, (size_t)result.ndim * sizeof(int64_t)) != 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: output '%s' is declared %s but the op gives %s", where, output,
                    dpk_shape_str(t->shape.ndim, t->shape.shape, sa, sizeof sa),
                    dpk_shape_str(result.ndim, result.shape, sb, sizeof sb));
  return DPK_OK;
}

/* Every output written; no two intermediates share bytes while both live. */
static dpk_status_t check_plan(json_loader *L) {
  for (size_t i = 0; i < L->num_tensors; i++) {
    const json_tensor *a = &L->tensors[i];
    if (a->role == ROLE_OUTPUT && a->written_by < 0)
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "output '%s' is never written by a node", a->name);
    if (a->role != ROLE_INTERMEDIATE || a->written_by < 0) continue;
    const int64_t a_end = a->last_read > a->written_by ? a->last_read : a->written_by;
    for (size_t j = i + 1; j < L->num_tensors; j++) {
      const json_tensor *b = &L->tensors[j];
      if (b->role != ROLE_INTERMEDIATE || b->written_by < 0) continue;
      const int64_t b_end = b->last_read > b->written_by ? b->last_read : b->written_by;
      const bool live_together = a->written_by <= b_end && b->written_by <= a_end;
      const bool share_bytes =
          a->ref.offset < b->ref.offset + b->nbytes && b->ref.offset < a->ref.offset + a->nbytes;
      if (live_together && share_bytes)
        return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                        "intermediates '%s' (bytes %llu..%llu, nodes %lld..%lld) and '%s' (bytes %llu..%llu, nodes "
                        "%lld..%lld) overlap in the workspace while both are live",
                        a->name, (unsigned long long)a->ref.offset, (unsigned long long)(a->ref.offset + a->nbytes),
                        (long long)a->written_by, (long long)a_end, b->name, (unsigned long long)b->ref.offset,
                        (unsigned long long)(b->ref.offset + b->nbytes), (long long)b->written_by, (long long)b_end);
    }
  }
  return DPK_OK;
}

static dpk_status_t parse_module(json_loader *L) {
  const dpk_kind_load_args *args = L->args;
  if (!args->payload || args->payload_size == 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "has no payload (a json module needs one)");
  dpk_status_t status = dpk_yaml_parse(args->payload, args->payload_size, "the json payload", &L->yaml);
  if (status) return status;
  yaml_node_t *root = dpk_yaml_root(&L->yaml);
  if (!dpk_yaml_is_map(root)) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "the json payload must be an object");

  int64_t version;
  if ((status = dpk_yaml_int(dpk_yaml_get(&L->yaml, root, "version"), "field 'version'", &version))) return status;
  if (version > JSON_VERSION)
    return dpk_fail(DPK_STATUS_UNIMPLEMENTED, "json payload version %lld is newer than this runtime's (%d)",
                    (long long)version, JSON_VERSION);
  if (version < 1)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "json payload version %lld is not valid", (long long)version);

  const char *function;
  if ((status = dpk_yaml_str(dpk_yaml_get(&L->yaml, root, "function"), "field 'function'", &function))) return status;
  if (!(L->module->function = dup_str(function))) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if ((status = parse_tensors(L, root))) return status;

  yaml_node_t *nodes = dpk_yaml_get(&L->yaml, root, "nodes");
  const size_t n = dpk_yaml_len(nodes);
  if (!dpk_yaml_is_seq(nodes) || n == 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "field 'nodes' must be a non-empty list");
  if (!(L->module->steps = calloc(n, sizeof *L->module->steps)))
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu nodes", n);
  L->module->num_steps = n;
  for (size_t i = 0; i < n; i++)
    if ((status = parse_node(L, i, dpk_yaml_item(&L->yaml, nodes, i), &L->module->steps[i]))) return status;
  return check_plan(L);
}

static int json_load(const dpk_kind_load_args *args, void **out_state) {
  *out_state = NULL;
  json_loader L;
  memset(&L, 0, sizeof L);
  L.args = args;
  dpk_status_t status = DPK_OK;
  if (!(L.module = calloc(1, sizeof *L.module)))
    status = dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    status = parse_module(&L);
  free(L.tensors);
  dpk_yaml_free(&L.yaml); /* the plan keeps no pointer into the document */
  if (status) {
    module_free(L.module);
    return dpk_fail_context(status, "json module '%s'", args->module_name ? args->module_name : "?");
  }
  *out_state = L.module;
  return DPK_OK;
}

/* ---- calls ----------------------------------------------------------------- */

static dpk_status_t check_arg(const json_module *m, int i, const dpk_value *args, const int *type_codes) {
  const json_arg *want = &m->args[i];
  const char *role = i < m->num_inputs ? "input" : "output";
  const DLTensor *t = type_codes[i] == DPK_TYPE_TENSOR ? args[i].v_tensor : NULL;
  char sa[200], sb[200];
  if (!t || !t->data)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "json function '%s': argument %d (%s '%s') must be a tensor with data",
                    m->function, i, role, want->name);
  bool ok = is_float32(t->dtype) && t->ndim == want->ndim;
  for (int32_t d = 0; ok && d < want->ndim; d++) ok = t->shape[d] == want->shape[d];
  if (ok && t->strides) { /* explicit strides must describe the compact layout */
    int64_t expect = 1;
    for (int32_t d = want->ndim - 1; ok && d >= 0; d--) {
      ok = want->shape[d] == 1 || t->strides[d] == expect;
      expect *= want->shape[d];
    }
  }
  if (!ok)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT,
                    "json function '%s': argument %d (%s '%s') must be compact float32%s, got %s%s", m->function, i,
                    role, want->name, dpk_shape_str(want->ndim, want->shape, sa, sizeof sa), dpk_dtype_name(t->dtype),
                    dpk_shape_str(t->ndim < 0 || t->ndim > DPK_JSON_MAX_DIMS ? 0 : t->ndim, t->shape, sb, sizeof sb));
  return DPK_OK;
}

static const float *ref_data(const dpk_json_ref *ref, const dpk_value *args) {
  if (ref->slot < 0) return ref->weight;
  const DLTensor *t = args[ref->slot].v_tensor;
  return (const float *)((const char *)t->data + t->byte_offset + ref->offset);
}

static int json_call(const dpk_value *args, const int *type_codes, int nargs, dpk_value *ret, int *ret_type_code,
                     void *resource) {
  (void)ret;
  const json_module *m = resource;
  if (nargs != m->num_args)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT,
                    "json function '%s' takes %d arguments (%d inputs, %d outputs%s), got %d", m->function,
                    m->num_args, m->num_inputs, m->num_outputs, m->workspace_bytes ? ", workspace" : "", nargs);
  const int tensors = m->num_inputs + m->num_outputs;
  for (int i = 0; i < tensors; i++) {
    dpk_status_t status = check_arg(m, i, args, type_codes);
    if (status) return status;
  }
  if (m->workspace_bytes) {
    const DLTensor *w = type_codes[tensors] == DPK_TYPE_TENSOR ? args[tensors].v_tensor : NULL;
    if (!w || !w->data || w->dtype.code != kDLUInt || w->dtype.bits != 8 || w->ndim != 1 ||
        (uint64_t)w->shape[0] < m->workspace_bytes)
      return dpk_fail(DPK_STATUS_INVALID_ARGUMENT,
                      "json function '%s': the last argument must be a uint8 workspace of at least %llu bytes",
                      m->function, (unsigned long long)m->workspace_bytes);
  }
  for (size_t s = 0; s < m->num_steps; s++) {
    const dpk_json_step *step = &m->steps[s];
    const float *in[DPK_JSON_MAX_INPUTS] = {NULL, NULL, NULL};
    for (int j = 0; j < step->num_inputs; j++) in[j] = ref_data(&step->in[j], args);
    step->kernel(step, in, (float *)ref_data(&step->out, args));
  }
  if (ret_type_code) *ret_type_code = DPK_TYPE_NULL;
  return DPK_OK;
}

static int json_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  json_module *m = state;
  if (!m || !name || strcmp(name, m->function) != 0) return DPK_STATUS_NOT_FOUND;
  *out_fn = json_call;
  *out_resource = m;
  return DPK_OK;
}

static void json_free(void *state) { module_free(state); }

const dpk_kind dpk_kind_json = {"json", DPK_ABI_VERSION, json_load, json_get_function, json_free, NULL};
