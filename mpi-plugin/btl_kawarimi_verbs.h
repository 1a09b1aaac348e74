/*
 * kawarimi BTL: the verbs path (RC QPs through librdmacm), see
 * btl_kawarimi_verbs*.c and docs/btl.md "Verbs path". Only the path table
 * (btl_kawarimi_path.c) names it; the rest of the BTL calls it through
 * struct kw_path_ops.
 */
#ifndef BTL_KAWARIMI_VERBS_H
#define BTL_KAWARIMI_VERBS_H

#include "btl_kawarimi_path.h"

extern const struct kw_path_ops kw_verbs_path;

#endif
