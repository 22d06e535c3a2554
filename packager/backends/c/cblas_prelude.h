/* ---- dsopack cblas backend: OpenBLAS through CBLAS ---------------------
 * Pasted once into every model file with cblas kernels (after cgen_prelude.h). */
#ifndef DPK_CBLAS_PRELUDE_H
#define DPK_CBLAS_PRELUDE_H
#include <stdint.h>
#include <string.h>
#include <cblas.h>

/* A dense whose W the file stores in panels of 32 columns (cblas.py, "dense_p") runs a register kernel of
 * DPK_PANEL_ROWS rows of x by two vectors of DPK_PANEL_LANES columns where the target has the registers for
 * it: AVX-512 8 rows x 32 columns (16 zmm accumulators), AVX2 6 rows x 16 (12 ymm; a panel in two halves),
 * aarch64 8 rows x 8 (16 of its 32 NEON registers; four passes per panel). Elsewhere (baseline x86-64)
 * OpenBLAS multiplies each panel. */
#if defined(__AVX512F__)
#define DPK_PANEL_ROWS 8
#define DPK_PANEL_LANES 16
typedef float dpk_panel_vec __attribute__((vector_size(64)));
#elif defined(__AVX2__) && defined(__FMA__)
#define DPK_PANEL_ROWS 6
#define DPK_PANEL_LANES 8
typedef float dpk_panel_vec __attribute__((vector_size(32)));
#elif defined(__aarch64__)
#define DPK_PANEL_ROWS 8
#define DPK_PANEL_LANES 4
typedef float dpk_panel_vec __attribute__((vector_size(16)));
#endif
#ifdef DPK_PANEL_ROWS
/* *v0, *v1 = y[0..n) (n may exceed both lanes), zero past n */
static inline void dpk_panel_get(const float *restrict y, dpk_panel_vec *v0, dpk_panel_vec *v1, int64_t n) {
  float t[2 * DPK_PANEL_LANES] = {0};
  memcpy(t, y, (size_t)(n < 2 * DPK_PANEL_LANES ? n : 2 * DPK_PANEL_LANES) * sizeof(float));
  memcpy(v0, t, sizeof *v0);
  memcpy(v1, t + DPK_PANEL_LANES, sizeof *v1);
}

/* y[0..n) = the first n of v0's then v1's lanes (n may exceed both: the rest is another half's) */
static inline void dpk_panel_put(float *restrict y, dpk_panel_vec v0, dpk_panel_vec v1, int64_t n) {
  if (n >= 2 * DPK_PANEL_LANES) {
    memcpy(y, &v0, sizeof v0);
    memcpy(y + DPK_PANEL_LANES, &v1, sizeof v1);
    return;
  }
  float t[2 * DPK_PANEL_LANES];
  memcpy(t, &v0, sizeof v0);
  memcpy(t + DPK_PANEL_LANES, &v1, sizeof v1);
  memcpy(y, t, (size_t)n * sizeof(float));
}
#endif
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
