/* The four transforms of Winograd F(4x4, 3x3), one (image, channel or filter) plane at a
 * time, on vectors of 8 tiles of a tile row.
 *
 * Included by fastconv/kernels/winograd.pxi (every build of fastconv/kernels/_im2col.pyx), which
 * documents the layouts (V and M: (36, planes, tiles), a plane's tiles contiguous, row by row)
 * and the matrices B^T and A^T; fastconv/kernels/winograd4_body.h holds the loops, compiled once for
 * float (suffix f32) and once for double (f64).
 *
 * Why vectors of tiles: the transformed data has each tile's 36 points in 36 rows (a point stride apart), and a
 * tile row's tiles contiguous in each. A loop over the tiles of a row with the tile's 6 x 6
 * patch in registers loads and stores whole vectors; where a plane is read or written (x,
 * dout, dx), its rows are split into their four column phases (column q at phase q % 4, index
 * q / 4), so that entry (i, j) of tiles tj .. tj + 7 is one contiguous vector. Each entry is
 * the same expression, in the same order, as in the Cython loops these replaced (winograd.pxi
 * before ab6560b): the same bits (the files are compiled with -ffp-contract=off), in every
 * build. Only db's sum of dout runs in another order (eight running sums instead of one).
 */
#ifndef FASTCONV_WINOGRAD4_H
#define FASTCONV_WINOGRAD4_H

#include <stddef.h>
#include <string.h>

#ifndef PY_SSIZE_T_MAX /* compiled alone (gcc -S winograd4.h) to look at the code */
typedef ptrdiff_t Py_ssize_t;
#endif

/* Tiles per vector. 8 tiles: the 8 tiles of a 32-wide output's tile row, in one vector. */
#define FW_V 8

typedef float fw_vf __attribute__((vector_size(FW_V * sizeof(float))));
typedef double fw_vd __attribute__((vector_size(FW_V * sizeof(double))));
/* The same vectors at any address. */
typedef float fw_vf_u __attribute__((vector_size(FW_V * sizeof(float)), aligned(4), may_alias));
typedef double fw_vd_u __attribute__((vector_size(FW_V * sizeof(double)), aligned(8), may_alias));

/* Items of the tile vectors' row buffers: tiles_w rounded up to whole vectors. */
static inline Py_ssize_t fw_row(Py_ssize_t tiles_w)
{
    return (tiles_w + FW_V - 1) / FW_V * FW_V;
}

/* Scratch items per thread that the four transforms need (winograd_scratch): the input
 * transform's phases of the whole padded plane and one padded row, the output adjoint's
 * phases of four rows and a row, the input adjoint's tile row and its ring of rows. */
static inline Py_ssize_t fw_scratch(Py_ssize_t tiles_h, Py_ssize_t tiles_w)
{
    Py_ssize_t R = fw_row(tiles_w), Wq = R + 1;
    Py_ssize_t in = 4 * (4 * tiles_h + 3) * Wq, out_adj = 20 * R, in_adj = 36 * R + 8 * (4 * tiles_w + 2);
    Py_ssize_t m = in > out_adj ? in : out_adj;
    return m > in_adj ? m : in_adj;
}

#define FW_CAT2(a, b) a##_##b
#define FW_CAT(a, b) FW_CAT2(a, b)

#define FW_T float
#define FW_VT fw_vf
#define FW_VTU fw_vf_u
#define FW_SUF f32
#include "winograd4_body.h"
#undef FW_T
#undef FW_VT
#undef FW_VTU
#undef FW_SUF

#define FW_T double
#define FW_VT fw_vd
#define FW_VTU fw_vd_u
#define FW_SUF f64
#include "winograd4_body.h"
#undef FW_T
#undef FW_VT
#undef FW_VTU
#undef FW_SUF

#endif
