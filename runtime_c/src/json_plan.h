/*
 * json_plan.h: the plan the `json` kind builds (json.c) and the op table
 * that fills its steps (json_ops.c). Private to libdpk.
 *
 * A plan is an array of steps, one per node. Each step has a kernel and its
 * operands resolved at load: a weight operand is a data pointer, every other
 * operand an (argument slot, byte offset) pair resolved from a call's
 * arguments. Steps are immutable after load.
 */
#ifndef DPK_JSON_PLAN_H
#define DPK_JSON_PLAN_H

#include "dpk.h"
#include "kernels/kernels.h"
#include "yamltree.h"

#define DPK_JSON_MAX_DIMS DPK_K_MAX_DIMS /* rank limit of every tensor */
#define DPK_JSON_MAX_INPUTS 3            /* inputs of one node (dense: x, W, b) */

/* Where an operand's data is: a weight (slot < 0), or `offset` bytes into
 * argument `slot`'s buffer (inputs, outputs, and the workspace). */
typedef struct dpk_json_ref {
  int32_t slot;
  uint64_t offset;
  const float *weight;
} dpk_json_ref;

typedef struct dpk_json_step dpk_json_step;
/* Run one step: in[] are its inputs' data, out its output's. */
typedef void (*dpk_json_kernel)(const dpk_json_step *step, const float *const *in, float *out);

struct dpk_json_step {
  dpk_json_kernel kernel;
  int num_inputs;
  dpk_json_ref in[DPK_JSON_MAX_INPUTS];
  dpk_json_ref out;
  /* dense, matmul: [m, k] x [k, n]; softmax: [outer m, len k, inner n];
   * unary ops and copies: n elements. */
  int64_t m, k, n;
  dpk_k_bcast bcast; /* binary ops: the iteration space; matmul: the batch space */
  dpk_k_binop binop;
  int has_bias;
};

typedef struct dpk_json_shape {
  int32_t ndim;
  int64_t shape[DPK_JSON_MAX_DIMS];
} dpk_json_shape;

/* What an op's builder sees of its node. */
typedef struct dpk_json_node {
  dpk_yaml_t *yaml;
  yaml_node_t *attrs; /* the node's `attrs` mapping, or NULL */
  const char *where;  /* "node 3 (softmax)", for messages */
} dpk_json_node;

typedef struct dpk_json_op {
  const char *name;
  int min_inputs, max_inputs;
  /* Check the input shapes and attributes, fill the step's kernel and
   * parameters, and write the output shape. FAILED_PRECONDITION naming
   * node->where and the shapes when they do not fit the op. */
  dpk_status_t (*build)(const dpk_json_node *node, const dpk_json_shape *in, int num_in, dpk_json_step *step,
                        dpk_json_shape *out_shape);
} dpk_json_op;

/* The op called `name`, or NULL. The table is static. */
const dpk_json_op *dpk_json_find_op(const char *name);
/* "dense, matmul, ...": every op, for messages. */
extern const char dpk_json_op_names[];

/* Elements of a shape (the caller keeps it under 2^63). */
static inline int64_t dpk_json_count(int32_t ndim, const int64_t *shape) {
  int64_t count = 1;
  for (int32_t d = 0; d < ndim; d++) count *= shape[d];
  return count;
}

#endif /* DPK_JSON_PLAN_H */
