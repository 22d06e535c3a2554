/* error.c: the per-thread last-error message and status names. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define DPK_ERROR_CAPACITY 1024

/* One buffer per thread, created on first use and freed at thread exit. */
static pthread_key_t error_key;
static pthread_once_t error_once = PTHREAD_ONCE_INIT;

static void error_key_create(void) { pthread_key_create(&error_key, free); }

static char *error_buffer(void) {
  pthread_once(&error_once, error_key_create);
  char *buffer = pthread_getspecific(error_key);
  if (!buffer) {
    buffer = calloc(1, DPK_ERROR_CAPACITY);
    if (!buffer || pthread_setspecific(error_key, buffer) != 0) {
      free(buffer);
      return NULL;
    }
  }
  return buffer;
}

static void error_vset(const char *fmt, va_list ap) {
  char *buffer = error_buffer();
  if (buffer) vsnprintf(buffer, DPK_ERROR_CAPACITY, fmt, ap);
}

void dpk_set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  error_vset(fmt, ap);
  va_end(ap);
}

dpk_status_t dpk_fail(dpk_status_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  error_vset(fmt, ap);
  va_end(ap);
  return status;
}

dpk_status_t dpk_fail_context(dpk_status_t status, const char *fmt, ...) {
  char *buffer = error_buffer();
  if (!buffer) return status;
  char old[DPK_ERROR_CAPACITY];
  memcpy(old, buffer, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buffer, DPK_ERROR_CAPACITY, fmt, ap);
  va_end(ap);
  if (n >= 0 && n < DPK_ERROR_CAPACITY && old[0])
    snprintf(buffer + n, DPK_ERROR_CAPACITY - (size_t)n, ": %s", old);
  return status;
}

void dpk_clear_error(void) {
  char *buffer = error_buffer();
  if (buffer) buffer[0] = '\0';
}

const char *dpk_last_error(void) {
  char *buffer = error_buffer();
  return buffer ? buffer : "out of memory for the error message";
}

const char *dpk_status_name(dpk_status_t status) {
  switch (status) {
    case DPK_OK: return "OK";
    case DPK_STATUS_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case DPK_STATUS_NOT_FOUND: return "NOT_FOUND";
    case DPK_STATUS_OUT_OF_RANGE: return "OUT_OF_RANGE";
    case DPK_STATUS_DATA_LOSS: return "DATA_LOSS";
    case DPK_STATUS_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case DPK_STATUS_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case DPK_STATUS_INTERNAL: return "INTERNAL";
    case DPK_STATUS_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case DPK_STATUS_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case DPK_STATUS_UNAUTHENTICATED: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}
