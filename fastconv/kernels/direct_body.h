/* The loops of fastconv/kernels/direct.h for one floating type: included twice by direct.h,
 * with FC_T (float or double), FC_V (its lanes in a 64-byte row segment), FC_SUF (f32 or
 * f64), and the build's register vector of FC_RL lanes (FC_K of them per segment): FC_RT /
 * FC_RTU (aligned and not) and FC_RI (the integer vector of the same lanes); FC_WF x FC_WT,
 * the dW tile of this type. */

#define FC_NAME(name) FC_CAT(name, FC_SUF)


/* Zero dst (Hb rows of S phases of Wq), then put the plane src (H, W) in it: pixel (h, w) at
 * logical (h*up_h + at_h, w*up_w + at_w); pixels that fall outside are never read. zeroed:
 * dst already holds a plane packed with the same arguments, so its zeros are in place (the
 * pixels go to the same places, whatever their values): only the pixels are copied. */
static void FC_NAME(fc_pack)(const FC_T *src, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t up_h, Py_ssize_t up_w, Py_ssize_t at_h, Py_ssize_t at_w,
                             FC_T *dst, Py_ssize_t Hb, Py_ssize_t S, Py_ssize_t Wq, int zeroed)
{
    Py_ssize_t rowstride = S * Wq, h, w;
    if (!zeroed)
        memset(dst, 0, sizeof(FC_T) * (size_t)(Hb * rowstride));
    for (h = 0; h < H; h++) {
        Py_ssize_t r = h * up_h + at_h;
        FC_T *row = dst + r * rowstride;
        const FC_T *s = src + h * W;
        if (r < 0 || r >= Hb)
            continue;
        if (up_w == 1 && S == 1) {  /* the common case: one copy per row */
            Py_ssize_t w0 = at_w < 0 ? -at_w : 0;
            Py_ssize_t w1 = W < Wq - at_w ? W : Wq - at_w;
            if (w1 > w0)
                memcpy(row + w0 + at_w, s + w0, sizeof(FC_T) * (size_t)(w1 - w0));
        } else {
            for (w = 0; w < W; w++) {
                Py_ssize_t q = w * up_w + at_w;
                if (q >= 0 && q < rowstride)
                    row[(q % S) * Wq + q / S] = s[w];
            }
        }
    }
}

/* One register tile of the forward pass: out[f*NR + r] = the sum over taps t of the register
 * vector at buf[base[r] + off[t]] times wblk[t*FT + f], the taps in order. FT and NR are
 * constants at every call, so the loops unroll and the tile's FT*NR accumulators stay in
 * registers beside either its NR inputs and one weight, or (a tile of fewer filters than
 * vectors: FT*NR + FT + 1 registers, not FT*NR + NR + 1) its FT weights and one input. The
 * loads and each accumulator's order of FMAs are the same either way: the same bits. */
static inline __attribute__((always_inline)) void
FC_NAME(fc_fwd_tile)(const int FT, const int NR, const FC_T *buf, const Py_ssize_t *base,
                     const Py_ssize_t *off, fc_tapruns runs, const FC_T *wblk, FC_RT *out)
{
    FC_RT acc[FC_TILE_MAX], xv[FC_NR_MAX], wv[FC_NR_MAX];
    Py_ssize_t t, c;
    int f, r;
#pragma GCC unroll 32
    for (f = 0; f < FT * NR; f++)
        acc[f] = (FC_RT){0};
    for (c = 0; c < runs.planes; c++)  /* per input plane, the taps of its run (fc_tapruns) */
    for (t = c * runs.per + runs.t0; t < c * runs.per + runs.t1; t++) {
        const FC_T *p = buf + off[t];
        const FC_T *wt = wblk + t * FT;
        if (FT < NR) {
#pragma GCC unroll 16
            for (f = 0; f < FT; f++)
                wv[f] = wt[f] - (FC_RT){0};  /* the weight in every lane (w - 0 is w exactly) */
#pragma GCC unroll 16
            for (r = 0; r < NR; r++) {
                xv[0] = *(const FC_RTU *)(p + base[r]);
#pragma GCC unroll 16
                for (f = 0; f < FT; f++)
                    FC_FMA(&acc[f * NR + r], &xv[0], &wv[f]);
            }
            continue;
        }
#pragma GCC unroll 16
        for (r = 0; r < NR; r++)
            xv[r] = *(const FC_RTU *)(p + base[r]);
#pragma GCC unroll 16
        for (f = 0; f < FT; f++) {
            wv[0] = wt[f] - (FC_RT){0};
#pragma GCC unroll 16
            for (r = 0; r < NR; r++)
                FC_FMA(&acc[f * NR + r], &xv[r], &wv[0]);
        }
    }
#pragma GCC unroll 32
    for (f = 0; f < FT * NR; f++)
        out[f] = acc[f];
}

/* The tile's outputs (+ bias) into out (F planes of out_h x out_w): register vectors p0 + r
 * (those < npos; vecs of them per output row) of filters fb*FT + f (those < Fg) of group g.
 * Inlined, so the tile is stored from its registers; each vector's place is computed once,
 * not once per filter (a division per filter and vector cost more than a tenth of a tile's
 * time). */
