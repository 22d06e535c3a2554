/* yamltree.c: a parsed YAML/JSON document with typed, checked accessors.
 * Used for the manifest and for the graph and json payloads (JSON is read
 * by libyaml too, so the runtime carries one parser). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "yamltree.h"

dpk_status_t dpk_yaml_parse(const void *bytes, size_t size, const char *source, dpk_yaml_t *out_yaml) {
  memset(out_yaml, 0, sizeof *out_yaml);
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser))
    return dpk_fail(DPK_STATUS_RESOURCE_EXHAUSTED, "%s: cannot start the YAML parser", source);
  yaml_parser_set_input_string(&parser, (const unsigned char *)bytes, size);
  dpk_status_t status = DPK_OK;
  if (!yaml_parser_load(&parser, &out_yaml->doc)) {
    status = dpk_fail(DPK_STATUS_DATA_LOSS, "%s is not valid YAML: %s at line %zu, column %zu", source,
                      parser.problem ? parser.problem : "syntax error", parser.problem_mark.line + 1,
                      parser.problem_mark.column + 1);
  } else if (!yaml_document_get_root_node(&out_yaml->doc)) {
    yaml_document_delete(&out_yaml->doc);
    status = dpk_fail(DPK_STATUS_DATA_LOSS, "%s is empty", source);
  } else {
    out_yaml->loaded = true;
  }
  yaml_parser_delete(&parser);
  return status;
}

void dpk_yaml_free(dpk_yaml_t *yaml) {
  if (yaml && yaml->loaded) yaml_document_delete(&yaml->doc);
  if (yaml) yaml->loaded = false;
}

yaml_node_t *dpk_yaml_root(dpk_yaml_t *yaml) { return yaml_document_get_root_node(&yaml->doc); }

bool dpk_yaml_is_map(yaml_node_t *node) { return node && node->type == YAML_MAPPING_NODE; }
bool dpk_yaml_is_seq(yaml_node_t *node) { return node && node->type == YAML_SEQUENCE_NODE; }

static const char *scalar(yaml_node_t *node) {
  return node && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
}

bool dpk_yaml_is_null(yaml_node_t *node) {
  const char *s = scalar(node);
  if (!s || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
  return !s[0] || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

size_t dpk_yaml_map_len(yaml_node_t *map) {
  if (!dpk_yaml_is_map(map)) return 0;
  return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

const char *dpk_yaml_map_key(dpk_yaml_t *yaml, yaml_node_t *map, size_t index) {
  if (index >= dpk_yaml_map_len(map)) return NULL;
  return scalar(yaml_document_get_node(&yaml->doc, map->data.mapping.pairs.start[index].key));
}

yaml_node_t *dpk_yaml_map_value(dpk_yaml_t *yaml, yaml_node_t *map, size_t index) {
  if (index >= dpk_yaml_map_len(map)) return NULL;
  return yaml_document_get_node(&yaml->doc, map->data.mapping.pairs.start[index].value);
}

yaml_node_t *dpk_yaml_get(dpk_yaml_t *yaml, yaml_node_t *map, const char *key) {
  size_t n = dpk_yaml_map_len(map);
  for (size_t i = 0; i < n; i++) {
    const char *k = dpk_yaml_map_key(yaml, map, i);
    if (k && strcmp(k, key) == 0) return dpk_yaml_map_value(yaml, map, i);
  }
  return NULL;
}

size_t dpk_yaml_len(yaml_node_t *seq) {
  if (!dpk_yaml_is_seq(seq)) return 0;
  return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

yaml_node_t *dpk_yaml_item(dpk_yaml_t *yaml, yaml_node_t *seq, size_t index) {
  if (index >= dpk_yaml_len(seq)) return NULL;
  return yaml_document_get_node(&yaml->doc, seq->data.sequence.items.start[index]);
}

static dpk_status_t need_scalar(yaml_node_t *node, const char *what, const char *type, const char **out) {
  *out = scalar(node);
  if (!node) return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s is missing", what);
  if (!*out)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be %s, not a %s", what, type,
                    node->type == YAML_MAPPING_NODE ? "mapping" : "sequence");
  return DPK_OK;
}

dpk_status_t dpk_yaml_str(yaml_node_t *node, const char *what, const char **out_str) {
  return need_scalar(node, what, "a string", out_str);
}

dpk_status_t dpk_yaml_int(yaml_node_t *node, const char *what, int64_t *out_value) {
  *out_value = 0;
  const char *s;
  dpk_status_t status = need_scalar(node, what, "an integer", &s);
  if (status) return status;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be an integer, not '%s'", what, s);
  *out_value = v;
  return DPK_OK;
}

dpk_status_t dpk_yaml_uint(yaml_node_t *node, const char *what, uint64_t *out_value) {
  *out_value = 0;
  const char *s;
  dpk_status_t status = need_scalar(node, what, "a non-negative integer", &s);
  if (status) return status;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-')
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a non-negative integer, not '%s'", what, s);
  *out_value = v;
  return DPK_OK;
}

dpk_status_t dpk_yaml_float(yaml_node_t *node, const char *what, double *out_value) {
  *out_value = 0;
  const char *s;
  dpk_status_t status = need_scalar(node, what, "a number", &s);
  if (status) return status;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end)
    return dpk_fail(DPK_STATUS_FAILED_PRECONDITION, "%s must be a number, not '%s'", what, s);
  *out_value = v;
  return DPK_OK;
}
