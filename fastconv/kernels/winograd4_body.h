/* The loops of fastconv/kernels/winograd4.h for one floating type: included twice by winograd4.h,
 * with FW_T (float or double), FW_VT / FW_VTU (its vector of FW_V tiles, aligned and not) and
 * FW_SUF (f32 or f64). */

#define FW_NAME(name) FW_CAT(name, FW_SUF)

/* The 1-D transforms on six (or four) vectors, the entries' expressions as winograd.pxi
 * documents them. Constants are FW_T: a bare literal would make float32 arithmetic run in
 * double. */

/* r = B^T s (6 entries to 6). */
static inline __attribute__((always_inline)) void FW_NAME(fw_bt)(const FW_VT *s, FW_VT *r)
{
    const FW_T two = 2, four = 4, five = 5;
    FW_VT t1 = s[4] - four * s[2], t2 = s[3] - four * s[1];
    FW_VT t3 = s[4] - s[2], t4 = two * (s[3] - s[1]);
    r[0] = four * s[0] - five * s[2] + s[4];
    r[5] = four * s[1] - five * s[3] + s[5];
    r[1] = t1 + t2;
    r[2] = t1 - t2;
    r[3] = t3 + t4;
    r[4] = t3 - t4;
}

/* r = B s, the adjoint of fw_bt (6 entries to 6). */
static inline __attribute__((always_inline)) void FW_NAME(fw_b)(const FW_VT *s, FW_VT *r)
{
    const FW_T two = 2, four = 4, five = 5, minus_five = -5;
    FW_VT a = s[1] - s[2], b = s[3] - s[4], c = s[1] + s[2], e = s[3] + s[4];
    r[0] = four * s[0];
    r[5] = s[5];
    r[1] = four * s[5] - four * a - two * b;
    r[3] = a + two * b - five * s[5];
    r[2] = minus_five * s[0] - four * c - e;
    r[4] = s[0] + c + e;
}

/* r = A^T s + b0 (6 entries to 4). */
static inline __attribute__((always_inline)) void FW_NAME(fw_at)(const FW_VT *s, FW_VT *r, FW_T b0)
{
    const FW_T two = 2, four = 4, eight = 8;
    FW_VT a = s[1] + s[2], b = s[1] - s[2], c = s[3] + s[4], e = s[3] - s[4];
    r[0] = s[0] + a + c + b0;
    r[1] = b + two * e + b0;
    r[2] = a + four * c + b0;
    r[3] = b + eight * e + s[5] + b0;
}

/* r = A s, the adjoint of fw_at without b0 (4 entries to 6). */
static inline __attribute__((always_inline)) void FW_NAME(fw_a)(const FW_VT *s, FW_VT *r)
{
    const FW_T two = 2, four = 4, eight = 8;
    FW_VT e = s[0] + s[2], o = s[1] + s[3], e4 = s[0] + four * s[2], o4 = two * s[1] + eight * s[3];
    r[0] = s[0];
    r[5] = s[3];
    r[1] = e + o;
    r[2] = e - o;
    r[3] = e4 + o4;
    r[4] = e4 - o4;
}

/* n (1 to FW_V) tiles' entries: a whole vector when n is FW_V, else through memcpy (a vector
 * load or store there could reach past the end of the array). The input transform calls its
 * group of tiles with n = FW_V, a constant, for every whole vector (that copy has no test);
 * the other three test n at each load or store. */
static inline __attribute__((always_inline)) FW_VT FW_NAME(fw_load)(const FW_T *src, int n)
{
    FW_VT v = {0};
    if (n == FW_V)
        return *(const FW_VTU *)src;
    memcpy(&v, src, sizeof(FW_T) * (size_t)n);
    return v;
}

static inline __attribute__((always_inline)) void FW_NAME(fw_store)(FW_T *dst, FW_VT v, int n)
{
    if (n == FW_V)
        *(FW_VTU *)dst = v;
    else
        memcpy(dst, &v, sizeof(FW_T) * (size_t)n);
}

/* Columns 4*count of a row into its four phases: dst[s*stride + k] = src[4k + s + w0] where
 * that column exists (0 <= 4k + s + w0 < W), zero elsewhere. The row is first copied into
 * row (4*count items, zero-padded), then split with no test per item (a loop that GCC
 * vectorizes: four strided loads, four stores). */