static inline __attribute__((always_inline)) void
FC_NAME(fc_fwd_store)(const int FT, const int NR, const FC_RT *acc, Py_ssize_t p0, Py_ssize_t npos,
                      Py_ssize_t vecs, Py_ssize_t g, Py_ssize_t Fg, Py_ssize_t fb, const FC_T *bias,
                      FC_T *out, Py_ssize_t out_h, Py_ssize_t out_w)
{
    Py_ssize_t at[FC_NR_MAX], lanes[FC_NR_MAX];
    int f, r, nr = npos - p0 < NR ? (int)(npos - p0) : NR, whole = nr == NR && (fb + 1) * FT <= Fg;
    for (r = 0; r < nr; r++) {
        Py_ssize_t oh = (p0 + r) / vecs, ow0 = ((p0 + r) % vecs) * FC_RL;
        at[r] = oh * out_w + ow0;
        lanes[r] = out_w - ow0 < FC_RL ? out_w - ow0 : FC_RL;
        whole &= lanes[r] == FC_RL;
    }
    /* Constant trip counts and no early exit: every acc index is a constant, so that the
     * tile's accumulators stay in registers (a loop to a run-time bound kept them on the
     * stack in the AVX2 build, loads and stores around every FMA). A tile whose vectors
     * and filters all exist (most tiles) is stored without a branch per vector: the
     * branches drew 10 % of W1conv's forward samples in a C harness (AVX2 build). */
    if (whole) {
        FC_T *dst = out + (g * Fg + fb * FT) * out_h * out_w;
#pragma GCC unroll 16
        for (f = 0; f < FT; f++) {
            FC_RT b = (bias ? bias[g * Fg + fb * FT + f] : (FC_T)0) - (FC_RT){0};
#pragma GCC unroll 16
            for (r = 0; r < NR; r++) {
                FC_RT a = acc[f * NR + r];
                if (bias)
                    a += b;
                *(FC_RTU *)(dst + f * out_h * out_w + at[r]) = a;
            }
        }
        return;
    }
#pragma GCC unroll 16
    for (f = 0; f < FT; f++) {
        Py_ssize_t fi = fb * FT + f, plane = g * Fg + fi;
        FC_RT b = (bias && fi < Fg ? bias[plane] : (FC_T)0) - (FC_RT){0};
#pragma GCC unroll 16
        for (r = 0; r < NR; r++) {
            if (fi < Fg && r < nr) {
                FC_T *dst = out + plane * out_h * out_w + at[r];
                FC_RT a = acc[f * NR + r];
                if (bias)
                    a += b;
                if (lanes[r] == FC_RL)
                    *(FC_RTU *)dst = a;
                else
                    FC_STORE_RPART(dst, &a, (int)lanes[r]);
            }
        }
    }
}

static inline __attribute__((always_inline)) void
FC_NAME(fc_fwd_image_tiled)(const int FT, const int NR, const FC_T *buf, Py_ssize_t row_step,
                            const Py_ssize_t *off, Py_ssize_t taps, const FC_T *wpk,
                            Py_ssize_t G, Py_ssize_t Fg, const FC_T *bias, FC_T *out,
                            Py_ssize_t out_h, Py_ssize_t out_w, const fc_taprows *rows)
{
    Py_ssize_t vecs = (out_w + FC_RL - 1) / FC_RL, npos = out_h * vecs;
    Py_ssize_t nfb = (Fg + FT - 1) / FT, p0, g, fb, base[FC_NR_MAX];
    FC_RT acc[FC_TILE_MAX];
    fc_tapruns runs = {1, taps, 0, taps};
    int r;
    for (p0 = 0; p0 < npos; p0 += NR) {
        for (r = 0; r < NR; r++) {  /* past the last vector: recompute the last (not stored) */
            Py_ssize_t p = p0 + r < npos ? p0 + r : npos - 1;
            base[r] = (p / vecs) * row_step + (p % vecs) * FC_RL;
        }
        if (rows)
            runs = fc_tap_runs(rows, taps, p0 / vecs, (p0 + NR < npos ? p0 + NR - 1 : npos - 1) / vecs);
        for (g = 0; g < G; g++) {
            for (fb = 0; fb < nfb; fb++) {
                FC_NAME(fc_fwd_tile)(FT, NR, buf, base, off + g * taps, runs,
                                     wpk + (g * nfb + fb) * taps * FT, acc);
                FC_NAME(fc_fwd_store)(FT, NR, acc, p0, npos, vecs, g, Fg, fb, bias, out, out_h, out_w);
            }
        }
    }
}

/* The convolution of one packed image: out (G*Fg planes of out_h x out_w) = the taps of
 * each output read from buf (base(oh, ow0) = oh*row_step + ow0, plus off[g*taps + t]) times
 * the weights packed per group and block of FT filters, wpk [G][nfb][taps][FT] (zeros past
 * Fg), plus bias (NULL for none). rows (NULL: every tap): a tile skips the taps that read
 * only zero rows of buf (fc_taprows). FT is one of the build's tiles (direct.h's FC_NR<FT>
 * not 0); returns -1 for another. */
static int FC_NAME(fc_direct_image)(const FC_T *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                    Py_ssize_t taps, const FC_T *wpk, Py_ssize_t G, Py_ssize_t Fg,
                                    int FT, const FC_T *bias, FC_T *out,
                                    Py_ssize_t out_h, Py_ssize_t out_w, const fc_taprows *rows)
{
    switch (FT) {
#define FC_CASE(ft, nr) case ft: \
        FC_NAME(fc_fwd_image_tiled)(ft, nr, buf, row_step, off, taps, wpk, G, Fg, bias, out, out_h, out_w, rows); \
        return 0;
#if FC_NR8 > 0
    FC_CASE(8, FC_NR8)
#endif
    FC_CASE(4, FC_NR4)
    FC_CASE(3, FC_NR3)
    FC_CASE(2, FC_NR2)
    FC_CASE(1, FC_NR1)
#undef FC_CASE
    default:
        return -1;
    }
}

/* The bits of b where mask is all ones, of a where it is zero. */
#define FC_SELECT(mask, b, a) ((FC_RT)(((mask) & (FC_RI)(b)) | (~(mask) & (FC_RI)(a))))

/* The pick of 2x2 windows, one per lane: a0 a1 (top row) and a2 a3 (bottom row) of each
 * window, at the flat indices at, at + 1, at + step, at + step + 1. *m gets each window's
 * value and *idx its index: the better of each row's pair, then of those (FC_VBEATS: the
 * first maximum in row-major order, as pooling.pxi's loops pick it). */
