/* registry.c: the process-wide table of module kinds.
 *
 * Kinds are kept sorted by name behind one mutex; the built-in kinds (dso,
 * params, graph, json) are registered on first use. Tables are borrowed,
 * never copied (they are static const in their owners). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "error.h"
#include "kinds.h"
#include "registry.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;
static const dpk_kind **kinds;
static size_t num_kinds, capacity;

/* Insert or replace under the lock; 0 on success, else a status. */
static dpk_status_t insert_locked(const dpk_kind *kind, int replace) {
  size_t i = 0;
  while (i < num_kinds && strcmp(kinds[i]->name, kind->name) < 0) i++;
  if (i < num_kinds && strcmp(kinds[i]->name, kind->name) == 0) {
    if (!replace) return dpk_fail(DPK_STATUS_ALREADY_EXISTS, "kind '%s' is already registered", kind->name);
    kinds[i] = kind;
    return DPK_OK;
  }
  if (num_kinds == capacity) {
    size_t grown = capacity ? capacity * 2 : 8;
    const dpk_kind **bigger = realloc(kinds, grown * sizeof *kinds);
    if (!bigger) return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "out of memory registering kind '%s'", kind->name);
    kinds = bigger;
    capacity = grown;
  }
  memmove(kinds + i + 1, kinds + i, (num_kinds - i) * sizeof *kinds);
  kinds[i] = kind;
  num_kinds++;
  return DPK_OK;
}

static void register_builtins(void) {
  static const dpk_kind *const builtins[] = {
      &dpk_kind_dso, &dpk_kind_params, &dpk_kind_graph, &dpk_kind_json};
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) insert_locked(builtins[i], 0);
  pthread_mutex_unlock(&lock);
}

dpk_status_t dpk_register_kind(const dpk_kind *kind, int replace) {
  if (!kind || !kind->name || !kind->name[0] || !kind->load || !kind->get_function || !kind->free)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_register_kind: the kind needs a name, load, get_function and free");
  char what[1024]; /* a message holds at most 1024 bytes (error.c) */
  snprintf(what, sizeof what, "kind '%s'", kind->name);
  dpk_status_t refused = dpk_abi_check(kind->abi_version, what);
  if (refused) return refused;
  pthread_once(&builtins_once, register_builtins);
  pthread_mutex_lock(&lock);
  dpk_status_t status = insert_locked(kind, replace);
  pthread_mutex_unlock(&lock);
  return status;
}

/* The count and the copy are taken under one lock, so the caller's buffer
 * is one consistent snapshot; the names are the kind tables' own, which live
 * for the process (registered tables are never freed, even when replaced). */
dpk_status_t dpk_registered_kinds(const char **names_out, size_t capacity, size_t *out_count) {
  if (!out_count) return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_registered_kinds: out_count is NULL");
  *out_count = 0;
  if (!names_out && capacity)
    return dpk_fail(DPK_STATUS_INVALID_ARGUMENT, "dpk_registered_kinds: names is NULL but capacity is %zu", capacity);
  pthread_once(&builtins_once, register_builtins);
  pthread_mutex_lock(&lock);
  size_t count = num_kinds;
  bool fits = count <= capacity;
  if (names_out && fits)
    for (size_t i = 0; i < count; i++) names_out[i] = kinds[i]->name;
  pthread_mutex_unlock(&lock);
  *out_count = count;
  if (names_out && !fits)
    return dpk_fail(DPK_STATUS_OUT_OF_RANGE, "dpk_registered_kinds: %zu kinds are registered but the buffer holds %zu",
                    count, capacity);
  return DPK_OK;
}

const dpk_kind *dpk_registry_find(const char *name) {
  pthread_once(&builtins_once, register_builtins);
  const dpk_kind *found = NULL;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < num_kinds && !found; i++)
    if (strcmp(kinds[i]->name, name) == 0) found = kinds[i];
  pthread_mutex_unlock(&lock);
  return found;
}

void dpk_registry_names(char *buffer, size_t capacity_bytes) {
  if (!capacity_bytes) return;
  buffer[0] = '\0';
  pthread_once(&builtins_once, register_builtins);
  pthread_mutex_lock(&lock);
  for (size_t i = 0, used = 0; i < num_kinds && used < capacity_bytes; i++) {
    int w = snprintf(buffer + used, capacity_bytes - used, "%s%s", i ? ", " : "", kinds[i]->name);
    if (w < 0) break;
    used += (size_t)w;
  }
  pthread_mutex_unlock(&lock);
}
