/* plans.h: the run-time side of dynamic shapes (plans.c): the value of
 * each dim read off a run's inputs, the plan those values pick, and a
 * tensor's actual shape. dpk_model_run_dynamic (model.h) is built on them,
 * and so are dpk_model_select_plan and dpk_model_output_shape
 * (model_dims.c). Not installed. Nothing here allocates but dpk_pad_call. */
#ifndef DPK_PLANS_H
#define DPK_PLANS_H

#include <stdbool.h>

#include "dpk.h"
#include "manifest.h"

/* Check `inputs` (the signature's count of them; the array itself not
 * NULL) as dpk_model_run does and write the value of each of the file's
 * dims (package->num_dims entries, DPK_DIMS_MAX at most) into out_values.
 * A static file: exactly dpk_model_run's check of each input. Errors,
 * INVALID_ARGUMENT: a NULL input, a wrong ndim or fixed axis ("input 'x'
 * has shape [3, 5] but the model expects float32[1..64, 784]"), a dynamic
 * axis outside its dim's range ("input 'x' dim 0 (batch) is 100, outside
 * the range 1..64 of 'm.so'"), two axes of one dim that disagree ("input
 * 'mask' dim 0 (batch) is 3 but input 'x' gives batch = 2"), a wrong dtype,
 * device or layout (dpk_check_tensor's messages). */
dpk_status_t dpk_plans_bind(const dpk_model_t *model, const DLTensor *const *inputs, int64_t *out_values);

/* The plan for dim values `values`: the first in manifest order whose size
 * of every dim is >= its value, and == it for a dim with `exact`. A static
 * file: plan 0. INVALID_ARGUMENT if there is none (only an exact dim can
 * cause it): "'m.so' has no plan for seq = 17 (plans: seq 8, 16, 32) and
 * does not pad seq: <exact>". */
dpk_status_t dpk_plans_pick(const dpk_model_t *model, const int64_t *values, size_t *out_plan);

/* The index of the plan dpk_plans_pick would pick, or -1 (no error set). */
long dpk_plans_find(const dpk_package_t *pkg, const int64_t *values);

/* Call plan `plan` (picked for `values`) on the caller's tensors: directly
 * when its sizes are the values, else padded (dpk_pad_call). The plan's
 * status; *out_called as dpk_pad_call's. */
int dpk_plans_call(const dpk_model_t *model, size_t plan, const int64_t *values, const DLTensor *const *inputs,
                   DLTensor *const *outputs, bool *out_called);

/* chunks.c: a size between plans may run as chunks along a padded dim
 * that is axis 0 of every tensor naming it (a chunk is then a slice of the
 * caller's buffers, no copy): the largest plan size below the value, run
 * exactly, then the rest, when the two runs' plan costs add up to less than
 * the padded run's. dpk_chunks_dim: the first dim that could be cut for
 * `values` in `plan` (its size there is not the value), else -1. */
int dpk_chunks_dim(const dpk_package_t *pkg, size_t plan, const int64_t *values);
/* The first chunk of a run with `values` along dim `k`: its plan and its
 * rows (values[k], and the plan for them all, when cutting does not pay or
 * k is -1). */
void dpk_chunks_first(const dpk_package_t *pkg, int k, const int64_t *values, size_t *out_plan, int64_t *out_rows);
/* Run every chunk; the first failing chunk's status (0: OK). *out_called:
 * whether any plan was called. Allocates the chunks' tensor headers. */
int dpk_chunks_run(const dpk_model_t *model, int k, const int64_t *values, const DLTensor *const *inputs,
                   DLTensor *const *outputs, bool *out_called);

/* `decl`'s shape (an input or output) for dim values `values`: each
 * dynamic axis at its dim's value; decl->ndim entries into out_shape. */
void dpk_plans_actual_shape(const dpk_tensor_decl_t *decl, const int64_t *values, int64_t *out_shape);

/* pad.c: call plan `plan` on `inputs` whose dims have `values`, smaller
 * than the plan's sizes: the inputs padded with zeros to the plan's shapes,
 * the outputs' actual regions copied to `outputs` (checked by the caller at
 * the actual shapes). The plan's status (0: OK). *out_called: whether the
 * plan was called (false: RESOURCE_EXHAUSTED for the buffers, before any
 * output byte was written). Allocates the padded buffers, freed before it
 * returns. */
int dpk_pad_call(const dpk_model_t *model, size_t plan, const int64_t *values, const DLTensor *const *inputs,
                 DLTensor *const *outputs, bool *out_called);

#endif /* DPK_PLANS_H */