static inline __attribute__((always_inline)) void
FC_NAME(fc_pool2_pick)(FC_RT a0, FC_RT a1, FC_RT a2, FC_RT a3, FC_RI at, FC_RI step, FC_RT *m, FC_RI *idx)
{
    FC_RI top = (FC_RI)FC_VBEATS(a1, a0), bottom = (FC_RI)FC_VBEATS(a3, a2), down;
    FC_RT u = FC_SELECT(top, a1, a0), v = FC_SELECT(bottom, a3, a2);
    FC_RI iu = at + (top & 1), iv = at + step + (bottom & 1);  /* a lane mask is 0 or -1 */
    down = (FC_RI)FC_VBEATS(v, u);
    *m = FC_SELECT(down, v, u);
    *idx = (down & iv) | (~down & iu);
}

/* n (1 to FC_RL) argmaxes of *idx to dst: int32 lanes as they are, int64 lanes narrowed.
 * A whole or a half vector is one plain store (the pooled windows of a vector are its
 * half): a masked store is slow on AMD cores (fc_pool2_relu spent 59 % of its time after
 * one, Zen 3). */
static inline __attribute__((always_inline)) void FC_NAME(fc_store_argmax)(int32_t *dst, const FC_RI *idx, int n)
{
#if FC_V == 16  /* int32 lanes */
    if (n == FC_RL)
        memcpy(dst, idx, sizeof(int32_t) * FC_RL);
    else if (n == FC_RL / 2)
        memcpy(dst, idx, sizeof(int32_t) * (FC_RL / 2));
    else
        fc_store_rpart_i32(dst, idx, n);
#else
    int l;
    for (l = 0; l < n; l++)
        dst[l] = (int32_t)(*idx)[l];
#endif
}

/* 2x2 / 2 max pooling, then ReLU, of rows (even) rows of F planes y (rows x out_w, then
 * FC_V items that may be read, never used) into z and am (F planes of pooled_h x pooled_w,
 * from pooled row pr0 on): the pooled value as np.maximum(max, 0) gives it (a NaN as it
 * is, -0.0 as +0.0) and the window's argmax ih*out_w + iw in the full output plane.
 * Register vectors of FC_RL columns: lane k compares column c+k with c+k+1 and
 * the even lanes are the windows (no branch: a branch per window mispredicts on every
 * other one); the even lanes are gathered into the low half (one shuffle) and stored
 * together. The last vector of a row may reach past 2*pooled_w (into the next row, or the
 * FC_V items past y): its lanes there are computed and never stored. On the 64-byte
 * vectors of the AVX2 build, GCC made this loop slower than the convolution it follows. */
static void FC_NAME(fc_pool2_relu)(const FC_T *y, Py_ssize_t F, Py_ssize_t rows, Py_ssize_t out_w,
                                   Py_ssize_t pooled_h, Py_ssize_t pooled_w, Py_ssize_t pr0,
                                   FC_T *z, int32_t *am)
{
    Py_ssize_t f, pr, c;
    FC_RI lane, even, step;
    int l;
    for (l = 0; l < FC_RL; l++) {
        lane[l] = l;
        even[l] = (2 * l) % FC_RL;  /* lanes 0, 2, 4, ... to the low half */
        step[l] = out_w;  /* from a pair's first row to its second */
    }
    for (f = 0; f < F; f++) {
        for (pr = 0; pr < rows / 2; pr++) {
            const FC_T *r0 = y + (f * rows + 2 * pr) * out_w, *r1 = r0 + out_w;
            FC_T *zr = z + (f * pooled_h + pr0 + pr) * pooled_w;
            int32_t *ar = am + (f * pooled_h + pr0 + pr) * pooled_w;
            FC_RI at = lane + (int32_t)(2 * (pr0 + pr) * out_w);  /* column c + k of the pair's first row */
            for (c = 0; c < 2 * pooled_w; c += FC_RL, at += FC_RL) {
                FC_RT m;
                FC_RI idx, keep;
                Py_ssize_t n = pooled_w - c / 2 < FC_RL / 2 ? pooled_w - c / 2 : FC_RL / 2;
                FC_NAME(fc_pool2_pick)(*(const FC_RTU *)(r0 + c), *(const FC_RTU *)(r0 + c + 1),
                                       *(const FC_RTU *)(r1 + c), *(const FC_RTU *)(r1 + c + 1), at, step, &m, &idx);
                keep = (FC_RI)((m > 0) | (m != m));
                m = (FC_RT)((FC_RI)m & keep);  /* +0.0 where ReLU clips */
                m = __builtin_shuffle(m, even);
                idx = __builtin_shuffle(idx, even);
                if (n == FC_RL / 2) {  /* a constant size: one store each */
                    memcpy(zr + c / 2, &m, sizeof(FC_T) * (FC_RL / 2));
                    FC_NAME(fc_store_argmax)(ar + c / 2, &idx, FC_RL / 2);
                } else {  /* a row's last windows: one partial store (a memcpy call per row cost more than the pool) */
                    FC_STORE_RPART(zr + c / 2, &m, (int)n);
                    FC_NAME(fc_store_argmax)(ar + c / 2, &idx, (int)n);
                }
            }
        }
    }
}

/* The 2x2 windows c .. c + n - 1 (n = 1 to FC_RL) of the row pair r0, r1 (windows at
 * stride 2, column 2c on): v[0] and v[1] the top row's even and odd columns, v[2] and v[3]
 * the bottom row's. Two loads per row, split by two shuffles; lanes past n are computed
 * from what follows the windows (the next row), or from a zeroed copy where the loads
 * would reach end (one past the last item that may be read). */
