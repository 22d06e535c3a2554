/* yamltree.h: a parsed YAML (or JSON) document and typed accessors over its
 * nodes (yamltree.c). Used for the manifest and the graph and json
 * payloads. Not installed.
 *
 * Accessors that take a `what` string use it in error messages, e.g.
 * "module 'ext0' field 'payload.size'". */
#ifndef DPK_YAMLTREE_H
#define DPK_YAMLTREE_H

#include <stdbool.h>
#include <yaml.h>

#include "dpk.h"

typedef struct dpk_yaml {
  yaml_document_t doc;
  bool loaded;
} dpk_yaml_t;

/* Parse `size` bytes; `source` names them in errors ("manifest of 'm.so'").
 * DATA_LOSS with line and column on a syntax error. Free with dpk_yaml_free
 * (which accepts a zeroed struct). */
dpk_status_t dpk_yaml_parse(const void *bytes, size_t size, const char *source, dpk_yaml_t *out_yaml);
void dpk_yaml_free(dpk_yaml_t *yaml);
/* The root node, or NULL for an empty document. */
yaml_node_t *dpk_yaml_root(dpk_yaml_t *yaml);

/* Child of a mapping by key; NULL if absent or `map` is not a mapping. */
yaml_node_t *dpk_yaml_get(dpk_yaml_t *yaml, yaml_node_t *map, const char *key);
/* Sequence length and items (0 / NULL if not a sequence). */
size_t dpk_yaml_len(yaml_node_t *seq);
yaml_node_t *dpk_yaml_item(dpk_yaml_t *yaml, yaml_node_t *seq, size_t index);
/* Mapping pairs: number, and key (a scalar string) / value of pair i. */
size_t dpk_yaml_map_len(yaml_node_t *map);
const char *dpk_yaml_map_key(dpk_yaml_t *yaml, yaml_node_t *map, size_t index);
yaml_node_t *dpk_yaml_map_value(dpk_yaml_t *yaml, yaml_node_t *map, size_t index);

/* Typed reads. They fail with FAILED_PRECONDITION naming `what` when the
 * node is missing (NULL) or of the wrong type. Strings are borrowed from the
 * document (NUL-terminated). */
dpk_status_t dpk_yaml_str(yaml_node_t *node, const char *what, const char **out_str);
dpk_status_t dpk_yaml_int(yaml_node_t *node, const char *what, int64_t *out_value);
dpk_status_t dpk_yaml_uint(yaml_node_t *node, const char *what, uint64_t *out_value);
dpk_status_t dpk_yaml_float(yaml_node_t *node, const char *what, double *out_value);
bool dpk_yaml_is_map(yaml_node_t *node);
bool dpk_yaml_is_seq(yaml_node_t *node);
/* A plain (unquoted) scalar `null`, `Null`, `NULL`, `~` or empty: YAML's
 * null. A quoted "null" is a string. False for NULL. */
bool dpk_yaml_is_null(yaml_node_t *node);

#endif /* DPK_YAMLTREE_H */
