/*
 * kawarimi BTL: the TCP path (btl_kawarimi_tcp.c). Only the path table
 * (btl_kawarimi_path.c) names it; the rest of the BTL calls it through
 * struct kw_path_ops.
 */
#ifndef BTL_KAWARIMI_TCP_H
#define BTL_KAWARIMI_TCP_H

#include "btl_kawarimi_path.h"

extern const struct kw_path_ops kw_tcp_path;

#endif
