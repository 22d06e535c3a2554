/* registry.h: the process-wide table of module kinds (registry.c; the
 * public calls are dpk_register_kind and dpk_registered_kinds). Not
 * installed. */
#ifndef DPK_REGISTRY_H
#define DPK_REGISTRY_H

#include "dpk.h"

/* A registered kind by name (the built-ins included), or NULL. Thread-safe. */
const dpk_kind *dpk_registry_find(const char *name);
/* The registered names, sorted, ", "-separated ("dso, graph, json, params"),
 * into buffer (truncated to capacity - 1 characters). Thread-safe. */
void dpk_registry_names(char *buffer, size_t capacity);

#endif /* DPK_REGISTRY_H */
