/* json_ops.c: the ops of the `json` kind: for each, the shape rule checked
 * at load (output shape from input shapes and attributes, NumPy/ONNX
 * semantics) and the step it becomes (a kernel of kernels/ and its sizes).
 * Adding an op is one builder, one run function and one table row. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "json_plan.h"
#include "kernels/kernels.h"
#include "shape.h"
#include "yamltree.h"

/* ---- kernels as plan steps ------------------------------------------------- */

static void run_dense(const dpk_json_step *s, const float *const *in, float *out) {
  dpk_k_dense(in[0], in[1], s->has_bias ? in[2] : NULL, out, s->m, s->k, s->n);
}
static void run_matmul(const dpk_json_step *s, const float *const *in, float *out) {
  dpk_k_matmul_batched(in[0], in[1], out, s->m, s->k, s->n, &s->bcast);
}
static void run_binary(const dpk_json_step *s, const float *const *in, float *out) {
  dpk_k_binary(s->binop, &s->bcast, in[0], in[1], out);
}
static void run_relu(const dpk_json_step *s, const float *const *in, float *out) { dpk_k_relu(in[0], out, s->n); }
static void run_sigmoid(const dpk_json_step *s, const float *const *in, float *out) { dpk_k_sigmoid(in[0], out, s->n); }
static void run_tanh(const dpk_json_step *s, const float *const *in, float *out) { dpk_k_tanh(in[0], out, s->n); }
static void run_softmax(const dpk_json_step *s, const float *const *in, float *out) {
  dpk_k_softmax(in[0], out, s->m, s->k, s->n);
}
static void run_copy(const dpk_json_step *s, const float *const *in, float *out) {
  memcpy(out, in[0], (size_t)s->n * sizeof *out);
}

/* ---- shape rules and step parameters --------------------------------------- */

/* Every builder has the dpk_json_op.build signature. */
#define BUILDER(NAME)                                                                                   \
  static dpk_status_t build_##NAME(const dpk_json_node *node, const dpk_json_shape *in, int num_in, \
                                   dpk_json_step *step, dpk_json_shape *out)

static dpk_status_t attr_int(const dpk_json_node *node, const char *key, int64_t fallback, int64_t *out_value) {
  yaml_node_t *value = dpk_yaml_get(node->yaml, node->attrs, key);
  if (!value) {
    *out_value = fallback;
    return DPK_OK;
  }
  char what[128];
  snprintf(what, sizeof what, "%s attribute '%s'", node->where, key);
  return dpk_yaml_int(value, what, out_value);
}

/* Normalise `axis` for a rank-`rank` tensor: valid values are -rank ..
 * rank - 1 + end (end = 1: the position after the last axis is allowed, as
 * for flatten); a negative axis counts from the end (axis + rank). */
static dpk_status_t normalise_axis(const dpk_json_node *node, int64_t axis, int32_t rank, int end, int64_t *out_axis) {
  if (axis < -(int64_t)rank || axis >= (int64_t)rank + end)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: axis %lld is out of range for a rank-%d input (%d..%d)",
                    node->where, (long long)axis, (int)rank, -(int)rank, (int)rank - 1 + end);
  *out_axis = axis < 0 ? axis + rank : axis;
  return DPK_OK;
}

BUILDER(dense) {
  const dpk_json_shape *x = &in[0], *w = &in[1];
  char a[200], b[200];
  if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                    "%s: input %s does not fit weight %s (the weight must be [out, in] with in = the input's last "
                    "dimension)",
                    node->where, dpk_shape_str(x->ndim, x->shape, a, sizeof a),
                    dpk_shape_str(w->ndim, w->shape, b, sizeof b));
  if (num_in == 3 && (in[2].ndim != 1 || in[2].shape[0] != w->shape[0]))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: bias %s does not fit weight %s (the bias must be [%lld])",
                    node->where, dpk_shape_str(in[2].ndim, in[2].shape, a, sizeof a),
                    dpk_shape_str(w->ndim, w->shape, b, sizeof b), (long long)w->shape[0]);
  step->kernel = run_dense;
  step->has_bias = num_in == 3;
  step->m = dpk_json_count(x->ndim - 1, x->shape);
  step->k = w->shape[1];
  step->n = w->shape[0];
  *out = *x;
  out->shape[x->ndim - 1] = step->n;
  return DPK_OK;
}

