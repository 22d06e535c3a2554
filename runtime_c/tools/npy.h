/* npy.h: .npy files (npy.c): version 1/2/3, little-endian, C order, the
 * dtypes of dtype.c. */
#ifndef DPK_NPY_H
#define DPK_NPY_H

#include "dpk.h"

#define DPK_NPY_MAX_DIMS 32

typedef struct dpk_npy {
  DLDataType dtype;
  int32_t ndim;
  int64_t shape[DPK_NPY_MAX_DIMS];
  void *data;    /* owned, 64-aligned */
  size_t nbytes;
} dpk_npy_t;

/* Read `path` into *out_npy. NOT_FOUND (no file), DATA_LOSS (malformed,
 * truncated), UNIMPLEMENTED (big-endian, Fortran order, other dtype). Free
 * with dpk_npy_free (which accepts a zeroed struct). */
dpk_status_t dpk_npy_read(const char *path, dpk_npy_t *out_npy);
void dpk_npy_free(dpk_npy_t *npy);
/* Write a compact tensor to `path` atomically (a temporary file renamed).
 * NOT_FOUND (cannot create it), INTERNAL (a write or the rename failed),
 * UNIMPLEMENTED (a dtype without a .npy form), INVALID_ARGUMENT (bad shape). */
dpk_status_t dpk_npy_write(const char *path, const DLTensor *tensor);

#endif /* DPK_NPY_H */