static inline __attribute__((always_inline)) void
FC_NAME(fc_pool2_columns)(const FC_T *r0, const FC_T *r1, Py_ssize_t c, int n, const FC_T *end,
                          FC_RI evens, FC_RI odds, FC_RT *v)
{
    FC_T top[2 * FC_RL], bottom[2 * FC_RL];
    const FC_T *t = r0 + 2 * c, *b = r1 + 2 * c;
    FC_RT t0, t1, b0, b1;
    if (n < FC_RL && b + 2 * FC_RL > end) {  /* zeroed here only: zeroing per call cost 3x in fc_max3s2_plane */
        memset(top, 0, sizeof(top));
        memset(bottom, 0, sizeof(bottom));
        memcpy(top, t, sizeof(FC_T) * (size_t)(2 * n));
        memcpy(bottom, b, sizeof(FC_T) * (size_t)(2 * n));
        t = top;
        b = bottom;
    }
    t0 = *(const FC_RTU *)t;
    t1 = *(const FC_RTU *)(t + FC_RL);
    b0 = *(const FC_RTU *)b;
    b1 = *(const FC_RTU *)(b + FC_RL);
    v[0] = __builtin_shuffle(t0, t1, evens);
    v[1] = __builtin_shuffle(t0, t1, odds);
    v[2] = __builtin_shuffle(b0, b1, evens);
    v[3] = __builtin_shuffle(b0, b1, odds);
}

/* 2x2 / 2 pooling without padding of one plane x (H x W, H >= 2 out_h, W >= 2 out_w) into
 * out (out_h x out_w), FC_RL windows at a time (fc_pool2_columns; a row's last windows as
 * its last FC_RL again where it has that many, as copies cost more). Max (am not NULL): each
 * window's first maximum (NaN on top) and its index ih*W + iw in am, the bits of
 * pooling.pxi's max_pool_direct. Average (am NULL): (((0 + a0) + a1) + a2) + a3, times
 * inv, the bits of pooling.pxi's avg_pool_forward. Loads may read up to end (one past the
 * last item of x's buffer). pooling.pxi's loops spent 6 cycles per max window on this
 * (Zen 3); these, 2. */
static void FC_NAME(fc_pool2_plane)(const FC_T *x, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w, FC_T inv,
                                    const FC_T *end, FC_T *out, int32_t *am)
{
    Py_ssize_t oh, c;
    FC_RI evens, odds, step;  /* evens: the shuffle mask, and window k's first column 2k */
    int l, n;
    for (l = 0; l < FC_RL; l++) {
        evens[l] = 2 * l;
        odds[l] = 2 * l + 1;
        step[l] = W;
    }
    for (oh = 0; oh < out_h; oh++) {
        const FC_T *r0 = x + 2 * oh * W, *r1 = r0 + W;
        FC_RI at = evens + (int32_t)(2 * oh * W);  /* the top-left pixel of window c + k */
        for (c = 0; c < out_w; c += FC_RL, at += 2 * FC_RL) {
            FC_RT v[4], m;
            FC_RI idx;
            n = out_w - c < FC_RL ? (int)(out_w - c) : FC_RL;
            if (n < FC_RL && c > 0) {  /* the row's last FC_RL windows again (the same values) */
                at -= (int32_t)(2 * (FC_RL - n));
                c -= FC_RL - n;
                n = FC_RL;
            }
            FC_NAME(fc_pool2_columns)(r0, r1, c, n, end, evens, odds, v);
            if (am) {
                FC_NAME(fc_pool2_pick)(v[0], v[1], v[2], v[3], at, step, &m, &idx);
                FC_NAME(fc_store_argmax)(am + oh * out_w + c, &idx, n);
            } else {
                m = (((((FC_RT){0} + v[0]) + v[1]) + v[2]) + v[3]) * inv;
            }
            if (n == FC_RL)
                *(FC_RTU *)(out + oh * out_w + c) = m;
            else
                FC_STORE_RPART(out + oh * out_w + c, &m, n);
        }
    }
}

/* The argmaxes am[0 .. FC_RL) as lanes of FC_RI (int32 or int64 lanes). */
static inline __attribute__((always_inline)) FC_RI FC_NAME(fc_load_argmax)(const int32_t *am)
{
#if FC_V == 16  /* int32 lanes */
    FC_RI a;
    memcpy(&a, am, sizeof(int32_t) * FC_RL);
    return a;
#else
    typedef int32_t fc_ai __attribute__((vector_size(FC_RL * 4)));
    fc_ai a;
    memcpy(&a, am, sizeof(int32_t) * FC_RL);
    return __builtin_convertvector(a, FC_RI);
#endif
}

/* The windows c .. c + n - 1 (n = 1 to FC_RL; their top-left pixels at) of one row of
 * fc_pool2_backward_plane: d and k hold their gradients and argmaxes (lanes past n: 0 and
 * a pixel of their window), their 2n pixels of rows r0 and r1 are written; returns how many
 * of the windows from lane skip on have their argmax outside them. */