/* numpy.matmul: 1-D operands are promoted to a matrix and the added
 * dimension dropped from the result; leading dimensions broadcast. */
BUILDER(matmul) {
  (void)num_in;
  const dpk_json_shape *a = &in[0], *b = &in[1];
  char sa[200], sb[200];
  if (a->ndim < 1 || b->ndim < 1)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: operands must have at least one dimension", node->where);
  const int64_t m = a->ndim >= 2 ? a->shape[a->ndim - 2] : 1, ka = a->shape[a->ndim - 1];
  const int64_t kb = b->ndim >= 2 ? b->shape[b->ndim - 2] : b->shape[0], n = b->ndim >= 2 ? b->shape[b->ndim - 1] : 1;
  const int a_batch = a->ndim > 2 ? a->ndim - 2 : 0, b_batch = b->ndim > 2 ? b->ndim - 2 : 0;
  int batch_ndim = 0;
  if (ka != kb || dpk_k_bcast_init(a_batch, a->shape, b_batch, b->shape, out->shape, &batch_ndim, &step->bcast) != 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: shapes %s and %s do not fit a matrix product", node->where,
                    dpk_shape_str(a->ndim, a->shape, sa, sizeof sa), dpk_shape_str(b->ndim, b->shape, sb, sizeof sb));
  int32_t nd = batch_ndim; /* <= DPK_JSON_MAX_DIMS - 2: the operands have at most DPK_JSON_MAX_DIMS dimensions */
  if (a->ndim >= 2) out->shape[nd++] = m;
  if (b->ndim >= 2) out->shape[nd++] = n;
  out->ndim = nd;
  step->kernel = run_matmul;
  step->m = m;
  step->k = ka;
  step->n = n;
  return DPK_OK;
}

static dpk_status_t build_binary(const dpk_json_node *node, const dpk_json_shape *in, dpk_json_step *step,
                                 dpk_json_shape *out, dpk_k_binop op) {
  char sa[200], sb[200];
  int ndim = 0;
  if (dpk_k_bcast_init(in[0].ndim, in[0].shape, in[1].ndim, in[1].shape, out->shape, &ndim, &step->bcast) != 0)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: shapes %s and %s do not broadcast", node->where,
                    dpk_shape_str(in[0].ndim, in[0].shape, sa, sizeof sa),
                    dpk_shape_str(in[1].ndim, in[1].shape, sb, sizeof sb));
  out->ndim = ndim;
  step->kernel = run_binary;
  step->binop = op;
  return DPK_OK;
}

#define BINARY_BUILDER(NAME, OP)                  \
  BUILDER(NAME) {                                 \
    (void)num_in;                                 \
    return build_binary(node, in, step, out, OP); \
  }
BINARY_BUILDER(add, DPK_K_ADD)
BINARY_BUILDER(sub, DPK_K_SUB)
BINARY_BUILDER(mul, DPK_K_MUL)
BINARY_BUILDER(div, DPK_K_DIV)

#define UNARY_BUILDER(NAME)                               \
  BUILDER(NAME) {                                         \
    (void)node;                                           \
    (void)num_in;                                         \
    step->kernel = run_##NAME;                            \
    step->n = dpk_json_count(in[0].ndim, in[0].shape);    \
    *out = in[0];                                         \
    return DPK_OK;                                        \
  }
UNARY_BUILDER(relu)
UNARY_BUILDER(sigmoid)
UNARY_BUILDER(tanh)

