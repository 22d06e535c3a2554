/* shape.h: shapes and caller tensors (shape.c). Not installed. */
#ifndef DPK_SHAPE_H
#define DPK_SHAPE_H

#include <stdbool.h>

#include "dpk.h"

struct dpk_tensor_decl; /* manifest.h */

/* Product of the dims into *out_numel; false (nothing written) on overflow
 * or a negative dim. */
bool dpk_shape_numel(int32_t ndim, const int64_t *shape, uint64_t *out_numel);
/* "[1, 64]" into `buffer` (truncated to capacity - 1 characters); returns
 * buffer ("" if capacity is 0). */
const char *dpk_shape_str(int32_t ndim, const int64_t *shape, char *buffer, size_t capacity);
/* "[1..64, 784]": each axis "lo..hi", or one number where lo == hi (a
 * static shape prints as dpk_shape_str does); into `buffer` as
 * dpk_shape_str. */
const char *dpk_shape_range_str(int32_t ndim, const int64_t *lo, const int64_t *hi, char *buffer, size_t capacity);
/* Check that `tensor` is a CPU, compact row-major tensor of exactly `decl`'s
 * dtype and shape; INVALID_ARGUMENT "<role> 'x' has shape [1, 63] but the model
 * expects float32[1, 64]". */
dpk_status_t dpk_check_tensor(const DLTensor *tensor, const char *role, const struct dpk_tensor_decl *decl);

#endif /* DPK_SHAPE_H */