static inline void FW_NAME(fw_phases)(const FW_T *src, Py_ssize_t W, Py_ssize_t w0, Py_ssize_t count,
                                      FW_T *restrict row, FW_T *restrict dst, Py_ssize_t stride)
{
    Py_ssize_t len = 4 * count, k;
    Py_ssize_t lo = w0 < 0 ? -w0 : 0;  /* row[q] = src[q + w0] for lo <= q < hi */
    Py_ssize_t hi = W - w0 < len ? W - w0 : len;
    FW_T *restrict d0 = dst, *restrict d1 = dst + stride, *restrict d2 = dst + 2 * stride, *restrict d3 = dst + 3 * stride;
    lo = lo < len ? lo : len;
    hi = hi > lo ? hi : lo;
    memset(row, 0, sizeof(FW_T) * (size_t)lo);
    memcpy(row + lo, src + lo + w0, sizeof(FW_T) * (size_t)(hi - lo));
    memset(row + hi, 0, sizeof(FW_T) * (size_t)(len - hi));
    for (k = 0; k < count; k++) {
        d0[k] = row[4 * k];
        d1[k] = row[4 * k + 1];
        d2[k] = row[4 * k + 2];
        d3[k] = row[4 * k + 3];
    }
}

/* B^T d B of n tiles (a vector) of a tile row: entry (i, j) of their patches at
 * ph[(i*4 + j % 4)*Wq + j / 4] (the padded rows' phases), point p to V[p * point_stride]. */
static inline __attribute__((always_inline)) void
FW_NAME(fw_input_group)(const FW_T *ph, Py_ssize_t Wq, FW_T *V, Py_ssize_t point_stride, int n)
{
    FW_VT d[6], u[6][6], v[6];
    int i, j, k, s;
#pragma GCC unroll 6
    for (j = 0; j < 6; j++) {  /* B^T d: column j of the patches, rows combined */
#pragma GCC unroll 6
        for (i = 0; i < 6; i++)
            d[i] = *(const FW_VTU *)(ph + (i * 4 + j % 4) * Wq + j / 4);
        FW_NAME(fw_bt)(d, v);
#pragma GCC unroll 6
        for (k = 0; k < 6; k++)
            u[k][j] = v[k];
    }
#pragma GCC unroll 6
    for (k = 0; k < 6; k++) {  /* (B^T d) B: row k, its columns combined */
        FW_NAME(fw_bt)(u[k], v);
#pragma GCC unroll 6
        for (s = 0; s < 6; s++)
            FW_NAME(fw_store)(V + (6 * k + s) * point_stride, v[s], n);
    }
}

/* V[p * point_stride + tile] = (B^T d B)[p] for the tiles of one plane x (H, W): tile (ti, tj)
 * reads the 6x6 patch at (4 ti - pad_h, 4 tj - pad_w), zero outside the image. The whole
 * padded plane is split into phases first (each row once: per tile row, six rows of which
 * two are the last one's, cost a third more). buf: 4 * (4 * tiles_h + 3) * (fw_row(tiles_w) + 1)
 * items. */
static void FW_NAME(fw_input_plane)(const FW_T *x, FW_T *V, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad_h,
                                    Py_ssize_t pad_w, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                                    Py_ssize_t point_stride, FW_T *buf)
{
    Py_ssize_t Wq = fw_row(tiles_w) + 1, Hp = 4 * tiles_h + 2, r, ti, tj0, h;
    FW_T *row = buf + 4 * Hp * Wq;
    int n;
    for (r = 0; r < Hp; r++) {  /* buf[(r*4 + s)*Wq + k] = padded pixel (r, 4k + s) */
        h = r - pad_h;
        if (h >= 0 && h < H)
            FW_NAME(fw_phases)(x + h * W, W, -pad_w, Wq, row, buf + r * 4 * Wq, Wq);
        else
            memset(buf + r * 4 * Wq, 0, sizeof(FW_T) * (size_t)(4 * Wq));
    }
    for (ti = 0; ti < tiles_h; ti++) {
        for (tj0 = 0; tj0 < tiles_w; tj0 += FW_V) {
            const FW_T *ph = buf + 16 * ti * Wq + tj0;  /* padded row 4 ti, phase 0, index tj0 */
            n = tiles_w - tj0 < FW_V ? (int)(tiles_w - tj0) : FW_V;
            if (n == FW_V)
                FW_NAME(fw_input_group)(ph, Wq, V + ti * tiles_w + tj0, point_stride, FW_V);
            else
                FW_NAME(fw_input_group)(ph, Wq, V + ti * tiles_w + tj0, point_stride, n);
        }
    }
}

/* out (out_h, out_w) of one plane = A^T m A + b0 per tile, from M[p * point_stride + tile],
 * cropped at the plane's edge. */