BUILDER(softmax) {
  (void)num_in;
  int64_t axis;
  dpk_status_t status = attr_int(node, "axis", -1, &axis);
  if (!status) status = normalise_axis(node, axis, in[0].ndim, 0, &axis);
  if (status) return status;
  step->kernel = run_softmax;
  step->m = dpk_json_count((int32_t)axis, in[0].shape);
  step->k = in[0].shape[axis];
  step->n = dpk_json_count(in[0].ndim - (int32_t)axis - 1, in[0].shape + axis + 1);
  *out = in[0];
  return DPK_OK;
}

BUILDER(flatten) {
  (void)num_in;
  int64_t axis;
  dpk_status_t status = attr_int(node, "axis", 1, &axis);
  if (!status) status = normalise_axis(node, axis, in[0].ndim, 1, &axis); /* axis == rank is allowed */
  if (status) return status;
  step->kernel = run_copy;
  step->n = dpk_json_count(in[0].ndim, in[0].shape);
  out->ndim = 2;
  out->shape[0] = dpk_json_count((int32_t)axis, in[0].shape);
  out->shape[1] = dpk_json_count(in[0].ndim - (int32_t)axis, in[0].shape + axis);
  return DPK_OK;
}

BUILDER(reshape) {
  (void)num_in;
  yaml_node_t *shape = dpk_yaml_get(node->yaml, node->attrs, "shape");
  size_t rank = dpk_yaml_len(shape);
  if (!dpk_yaml_is_seq(shape) || rank > DPK_JSON_MAX_DIMS)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: attribute 'shape' must be a list of at most %d integers",
                    node->where, DPK_JSON_MAX_DIMS);
  const int64_t count = dpk_json_count(in[0].ndim, in[0].shape);
  int64_t known = 1; /* product of the given sizes, while it stays <= count */
  int inferred = -1;
  bool fits = true;
  char what[128], sa[200];
  for (size_t d = 0; d < rank; d++) {
    snprintf(what, sizeof what, "%s attribute 'shape[%zu]'", node->where, d);
    dpk_status_t status = dpk_yaml_int(dpk_yaml_item(node->yaml, shape, d), what, &out->shape[d]);
    if (status) return status;
    if (out->shape[d] == -1 && inferred < 0) {
      inferred = (int)d;
    } else if (out->shape[d] < 1) {
      return dpk_fail(DPK_STATUS_FAILED_PRECONDITION,
                      "%s: reshape size %lld is not allowed (sizes >= 1, at most one -1)", node->where,
                      (long long)out->shape[d]);
    } else if (out->shape[d] > count / known) {
      fits = false;
    } else {
      known *= out->shape[d];
    }
  }
  out->ndim = (int32_t)rank;
  if (fits && inferred >= 0 && count % known == 0) out->shape[inferred] = count / known;
  if (!fits || (inferred >= 0 && count % known != 0) || (inferred < 0 && known != count))
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s: cannot reshape %s (%lld elements) to the given shape",
                    node->where, dpk_shape_str(in[0].ndim, in[0].shape, sa, sizeof sa), (long long)count);
  step->kernel = run_copy;
  step->n = count;
  return DPK_OK;
}

static const dpk_json_op ops[] = {
    {"dense", 2, 3, build_dense},     {"matmul", 2, 2, build_matmul},   {"add", 2, 2, build_add},
    {"sub", 2, 2, build_sub},         {"mul", 2, 2, build_mul},         {"div", 2, 2, build_div},
    {"relu", 1, 1, build_relu},       {"sigmoid", 1, 1, build_sigmoid}, {"tanh", 1, 1, build_tanh},
    {"softmax", 1, 1, build_softmax}, {"flatten", 1, 1, build_flatten}, {"reshape", 1, 1, build_reshape},
};
const char dpk_json_op_names[] = "dense, matmul, add, sub, mul, div, relu, sigmoid, tanh, softmax, flatten, reshape";

const dpk_json_op *dpk_json_find_op(const char *name) {
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (strcmp(ops[i].name, name) == 0) return &ops[i];
  return NULL;
}
