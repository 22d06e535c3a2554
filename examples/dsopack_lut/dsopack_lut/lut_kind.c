/* lut_kind.c: module kind `lut`, carried inside model files built with the
 * dsopack-lut backend (or compiled into an application and registered with
 * dpk_register_kind(&dpk_kind_lut, 0)).
 *
 * The payload (dsopack_lut/payload.py has the layout) holds one sampled table
 * per stage; the module's one function applies the stages elementwise:
 *     fn(inputs..., outputs...)   every tensor float32, compact, `numel` elements
 * Load copies and checks everything, so a call does no parsing or allocation.
 * Includes only dpk_abi.h and the C library; everything but the kind table is
 * static. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dpk_abi.h"

#define LUT_MAX 64      /* tensors and stages */
#define LUT_HEADER 96
#define LUT_OK 0
#define LUT_INVALID_ARGUMENT 1
#define LUT_DATA_LOSS 4
#define LUT_UNIMPLEMENTED 5
#define LUT_RESOURCE_EXHAUSTED 6

typedef struct {
  uint32_t src, dst, n;
  float lo, hi, scale; /* scale = (n - 1) / (hi - lo) */
  float *values;       /* n entries, owned */
} lut_stage;

typedef struct {
  const dpk_kind_services *services;
  char function[64];
  uint32_t n_inputs, n_outputs, n_tensors, n_stages;
  uint64_t numel;
  lut_stage stages[LUT_MAX];
} lut_module;