static void FW_NAME(fw_output_plane)(const FW_T *M, FW_T *out, FW_T b0, Py_ssize_t out_h, Py_ssize_t out_w,
                                     Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride)
{
    Py_ssize_t ti, tj0, cols, c;
    int i, s, n, l, b, rows;
    for (ti = 0; ti < tiles_h; ti++) {
        rows = out_h - 4 * ti < 4 ? (int)(out_h - 4 * ti) : 4;
        for (tj0 = 0; tj0 < tiles_w; tj0 += FW_V) {
            FW_VT m[6], ua[6][4], col[6], o[4];
            FW_T t[4][FW_V];
            n = tiles_w - tj0 < FW_V ? (int)(tiles_w - tj0) : FW_V;
            cols = out_w - 4 * tj0 < 4 * FW_V ? out_w - 4 * tj0 : 4 * FW_V;
#pragma GCC unroll 6
            for (s = 0; s < 6; s++) {  /* A^T m: column s of the tiles, rows combined (+ 0, as before) */
#pragma GCC unroll 6
                for (i = 0; i < 6; i++)
                    m[i] = FW_NAME(fw_load)(M + (6 * i + s) * point_stride + ti * tiles_w + tj0, n);
                FW_NAME(fw_at)(m, o, (FW_T)0);
#pragma GCC unroll 6
                for (i = 0; i < 4; i++)
                    ua[s][i] = o[i];
            }
#pragma GCC unroll 6
            for (i = 0; i < rows; i++) {  /* (A^T m) A: output row 4 ti + i, the tiles' columns interleaved */
                FW_T *dst = out + (4 * ti + i) * out_w + 4 * tj0;
#pragma GCC unroll 6
                for (s = 0; s < 6; s++)
                    col[s] = ua[s][i];
                FW_NAME(fw_at)(col, o, b0);
#pragma GCC unroll 6
                for (b = 0; b < 4; b++)
                    *(FW_VTU *)t[b] = o[b];
                if (cols == 4 * FW_V) {
                    for (l = 0; l < FW_V; l++)
#pragma GCC unroll 6
                        for (b = 0; b < 4; b++)
                            dst[4 * l + b] = t[b][l];
                } else {
                    for (c = 0; c < cols; c++)
                        dst[c] = t[c % 4][c / 4];
                }
            }
        }
    }
}

/* dM[p * point_stride + tile] = (A dy A^T)[p] for the tiles of one plane dout (out_h, out_w),
 * dy zero past the edge; returns the plane's sum in double (eight running sums of the
 * columns mod 8, added in a fixed order). buf: 20 * fw_row(tiles_w) items. */
static double FW_NAME(fw_output_adjoint_plane)(const FW_T *dout, FW_T *dM, Py_ssize_t out_h, Py_ssize_t out_w,
                                               Py_ssize_t tiles_h, Py_ssize_t tiles_w, Py_ssize_t point_stride,
                                               FW_T *buf)
{
    Py_ssize_t R = fw_row(tiles_w), ti, tj0, oh, w;
    double sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i, j, r, n, l;
    for (ti = 0; ti < tiles_h; ti++) {
#pragma GCC unroll 6
        for (i = 0; i < 4; i++) {  /* rows 4 ti .. 4 ti + 3 in phases: buf[(i*4 + j)*R + k] = column 4k + j */
            oh = 4 * ti + i;
            if (oh < out_h) {
                const FW_T *o = dout + oh * out_w;
                FW_NAME(fw_phases)(o, out_w, 0, R, buf + 16 * R, buf + i * 4 * R, R);
                for (w = 0; w + 8 <= out_w; w += 8)
                    for (l = 0; l < 8; l++)
                        sums[l] += (double)o[w + l];
                for (l = 0; w + l < out_w; l++)
                    sums[l] += (double)o[w + l];
            } else {
                memset(buf + i * 4 * R, 0, sizeof(FW_T) * (size_t)(4 * R));
            }
        }
        for (tj0 = 0; tj0 < tiles_w; tj0 += FW_V) {
            FW_VT y[4], u[6][4], v[6];
            n = tiles_w - tj0 < FW_V ? (int)(tiles_w - tj0) : FW_V;
#pragma GCC unroll 6
            for (j = 0; j < 4; j++) {  /* A dy: column j of the tiles, rows combined */
#pragma GCC unroll 6
                for (i = 0; i < 4; i++)
                    y[i] = *(const FW_VTU *)(buf + (i * 4 + j) * R + tj0);
                FW_NAME(fw_a)(y, v);
#pragma GCC unroll 6
                for (r = 0; r < 6; r++)
                    u[r][j] = v[r];
            }
#pragma GCC unroll 6
            for (r = 0; r < 6; r++) {  /* (A dy) A^T: row r, its columns combined */
                FW_NAME(fw_a)(u[r], v);
#pragma GCC unroll 6
                for (j = 0; j < 6; j++)
                    FW_NAME(fw_store)(dM + (6 * r + j) * point_stride + ti * tiles_w + tj0, v[j], n);
            }
        }
    }
    return ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]));
}