static inline __attribute__((always_inline)) Py_ssize_t
FC_NAME(fc_pool2_backward_windows)(FC_RT d, FC_RI k, FC_RI at, FC_RI step, FC_RI lo, FC_RI hi,
                                   FC_T *r0, FC_T *r1, int n, int skip)
{
    FC_RI di = (FC_RI)d;
    FC_RI m00 = k == at, m01 = k == at + 1, m10 = k == at + step, m11 = k == at + step + 1;
    FC_RT v00 = (FC_RT)(di & m00), v01 = (FC_RT)(di & m01);
    FC_RT v10 = (FC_RT)(di & m10), v11 = (FC_RT)(di & m11);
    FC_RI none = ~(m00 | m01 | m10 | m11);
    FC_RT t00 = __builtin_shuffle(v00, v01, lo), t01 = __builtin_shuffle(v00, v01, hi);
    FC_RT t10 = __builtin_shuffle(v10, v11, lo), t11 = __builtin_shuffle(v10, v11, hi);
    Py_ssize_t bad = 0;
    int l;
    for (l = 0; l < FC_RL; l++)
        bad += none[l] & (l >= skip);
    if (n == FC_RL) {
        *(FC_RTU *)r0 = t00;
        *(FC_RTU *)(r0 + FC_RL) = t01;
        *(FC_RTU *)r1 = t10;
        *(FC_RTU *)(r1 + FC_RL) = t11;
    } else if (2 * n < FC_RL) {
        FC_STORE_RPART(r0, &t00, 2 * n);
        FC_STORE_RPART(r1, &t10, 2 * n);
    } else {
        *(FC_RTU *)r0 = t00;
        *(FC_RTU *)r1 = t10;
        if (2 * n > FC_RL) {
            FC_STORE_RPART(r0 + FC_RL, &t01, 2 * n - FC_RL);
            FC_STORE_RPART(r1 + FC_RL, &t11, 2 * n - FC_RL);
        }
    }
    return bad;
}

/* The gradient dx (H x W) of one plane of a 2x2 / 2 max pool without padding (H >= 2 out_h,
 * W >= 2 out_w), from dout and am (out_h x out_w; am the flat index ih*W + iw of each
 * window's maximum): each window's pixel at am gets 0 + dout (-0.0 becomes +0.0, as the
 * "+=" of pooling.pxi's max_pool_backward), its other three +0.0, pixels of no window +0.0.
 * Every pixel is written once, FC_RL windows at a time (two rows of 2*FC_RL pixels, the
 * four corners interleaved by shuffles); a row's last windows (one at a time, they took
 * most of the time on 14x14 planes) as the row's last FC_RL windows again, their pixels
 * already written rewritten with the same values, or, in a row of fewer windows, from
 * zero-padded copies and stored in part (FC_STORE_RPART: plain stores in the AVX2 build): no memset,
 * no scatter. Returns how many windows have their am outside them (no pixel of theirs got
 * dout): the caller then redoes the plane with the scatter, which routes an index
 * anywhere in the plane. */
static Py_ssize_t FC_NAME(fc_pool2_backward_plane)(const FC_T *dout, const int32_t *am, Py_ssize_t H,
                                                   Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w, FC_T *dx)
{
    Py_ssize_t oh, c, bad = 0;
    FC_RI evens, lo, hi, step;  /* window k's first column 2k; lane l of the interleaves */
    int l;
    for (l = 0; l < FC_RL; l++) {
        evens[l] = 2 * l;
        lo[l] = (l % 2 ? FC_RL : 0) + l / 2;  /* lanes 0, FC_RL, 1, FC_RL + 1, ... */
        hi[l] = lo[l] + FC_RL / 2;
        step[l] = W;
    }
    for (oh = 0; oh < out_h; oh++) {
        const FC_T *g = dout + oh * out_w;
        const int32_t *a = am + oh * out_w;
        FC_T *r0 = dx + 2 * oh * W, *r1 = r0 + W;
        FC_RI at = evens + (int32_t)(2 * oh * W);  /* the top-left pixel of window c + k */
        for (c = 0; c + FC_RL <= out_w; c += FC_RL, at += 2 * FC_RL)
            bad += FC_NAME(fc_pool2_backward_windows)(*(const FC_RTU *)(g + c) + (FC_RT){0},
                                                      FC_NAME(fc_load_argmax)(a + c), at, step, lo, hi,
                                                      r0 + 2 * c, r1 + 2 * c, FC_RL, 0);
        if (c < out_w && c > 0) {  /* windows out_w - FC_RL ..: those before c counted already */
            Py_ssize_t c2 = out_w - FC_RL;
            bad += FC_NAME(fc_pool2_backward_windows)(*(const FC_RTU *)(g + c2) + (FC_RT){0},
                                                      FC_NAME(fc_load_argmax)(a + c2),
                                                      at - (int32_t)(2 * (c - c2)), step, lo, hi,
                                                      r0 + 2 * c2, r1 + 2 * c2, FC_RL, (int)(c - c2));
        } else if (c < out_w) {  /* fewer than FC_RL windows; lanes past them: 0 at their window */
            int n = (int)(out_w - c);
            FC_RT d = {0};
            int32_t ab[FC_RL];
            memcpy(&d, g + c, sizeof(FC_T) * (size_t)n);
            memcpy(ab, a + c, sizeof(int32_t) * (size_t)n);
            for (l = n; l < FC_RL; l++)
                ab[l] = (int32_t)at[l];
            bad += FC_NAME(fc_pool2_backward_windows)(d + (FC_RT){0}, FC_NAME(fc_load_argmax)(ab), at, step,
                                                      lo, hi, r0 + 2 * c, r1 + 2 * c, n, 0);
        }
        if (W > 2 * out_w) {  /* columns of no window */
            memset(r0 + 2 * out_w, 0, sizeof(FC_T) * (size_t)(W - 2 * out_w));
            memset(r1 + 2 * out_w, 0, sizeof(FC_T) * (size_t)(W - 2 * out_w));
        }
    }
    if (H > 2 * out_h)  /* rows of no window */
        memset(dx + 2 * out_h * W, 0, sizeof(FC_T) * (size_t)((H - 2 * out_h) * W));
    return bad;
}

/* Max pooling of windows 3 columns wide at column stride 2, without column padding, of one
 * plane x (H x W, W >= 2 out_w + 1) into out and am (out_h x out_w): window (oh, ow) covers
 * columns 2ow .. 2ow + 2 of rows oh*stride_h - pad_h + (0 .. kh - 1) that are in the plane
 * (at least one). Each window's first maximum in row-major order (NaN on top) and its index
 * ih*W + iw, the bits of pooling.pxi's max_pool_direct: per window row the first maximum of
 * its three columns (even, odd, next even: FC_VBEATS picks in order), then of the rows in
 * order. FC_RL windows at a time, each row read by three loads (the third for the next even
 * column) where they stay before end (one past the last item that may be read), else from
 * a copy. Lanes past a row's last window are computed from whatever they read and never
 * stored. pooling.pxi's separable loops spent 10-15 cycles per window on W4max3x3s2 (Zen 3).
 * A column block's windows go down the plane one after the other, so that a row that ends
 * one window and starts the next (3x3/2: every other row) is picked once, not twice. */
