/* kinds.h: the built-in kinds' tables (dpk_abi.h, "Module kinds"), which
 * registry.c registers on first use. Static const, never freed. Not
 * installed. */
#ifndef DPK_KINDS_H
#define DPK_KINDS_H

#include "dpk.h"

extern const dpk_kind dpk_kind_dso;    /* dso.c: the file's own compiled kernels */
extern const dpk_kind dpk_kind_params; /* params.c: named weight tensors */
extern const dpk_kind dpk_kind_graph;  /* graph.c: the execution graph */
extern const dpk_kind dpk_kind_json;   /* json.c: a subgraph interpreted by the runtime's kernels */

#endif /* DPK_KINDS_H */