static uint32_t u32_at(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static float f32_at(const uint8_t *p) {
  uint32_t bits = u32_at(p);
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static void lut_free(void *state) {
  lut_module *m = state;
  if (!m) return;
  for (uint32_t i = 0; i < m->n_stages; i++) free(m->stages[i].values);
  free(m);
}

/* Check and copy the stages; 0, or a status after set_error. */
static int read_stages(lut_module *m, const dpk_kind_load_args *args) {
  const char *name = args->module_name;
  const uint8_t *p = args->payload + LUT_HEADER;
  size_t left = args->payload_size - LUT_HEADER;
  unsigned char defined[LUT_MAX] = {0};
  for (uint32_t t = 0; t < m->n_inputs; t++) defined[t] = 1;
  for (uint32_t i = 0; i < m->n_stages; i++) {
    lut_stage *s = &m->stages[i];
    if (left < 24) {
      args->services->set_error("module '%s': lut stage %u is truncated", name, i);
      return LUT_DATA_LOSS;
    }
    s->src = u32_at(p), s->dst = u32_at(p + 4), s->n = u32_at(p + 8);
    s->lo = f32_at(p + 16), s->hi = f32_at(p + 20);
    p += 24, left -= 24;
    if (s->src >= m->n_tensors || s->dst >= m->n_tensors || !defined[s->src] || s->dst < m->n_inputs ||
        defined[s->dst]) {
      args->services->set_error("module '%s': lut stage %u maps tensor %u to %u, which the stages before it do "
                                "not allow (%u inputs, %u tensors)", name, i, s->src, s->dst, m->n_inputs, m->n_tensors);
      return LUT_DATA_LOSS;
    }
    if (s->n < 2 || !(s->lo < s->hi) || s->hi - s->lo > 1e30f) {
      args->services->set_error("module '%s': lut stage %u has %u points over [%g, %g]", name, i, s->n,
                                (double)s->lo, (double)s->hi);
      return LUT_DATA_LOSS;
    }
    if (left / 4 < s->n) {
      args->services->set_error("module '%s': lut stage %u has %u points but only %zu bytes are left", name, i, s->n, left);
      return LUT_DATA_LOSS;
    }
    s->values = malloc((size_t)s->n * sizeof(float));
    if (!s->values) {
      args->services->set_error("module '%s': out of memory", name);
      return LUT_RESOURCE_EXHAUSTED;
    }
    for (uint32_t k = 0; k < s->n; k++) s->values[k] = f32_at(p + 4 * (size_t)k);
    p += 4 * (size_t)s->n, left -= 4 * (size_t)s->n;
    s->scale = (float)(s->n - 1) / (s->hi - s->lo);
    defined[s->dst] = 1;
  }
  for (uint32_t t = m->n_inputs; t < m->n_inputs + m->n_outputs; t++)
    if (!defined[t]) {
      args->services->set_error("module '%s': no lut stage writes output tensor %u", name, t);
      return LUT_DATA_LOSS;
    }
  if (left) {
    args->services->set_error("module '%s': %zu bytes follow the last lut stage", name, left);
    return LUT_DATA_LOSS;
  }
  return LUT_OK;
}

static int lut_load(const dpk_kind_load_args *args, void **out_state) {
  *out_state = NULL;
  const uint8_t *p = args->payload;
  if (!p || args->payload_size < LUT_HEADER || memcmp(p, "DPKLUT0", 7) != 0) {
    args->services->set_error("module '%s': not a lut payload (%zu bytes)", args->module_name, args->payload_size);
    return LUT_DATA_LOSS;
  }
  if (p[7] != '1') {
    args->services->set_error("module '%s': lut payload version %c is newer than this kind (1)", args->module_name, p[7]);
    return LUT_UNIMPLEMENTED;
  }
  lut_module *m = calloc(1, sizeof *m);
  if (!m) {
    args->services->set_error("module '%s': out of memory", args->module_name);
    return LUT_RESOURCE_EXHAUSTED;
  }
  m->services = args->services;
  m->n_inputs = u32_at(p + 8), m->n_outputs = u32_at(p + 12), m->n_tensors = u32_at(p + 16);
  uint32_t n_stages = u32_at(p + 20);
  memcpy(&m->numel, p + 24, 8); /* little-endian hosts only, as dsopack's targets */
  memcpy(m->function, p + 32, 64);
  int rc = LUT_OK;
  if (!m->n_inputs || !m->n_outputs || m->n_tensors > LUT_MAX || m->n_inputs > m->n_tensors ||
      m->n_outputs > m->n_tensors - m->n_inputs || !n_stages || n_stages > LUT_MAX || !m->numel ||
      !m->function[0] || m->function[63]) {
    args->services->set_error("module '%s': lut header out of range (%u inputs, %u outputs, %u tensors, %u stages, "
                              "%llu elements)", args->module_name, m->n_inputs, m->n_outputs, m->n_tensors, n_stages,
                              (unsigned long long)m->numel);
    rc = LUT_DATA_LOSS;
  } else {
    m->n_stages = n_stages;
    rc = read_stages(m, args);
  }
  if (rc) {
    lut_free(m);
    return rc;
  }
  *out_state = m;
  return LUT_OK;
}

static float lookup(const lut_stage *s, float x) {
  if (x != x) return x; /* NaN */
  float t = (x - s->lo) * s->scale;
  if (!(t > 0.0f)) return s->values[0];
  if (t >= (float)(s->n - 1)) return s->values[s->n - 1];
  uint32_t j = (uint32_t)t;
  float f = t - (float)j;
  return s->values[j] + f * (s->values[j + 1] - s->values[j]);
}

static int lut_call(const dpk_value *args, const int *type_codes, int nargs, dpk_value *ret, int *ret_type_code,
                    void *resource) {
  (void)ret, (void)ret_type_code;
  const lut_module *m = resource;
  int expected = (int)(m->n_inputs + m->n_outputs);
  if (nargs != expected) {
    m->services->set_error("%s: expected %d tensor arguments (inputs, then outputs), got %d", m->function, expected, nargs);
    return LUT_INVALID_ARGUMENT;
  }
  float *data[LUT_MAX];
  for (int a = 0; a < nargs; a++) {
    const DLTensor *t = type_codes[a] == DPK_TYPE_TENSOR ? args[a].v_tensor : NULL;
    uint64_t numel = 1;
    for (int32_t d = 0; t && d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
    if (!t || t->dtype.code != kDLFloat || t->dtype.bits != 32 || t->dtype.lanes != 1 || t->strides ||
        numel != m->numel) {
      m->services->set_error("%s: argument %d must be a compact float32 tensor of %llu elements", m->function, a,
                             (unsigned long long)m->numel);
      return LUT_INVALID_ARGUMENT;
    }
    data[a] = (float *)((char *)t->data + t->byte_offset);
  }
  float v[LUT_MAX];
  for (uint64_t i = 0; i < m->numel; i++) {
    for (uint32_t k = 0; k < m->n_inputs; k++) v[k] = data[k][i];
    for (uint32_t s = 0; s < m->n_stages; s++) v[m->stages[s].dst] = lookup(&m->stages[s], v[m->stages[s].src]);
    for (uint32_t k = 0; k < m->n_outputs; k++) data[m->n_inputs + k][i] = v[m->n_inputs + k];
  }
  return LUT_OK;
}

static int lut_get_function(void *state, const char *name, dpk_packed_fn *out_fn, void **out_resource) {
  lut_module *m = state;
  if (strcmp(name, m->function) != 0) return 2; /* NOT_FOUND: the runtime searches the imports */
  *out_fn = lut_call;
  *out_resource = m;
  return 0;
}

/* The one symbol with external linkage: the dsopack build lists it in __dpk_kinds. */
const dpk_kind dpk_kind_lut = {"lut", DPK_ABI_VERSION, lut_load, lut_get_function, lut_free, NULL};