static void FC_NAME(fc_max3s2_plane)(const FC_T *x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h,
                                     Py_ssize_t out_w, Py_ssize_t kh, Py_ssize_t stride_h, Py_ssize_t pad_h,
                                     const FC_T *end, FC_T *out, int32_t *am)
{
    Py_ssize_t oh, c, ih, h0, h1;
    FC_RI evens, odds, next;  /* evens: the shuffle mask, and window k's first column 2k */
    FC_T copy[3 * FC_RL];
    int l, n;
    for (l = 0; l < FC_RL; l++) {
        evens[l] = 2 * l;
        odds[l] = 2 * l + 1;
        next[l] = l + 1;  /* evens shifted by one window: lane FC_RL - 1 takes the third load's lane 0 */
    }
    for (c = 0; c < out_w; c += FC_RL) {
        FC_RT last_v = {0};  /* the pick of row last_ih (-1: none yet) in this column block */
        FC_RI last_i = {0};
        Py_ssize_t last_ih = -1;
        n = out_w - c < FC_RL ? (int)(out_w - c) : FC_RL;
        for (oh = 0; oh < out_h; oh++) {
            FC_RT m = {0}, t0, t1, t2, e, o, e2, u, v;
            FC_RI a = {0}, at, b1, b2, i;
            h0 = oh * stride_h - pad_h;
            h1 = h0 + kh < H ? h0 + kh : H;
            h0 = h0 > 0 ? h0 : 0;
            for (ih = h0; ih < h1; ih++) {
                if (ih != last_ih) {  /* this row's pick: the three columns of each window */
                    const FC_T *r = x + ih * W + 2 * c;
                    if (__builtin_expect(r + 3 * FC_RL > end, 0)) {  /* near the end of x: the window columns only */
                        memset(copy, 0, sizeof(copy));
                        memcpy(copy, r, sizeof(FC_T) * (size_t)(2 * n + 1));
                        r = copy;
                    }
                    t0 = *(const FC_RTU *)r;
                    t1 = *(const FC_RTU *)(r + FC_RL);
                    t2 = *(const FC_RTU *)(r + 2 * FC_RL);
                    e = __builtin_shuffle(t0, t1, evens);
                    o = __builtin_shuffle(t0, t1, odds);
                    e2 = __builtin_shuffle(e, t2, next);
                    at = evens + (int32_t)(ih * W + 2 * c);
                    b1 = (FC_RI)FC_VBEATS(o, e);
                    u = FC_SELECT(b1, o, e);
                    i = at + (b1 & 1);
                    b2 = (FC_RI)FC_VBEATS(e2, u);
                    last_v = FC_SELECT(b2, e2, u);
                    last_i = (b2 & (at + 2)) | (~b2 & i);
                    last_ih = ih;
                }
                v = last_v;
                i = last_i;
                if (ih == h0) {
                    m = v;
                    a = i;
                } else {
                    b1 = (FC_RI)FC_VBEATS(v, m);
                    m = FC_SELECT(b1, v, m);
                    a = (b1 & i) | (~b1 & a);
                }
            }
            if (n == FC_RL)
                *(FC_RTU *)(out + oh * out_w + c) = m;
            else
                FC_STORE_RPART(out + oh * out_w + c, &m, n);
            FC_NAME(fc_store_argmax)(am + oh * out_w + c, &a, n);
        }
    }
}

/* conv (+ bias) -> 2x2 / 2 max pool -> ReLU of one packed image (fc_direct_image's
 * arguments), band conv rows at a time (even) into y (F planes of band x out_w, small
 * enough to stay in cache), each band pooled into z and am (fc_pool2_relu) before the
 * next: the full-size output is never written. Rows past 2*pooled_h are not computed.
 * Returns -1 for an FT that fc_direct_image has not. */
static int FC_NAME(fc_direct_pool2_image)(const FC_T *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                          Py_ssize_t taps, const FC_T *wpk, Py_ssize_t G, Py_ssize_t Fg,
                                          int FT, const FC_T *bias, Py_ssize_t out_w, Py_ssize_t band,
                                          FC_T *y, Py_ssize_t pooled_h, Py_ssize_t pooled_w,
                                          FC_T *z, int32_t *am, const fc_taprows *rows)
{
    Py_ssize_t pr0, rows_now;
    fc_taprows band_rows;
    for (pr0 = 0; pr0 < pooled_h; pr0 += band / 2) {
        rows_now = band < 2 * (pooled_h - pr0) ? band : 2 * (pooled_h - pr0);
        if (rows) {  /* the band's first output row is its row 0 */
            band_rows = *rows;
            band_rows.lo -= 2 * pr0 * rows->step;
            band_rows.hi -= 2 * pr0 * rows->step;
        }
        if (FC_NAME(fc_direct_image)(buf + 2 * pr0 * row_step, row_step, off, taps, wpk, G, Fg, FT, bias,
                                     y, rows_now, out_w, rows ? &band_rows : NULL))
            return -1;
        FC_NAME(fc_pool2_relu)(y, G * Fg, rows_now, out_w, pooled_h, pooled_w, pr0, z, am);
    }
    return 0;
}

/* dout of one image (F planes of out_h x out_w) as F planes of npos segments of V lanes,
 * zeros past out_w; db[f] += the sum of plane f, in double, in row-major order. */
