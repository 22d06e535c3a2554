/* ---- dsopack cblas backend: OpenBLAS through CBLAS ---------------------
 * Pasted once into every model file with cblas kernels (after cgen_prelude.h). */
#ifndef DPK_CBLAS_PRELUDE_H
#define DPK_CBLAS_PRELUDE_H
#include <stdint.h>
#include <cblas.h>
#if defined(__AVX512F__)
#include <immintrin.h>
typedef float dpk_v16 __attribute__((vector_size(64))); /* the direct conv's vectors: a zmm */
typedef float dpk_v8 __attribute__((vector_size(32)));  /* and a ymm, for rows of 8 */

/* even[m] = x[2m], odd[m] = x[2m + 1] for m < pairs: 16 pairs per two permutes
 * (gcc unrolls the plain loop into scalar moves instead of vectorising it) */
static inline void dpk_deinterleave(const float *restrict x, float *restrict even, float *restrict odd,
                                    int64_t pairs) {
  const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  int64_t m = 0;
  for (; m + 16 <= pairs; m += 16) {
    const __m512 a = _mm512_loadu_ps(x + 2 * m), b = _mm512_loadu_ps(x + 2 * m + 16);
    _mm512_storeu_ps(even + m, _mm512_permutex2var_ps(a, ev, b));
    _mm512_storeu_ps(odd + m, _mm512_permutex2var_ps(a, od, b));
  }
  for (; m < pairs; ++m) {
    even[m] = x[2 * m];
    odd[m] = x[2 * m + 1];
  }
}
#endif
#endif