/* dx (H, W) of one plane = the sum over its tiles of B dv B^T, each at its 6x6 patch
 * (4 ti - pad_h, 4 tj - pad_w) (tiles overlap by 2 pixels; pixels outside the image are
 * dropped), from dV[p * point_stride + tile]. Each padded row is summed in a ring of 8
 * rows and stored once no later tile row reaches it.
 * buf: 36 * fw_row(tiles_w) + 8 * (4 * tiles_w + 2) items. */
static void FW_NAME(fw_input_adjoint_plane)(const FW_T *dV, FW_T *dx, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t tiles_h,
                                            Py_ssize_t tiles_w, Py_ssize_t point_stride, FW_T *buf)
{
    Py_ssize_t R = fw_row(tiles_w), Wp = 4 * tiles_w + 2, ti, tj, tj0, h, w0, w1;
    FW_T *E = buf;  /* row r of (B dv) B^T, entry c of every tile of the tile row: (6, 6, R) */
    FW_T *acc = buf + 36 * R;  /* the ring of padded rows: (8, Wp) */
    int r, s, c, n;
    w0 = pad_w < Wp ? pad_w : Wp;  /* the padded columns that are image columns: [w0, w1) */
    w1 = pad_w + W < Wp ? pad_w + W : Wp;
    memset(acc, 0, sizeof(FW_T) * (size_t)(8 * Wp));
    for (ti = 0; ti < tiles_h; ti++) {
        for (tj0 = 0; tj0 < tiles_w; tj0 += FW_V) {
            FW_VT d[6], u[6][6], v[6];
            n = tiles_w - tj0 < FW_V ? (int)(tiles_w - tj0) : FW_V;
#pragma GCC unroll 6
            for (s = 0; s < 6; s++) {  /* B dv: column s of the tiles, rows combined */
#pragma GCC unroll 6
                for (r = 0; r < 6; r++)
                    d[r] = FW_NAME(fw_load)(dV + (6 * r + s) * point_stride + ti * tiles_w + tj0, n);
                FW_NAME(fw_b)(d, v);
#pragma GCC unroll 6
                for (r = 0; r < 6; r++)
                    u[r][s] = v[r];
            }
#pragma GCC unroll 6
            for (r = 0; r < 6; r++) {  /* (B dv) B^T: row r, its columns combined */
                FW_NAME(fw_b)(u[r], v);
#pragma GCC unroll 6
                for (c = 0; c < 6; c++)
                    *(FW_VTU *)(E + (6 * r + c) * R + tj0) = v[c];
            }
        }
#pragma GCC unroll 6
        for (r = 0; r < 6; r++) {
            /* Tile tj's columns 0-5 land on 4 tj .. 4 tj + 5: column 4 k takes column 0 of tile
             * k and column 4 of tile k - 1, column 4 k + 1 columns 1 and 5. */
            const FW_T *e = E + 6 * r * R;
            FW_T *a = acc + ((4 * ti + r) % 8) * Wp;
            a[0] += e[0];
            a[1] += e[R];
            for (tj = 1; tj < tiles_w; tj++) {
                a[4 * tj] += e[tj] + e[4 * R + tj - 1];
                a[4 * tj + 1] += e[R + tj] + e[5 * R + tj - 1];
            }
            for (tj = 0; tj < tiles_w; tj++) {
                a[4 * tj + 2] += e[2 * R + tj];
                a[4 * tj + 3] += e[3 * R + tj];
            }
            a[4 * tiles_w] += e[4 * R + tiles_w - 1];
            a[4 * tiles_w + 1] += e[5 * R + tiles_w - 1];
        }
        /* padded rows 4 ti .. 4 ti + 3 are complete (the last tile row: all six) */
        for (r = 0; r < (ti == tiles_h - 1 ? 6 : 4); r++) {
            FW_T *a = acc + ((4 * ti + r) % 8) * Wp;
            h = 4 * ti + r - pad_h;
            if (h >= 0 && h < H && w1 > w0)
                memcpy(dx + h * W + (w0 - pad_w), a + w0, sizeof(FW_T) * (size_t)(w1 - w0));
            memset(a, 0, sizeof(FW_T) * (size_t)Wp);
        }
    }
}

#undef FW_NAME