static void FC_NAME(fc_pack_dout)(const FC_T *dout, Py_ssize_t F, Py_ssize_t out_h, Py_ssize_t out_w,
                                  FC_T *dpk, double *db)
{
    Py_ssize_t segs = (out_w + FC_V - 1) / FC_V, f, oh, ow;
    int l;
    for (f = 0; f < F; f++) {
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};  /* eight sums (a vector), added in a fixed order */
        for (oh = 0; oh < out_h; oh++) {
            const FC_T *src = dout + (f * out_h + oh) * out_w;
            FC_T *row = dpk + (f * out_h + oh) * segs * FC_V;
            memcpy(row, src, sizeof(FC_T) * (size_t)out_w);
            memset(row + out_w, 0, sizeof(FC_T) * (size_t)(segs * FC_V - out_w));
            /* the packed row, its zeros too: + 0 leaves a sum that starts at +0 as it is, and
             * whole groups of 8 keep s in registers (a tail loop put it on the stack) */
            for (ow = 0; ow < segs * FC_V; ow += 8)
#pragma GCC unroll 8
                for (l = 0; l < 8; l++)
                    s[l] += (double)row[ow + l];
        }
        db[f] += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
}

/* db[f] += the sum of plane f of dpk, packed already as fc_pack_dout packs (rows that fill
 * their segments: the routed dout of a max pool): fc_pack_dout's sums in its order. */
