/* registry.c: the process-wide table of module kinds.
 *
 * Kinds are kept sorted by name behind one mutex; the built-in kinds (dso,
 * params, graph, json) are registered on first use. Tables are borrowed,
 * never copied (they are static const in their owners). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;
static const dpk_kind **kinds;
static size_t num_kinds, capacity;
static char *names; /* "dso, graph, json, params", rebuilt on registration */

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
  size_t length = 1;
  for (size_t k = 0; k < num_kinds; k++) length += strlen(kinds[k]->name) + 2;
  char *text = malloc(length);
  if (text) {
    text[0] = '\0';
    for (size_t k = 0; k < num_kinds; k++) {
      if (k) strcat(text, ", ");
      strcat(text, kinds[k]->name);
    }
    free(names);
    names = text;
  }
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

const char *dpk_registered_kinds(void) {
  pthread_once(&builtins_once, register_builtins);
  pthread_mutex_lock(&lock);
  const char *text = names ? names : "";
  pthread_mutex_unlock(&lock);
  return text;
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
  pthread_once(&builtins_once, register_builtins);
  pthread_mutex_lock(&lock);
  snprintf(buffer, capacity_bytes, "%s", names ? names : "");
  pthread_mutex_unlock(&lock);
}