static void FC_NAME(fc_dout_sums)(const FC_T *dpk, Py_ssize_t F, Py_ssize_t out_h, Py_ssize_t out_w, double *db)
{
    Py_ssize_t n = out_h * ((out_w + FC_V - 1) / FC_V) * FC_V, f, i;
    int l;
    for (f = 0; f < F; f++) {
        const FC_T *plane = dpk + f * n;
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (i = 0; i < n; i += 8)
#pragma GCC unroll 8
            for (l = 0; l < 8; l++)
                s[l] += (double)plane[i + l];
        db[f] += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
}

/* One dW tile over count consecutive row segments of one output row, starting at b in the
 * packed image and at dp in each filter's packed dout, both already at register vector j
 * of a segment (the pass of fc_dw_image_tiled); all full (masked = 0) or the last, partial
 * one of the row (masked = 1: the input's lanes past out_w read as +0, so that a NaN there
 * never reaches dW). acc[f*WT + t] += those lanes of filter f's dout times tap t's. */
static inline __attribute__((always_inline)) void
FC_NAME(fc_dw_run)(const int WF, const int WT, const int masked, FC_RI mask, FC_RT *acc,
                   const FC_T *b, const Py_ssize_t *off, const FC_T *const *drow, Py_ssize_t dp,
                   Py_ssize_t count)
{
    FC_RT d[FC_TILE_MAX], xv;
    Py_ssize_t k;
    int f, t;
    for (k = 0; k < count; k++, b += FC_V, dp += FC_V) {
#pragma GCC unroll 16
        for (f = 0; f < WF; f++)
            d[f] = *(const FC_RTU *)(drow[f] + dp);
#pragma GCC unroll 16
        for (t = 0; t < WT; t++) {
            xv = *(const FC_RTU *)(b + off[t]);
            if (masked)
                xv = (FC_RT)((FC_RI)xv & mask);
#pragma GCC unroll 16
            for (f = 0; f < WF; f++)
                FC_FMA(&acc[f * WT + t], &d[f], &xv);
        }
    }
}

/* fc_dw_run over segs consecutive segments of every row (npos in all), in one loop: the
 * segments whose register vector j is whole (out_w a multiple of V, or j's lanes all before
 * out_w in a row's last segment), or all but the last when j's lanes are all past out_w
 * there (they would add 0 * 0 to sums that start at +0: nothing). At each row's end the
 * packed image's pointer jumps by gap and dout's by dgap (dp: register vector j's place in
 * a segment). A loop per row (two segments for a 32-wide output) spent about a quarter of
 * its time outside its FMAs. */
static inline __attribute__((always_inline)) void
FC_NAME(fc_dw_rows)(const int WF, const int WT, FC_RT *acc, const FC_T *b, const Py_ssize_t *off,
                    const FC_T *const *drow, Py_ssize_t dp, Py_ssize_t segs, Py_ssize_t gap,
                    Py_ssize_t dgap, Py_ssize_t npos)
{
    FC_RT d[FC_TILE_MAX], xv;
    Py_ssize_t o[FC_TILE_MAX], p, k = 0;
    int f, t;
#pragma GCC unroll 16
    for (t = 0; t < WT; t++)
        o[t] = off[t];
    for (p = 0; p < npos; p++) {
#pragma GCC unroll 16
        for (f = 0; f < WF; f++)
            d[f] = *(const FC_RTU *)(drow[f] + dp);
#pragma GCC unroll 16
        for (t = 0; t < WT; t++) {
            xv = *(const FC_RTU *)(b + o[t]);
#pragma GCC unroll 16
            for (f = 0; f < WF; f++)
                FC_FMA(&acc[f * WT + t], &d[f], &xv);
        }
        b += FC_V;
        dp += FC_V;
        if (++k == segs) {
            k = 0;
            b += gap;
            dp += dgap;
        }
    }
}

/* dW's tiles over one image, for filters f0 <= f < f1 of each group: per block of WF
 * filters and WT taps, one pass per register vector j of a segment (FC_K passes; one in
 * the AVX-512 build), so that a tile's accumulators are WF x WT register vectors whatever
 * the build (each lane sums its own products, in segment order, in any pass order and
 * whatever the tile: the same bits). */
static inline __attribute__((always_inline)) void
FC_NAME(fc_dw_image_tiled)(const int WF, const int WT, const FC_T *buf, Py_ssize_t row_step,
                           const Py_ssize_t *off, Py_ssize_t tapsp, const FC_T *dpk,
                           Py_ssize_t G, Py_ssize_t Fg, Py_ssize_t f0, Py_ssize_t f1,
                           Py_ssize_t out_h, Py_ssize_t out_w, FC_T *accv)
{
    Py_ssize_t segs = (out_w + FC_V - 1) / FC_V, npos = out_h * segs, plane = npos * FC_V;
    Py_ssize_t tail = out_w - (segs - 1) * FC_V;  /* lanes of the last segment of a row */
    Py_ssize_t nfb = (f1 - f0 + WF - 1) / WF, g, fb, tb, oh;
    FC_RI mask[FC_K];
    FC_RT acc[FC_TILE_MAX];
    const FC_T *drow[FC_TILE_MAX];
    int f, t, l, j, whole;
    for (l = 0; l < FC_V; l++)
        mask[l / FC_RL][l % FC_RL] = l < tail ? -1 : 0;
    for (g = 0; g < G; g++) {
        for (fb = 0; fb < nfb; fb++) {
            Py_ssize_t fs = f0 + fb * WF;  /* the block's first filter */
            for (f = 0; f < WF; f++) {  /* past f1: its last filter again (never stored) */
                Py_ssize_t fi = fs + f < f1 ? fs + f : f1 - 1;
                drow[f] = dpk + (g * Fg + fi) * plane;
            }
            for (tb = 0; tb < tapsp; tb += WT) {
                const Py_ssize_t *o = off + g * tapsp + tb;
                for (j = 0; j < FC_K; j++) {
                    Py_ssize_t dj = j * FC_RL;
                    const FC_T *bj = buf + dj;
                    for (f = 0; f < WF; f++)
                        for (t = 0; t < WT; t++)
                            acc[f * WT + t] = *(const FC_RTU *)(accv + ((g * Fg + fs + f) * tapsp + tb + t) * FC_V + dj);
                    /* register vector j whole in every segment (in the last one too), or
                     * past out_w in the last one (then skipped): one loop over the image, no
                     * mask; else per row, the full segments then the masked last */
                    whole = tail >= (j + 1) * FC_RL;
                    if (whole)
                        FC_NAME(fc_dw_rows)(WF, WT, acc, bj, o, drow, dj, segs, row_step - segs * FC_V, 0, npos);
                    else if (tail <= j * FC_RL && segs > 1)
                        FC_NAME(fc_dw_rows)(WF, WT, acc, bj, o, drow, dj, segs - 1,
                                            row_step - (segs - 1) * FC_V, FC_V, out_h * (segs - 1));
                    for (oh = 0; oh < out_h && !whole && tail > j * FC_RL; oh++) {
                        const FC_T *b = bj + oh * row_step;
                        Py_ssize_t full = segs - 1;
                        FC_NAME(fc_dw_run)(WF, WT, 0, mask[j], acc, b, o, drow, oh * segs * FC_V + dj, full);
                        FC_NAME(fc_dw_run)(WF, WT, 1, mask[j], acc, b + full * FC_V, o, drow,
                                           (oh * segs + full) * FC_V + dj, 1);
                    }
                    for (f = 0; f < WF && fs + f < f1; f++)
                        for (t = 0; t < WT; t++)
                            *(FC_RTU *)(accv + ((g * Fg + fs + f) * tapsp + tb + t) * FC_V + dj) = acc[f * WT + t];
                }
            }
        }
    }
}

/* dW's lane sums of one image added to accv [G*Fg][tapsp][V]: for filter f of group g and
 * tap t, the products dout[f] * buf[base + off[g*tapsp + t]] over all row segments.
 * tapsp is the taps per group rounded up to a multiple of FC_WT (offsets past the real
 * taps repeat a real one; their sums are never used). dpk is fc_pack_dout's. accv holds
 * G*Fg * tapsp * V. */
static void FC_NAME(fc_direct_dw_image)(const FC_T *buf, Py_ssize_t row_step, const Py_ssize_t *off,
                                        Py_ssize_t tapsp, const FC_T *dpk, Py_ssize_t G, Py_ssize_t Fg,
                                        Py_ssize_t out_h, Py_ssize_t out_w, FC_T *accv)
{
    /* the filters past the last whole block in a narrower tile: padding them to FC_WF
     * filters spent 2 of every 18 slots on W3conv5x5's 16 filters (float64, 3 x 4) */
    Py_ssize_t full = Fg - Fg % FC_WF;
    if (full > 0)
        FC_NAME(fc_dw_image_tiled)(FC_WF, FC_WT, buf, row_step, off, tapsp, dpk, G, Fg, 0, full, out_h, out_w, accv);
    switch (Fg - full) {
    case 1:
        FC_NAME(fc_dw_image_tiled)(1, FC_WT, buf, row_step, off, tapsp, dpk, G, Fg, full, Fg, out_h, out_w, accv);
        break;
    case 2:
        FC_NAME(fc_dw_image_tiled)(2, FC_WT, buf, row_step, off, tapsp, dpk, G, Fg, full, Fg, out_h, out_w, accv);
        break;
    case 3:
        FC_NAME(fc_dw_image_tiled)(3, FC_WT, buf, row_step, off, tapsp, dpk, G, Fg, full, Fg, out_h, out_w, accv);
        break;
    }
}

/* parts[f*taps + t] = the V lanes of accv [F][tapsp][V] summed in lane order. */
static void FC_NAME(fc_dw_reduce)(const FC_T *accv, Py_ssize_t F, Py_ssize_t taps, Py_ssize_t tapsp,
                                  FC_T *parts)
{
    Py_ssize_t f, t;
    int l;
    for (f = 0; f < F; f++) {
        for (t = 0; t < taps; t++) {
            const FC_T *a = accv + (f * tapsp + t) * FC_V;
            FC_T s = a[0];
            for (l = 1; l < FC_V; l++)
                s += a[l];
            parts[f * taps + t] = s;
        }
    }
}

#undef FC_NAME
