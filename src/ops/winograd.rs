//! Winograd F(2×2, 3×3) (Lavin & Gray, 2016) for 3×3 stride-1 convolutions with one pixel of
//! zero padding: most of a ResNet's 3×3 work. A 2×2 output tile costs 16 multiply-adds per
//! (input, output) channel pair instead of 36, in 16 GEMMs:
//!
//! - weight transform `U[ξ][Cout, Cin] = (G g Gᵀ)[ξ]` of each 3×3 kernel `g`, ξ over the 16
//!   entries of a 4×4 tile;
//! - input transform `V[ξ][Cin, T] = (Bᵀ d B)[ξ]` of the 4×4 input patch `d` of each tile
//!   (tiles at stride 2, patches overlapping by 2, zero outside the image);
//! - `M[ξ] = U[ξ] @ V[ξ]` (`[Cout, T]`);
//! - output transform `y = Aᵀ m A` (2×2) of each tile's 4×4 `m`.
//!
//! with `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]` and
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`: every coefficient is 0, ±1 or ±½, so the result differs from
//! the direct sum by rounding only. The input gradient of such a convolution is again one (the
//! kernel rotated by 180°, input and output channels swapped: [`weight_transform`] with `flip`),
//! so both passes share [`conv`]. The weight gradient is the adjoint: per tile
//! `dU[ξ] = Σ (A dy Aᵀ)[ξ] V[ξ]`, 16 GEMMs over the tiles, then `dw = Gᵀ dU G`
//! ([`grad_weight`]).
//!
//! Images are laid side by side in the GEMMs when they have few tiles, as in conv2d.

use rayon::prelude::*;

use super::sgemm::{sgemm, MatRef};
use super::simd::vectorised;

/// Tiles one GEMM should span: small images (7², 14²) are put side by side up to this.
const BLOCK_TILES: usize = 256;

/// `U[rows][16][cols]` (row `r` of plane ξ at `(r·16 + ξ)·cols`, see [`plane`]) for the
/// kernels `w[Cout, Cin, 3, 3]`: `rows = Cout, cols = Cin`, or with `flip` the input-gradient
/// convolution's `rows = Cin, cols = Cout` with each kernel rotated by 180°. Parallel over rows.
pub(crate) fn weight_transform(w: &[f32], cout: usize, cin: usize, flip: bool) -> Vec<f32> {
    let (rows, cols) = if flip { (cin, cout) } else { (cout, cin) };
    let mut u = super::alloc::overwritten_f32(16 * rows * cols);
    u.par_chunks_mut((16 * cols).max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            for col in 0..cols {
                let (o, i) = if flip { (col, row) } else { (row, col) };
                let mut g = [0f32; 9];
                g.copy_from_slice(&w[(o * cin + i) * 9..][..9]);
                if flip {
                    g.reverse();
                }
                // G g (4×3), then (G g) Gᵀ (4×4).
                let gg = |c: usize| {
                    let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
                    [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
                };
                let (c0, c1, c2) = (gg(0), gg(1), gg(2));
                for r in 0..4 {
                    let (a, b, d) = (c0[r], c1[r], c2[r]);
                    let at = r * 4 * cols + col;
                    dst[at] = a;
                    dst[at + cols] = 0.5 * (a + b + d);
                    dst[at + 2 * cols] = 0.5 * (a - b + d);
                    dst[at + 3 * cols] = d;
                }
            }
        });
    u
}

/// Plane ξ of a [`weight_transform`] as a `[rows, cols]` matrix (row stride `16·cols`).
fn plane(u: &[f32], xi: usize, rows: usize, cols: usize) -> MatRef<'_> {
    MatRef {
        data: &u[xi * cols..],
        rows,
        cols,
        rs: 16 * cols,
        cs: 1,
    }
}

/// Shapes of one call: images of `c` channels `h × w` in, `k` channels of the same size out.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub c: usize,
    pub k: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    fn th(&self) -> usize {
        self.h.div_ceil(2)
    }
    fn tw(&self) -> usize {
        self.w.div_ceil(2)
    }
    /// GEMM columns per image: the tiles as `th` rows of `tw + 1`, the last of each row a
    /// spare, so that the 16 entries of every tile are whole-plane shifts (see
    /// [`input_transform`]).
    fn cols(&self) -> usize {
        self.th() * (self.tw() + 1)
    }
    /// Images per GEMM: enough for about [`BLOCK_TILES`] columns, at most one thread's share of
    /// the `n` images.
    fn block_images(&self, n: usize, threads: usize) -> usize {
        BLOCK_TILES
            .div_ceil(self.cols().max(1))
            .min(n.div_ceil(threads.max(1)))
            .max(1)
    }
    /// Floats of one polyphase plane: `(th + 1) · (tw + 1)` plus one for the last shift.
    fn phase(&self) -> usize {
        (self.th() + 1) * (self.tw() + 1) + 1
    }
}

/// One thread's buffers for blocks of `nb` images.
struct Scratch {
    /// `V[16][C, nb·cols]`.
    v: Vec<f32>,
    /// `M[16][K, nb·cols]`.
    m: Vec<f32>,
    /// Four polyphase planes and eight transform rows.
    work: Vec<f32>,
}

impl Scratch {
    fn new(s: &Shape, nb: usize) -> Self {
        let cols = nb * s.cols();
        Scratch {
            v: super::alloc::overwritten_f32(16 * s.c * cols),
            m: super::alloc::overwritten_f32(16 * s.k * cols),
            work: vec![0f32; 12 * s.phase()],
        }
    }
}

/// `out[N, K, H, W] = conv3x3(x[N, C, H, W])` with stride 1 and padding 1, the kernels given as
/// `u` = [`weight_transform`] (`[K][16][C]`). Parallel over blocks of images.
pub(crate) fn conv(
    x: &[f32],
    u: &[f32],
    n: usize,
    s: Shape,
    out: &mut [f32],
) -> Result<(), String> {
    let threads = super::num_threads();
    let (chw, khw) = (s.c * s.h * s.w, s.k * s.h * s.w);
    let nb = s.block_images(n, threads);
    let scratch = || Scratch::new(&s, nb);
    super::blocks::for_blocks(out, khw, nb, threads, scratch, |sc, i, o, threads| {
        let m = o.len() / khw.max(1);
        conv_block(&x[i * chw..][..m * chw], u, m, &s, o, sc, threads)
    })
}

/// `V[16][C, nb·cols]` of the `nb` images `x[nb, C, H, W]` ([`input_transform`]).
fn transform_inputs(x: &[f32], nb: usize, s: &Shape, work: &mut [f32], v: &mut [f32]) {
    let (per, hw) = (s.cols(), s.h * s.w);
    let cols = nb * per;
    for b in 0..nb {
        for ch in 0..s.c {
            let img = &x[(b * s.c + ch) * hw..][..hw];
            input_transform(img, s, work, v, s.c * cols, ch * cols + b * per);
        }
    }
}

fn conv_block(
    x: &[f32],
    u: &[f32],
    nb: usize,
    s: &Shape,
    out: &mut [f32],
    sc: &mut Scratch,
    threads: usize,
) -> Result<(), String> {
    let (per, hw) = (s.cols(), s.h * s.w);
    let cols = nb * per;
    let (v, m) = (&mut sc.v[..16 * s.c * cols], &mut sc.m[..16 * s.k * cols]);
    transform_inputs(x, nb, s, &mut sc.work, v);
    for xi in 0..16 {
        let um = plane(u, xi, s.k, s.c);
        let vm = MatRef::row_major(&v[xi * s.c * cols..][..s.c * cols], s.c, cols);
        sgemm(
            &mut m[xi * s.k * cols..][..s.k * cols],
            um,
            vm,
            false,
            threads,
        )?;
    }
    for b in 0..nb {
        for kk in 0..s.k {
            let o = &mut out[(b * s.k + kk) * hw..][..hw];
            output_transform(m, s.k * cols, kk * cols + b * per, s, &mut sc.work, o);
        }
    }
    Ok(())
}

/// Weight gradient `dw[K, C, 3, 3]` of the conv of `x[N, C, H, W]` whose output gradient is
/// `dy[N, K, H, W]`: per tile, `dU[ξ] = Σ (A dy Aᵀ)[ξ] (Bᵀ d B)[ξ]` (16 GEMMs `[K, T] @ [T, C]`
/// over the tiles), then `dw = Gᵀ dU G`, the adjoint of the weight transform. One partial sum
/// per thread over a contiguous run of blocks ([`super::blocks::sum_blocks`]).
pub(crate) fn grad_weight(x: &[f32], dy: &[f32], n: usize, s: Shape) -> Result<Vec<f32>, String> {
    let threads = super::num_threads();
    let (chw, khw, kc) = (s.c * s.h * s.w, s.k * s.h * s.w, s.k * s.c);
    let nb = s.block_images(n, threads);
    // du[16][K, C], summed over blocks of images.
    let scratch = || Scratch::new(&s, nb);
    let du =
        super::blocks::sum_blocks(n, nb, threads, 16 * kc, scratch, |du, sc, b, m, acc, th| {
            let (xb, gb) = (&x[b * chw..][..m * chw], &dy[b * khw..][..m * khw]);
            grad_weight_block(xb, gb, m, &s, du, sc, acc, th)
        })?;
    // dw = Gᵀ dU G with Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1].
    let mut dw = super::alloc::overwritten_f32(kc * 9);
    dw.par_chunks_mut(9).enumerate().for_each(|(p, g)| {
        let d = |r: usize, q: usize| du[(r * 4 + q) * kc + p];
        let gt = |q: usize| {
            let (a, b, c, e) = (d(0, q), d(1, q), d(2, q), d(3, q));
            [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + e]
        };
        let (c0, c1, c2, c3) = (gt(0), gt(1), gt(2), gt(3));
        for i in 0..3 {
            let (a, b, c, e) = (c0[i], c1[i], c2[i], c3[i]);
            g[i * 3] = a + 0.5 * (b + c);
            g[i * 3 + 1] = 0.5 * (b - c);
            g[i * 3 + 2] = 0.5 * (b + c) + e;
        }
    });
    Ok(dw)
}

#[allow(clippy::too_many_arguments)]
fn grad_weight_block(
    x: &[f32],
    dy: &[f32],
    nb: usize,
    s: &Shape,
    du: &mut [f32],
    sc: &mut Scratch,
    accumulate: bool,
    threads: usize,
) -> Result<(), String> {
    let (per, hw, kc) = (s.cols(), s.h * s.w, s.k * s.c);
    let cols = nb * per;
    let (v, m) = (&mut sc.v[..16 * s.c * cols], &mut sc.m[..16 * s.k * cols]);
    transform_inputs(x, nb, s, &mut sc.work, v);
    for b in 0..nb {
        for kk in 0..s.k {
            let g = &dy[(b * s.k + kk) * hw..][..hw];
            grad_output_transform(g, s, &mut sc.work, m, s.k * cols, kk * cols + b * per);
        }
    }
    for xi in 0..16 {
        let gm = MatRef::row_major(&m[xi * s.k * cols..][..s.k * cols], s.k, cols);
        let vm = MatRef::row_major(&v[xi * s.c * cols..][..s.c * cols], s.c, cols);
        sgemm(&mut du[xi * kc..][..kc], gm, vm.t(), accumulate, threads)?;
    }
    Ok(())
}

/// `even[j] = src[2j]`, `odd[j] = src[2j + 1]` (`even`: ⌈n/2⌉ floats, `odd`: ⌊n/2⌋), in
/// AVX-512 or AVX2 when the CPU has it.
#[inline(always)]
fn split_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::simd::Isa::get() {
        // SAFETY: the CPU has AVX-512F.
        super::simd::Isa::Avx512 => return unsafe { super::avx512::deinterleave(src, even, odd) },
        // SAFETY: the CPU has AVX2 and FMA.
        super::simd::Isa::Avx2 => return unsafe { super::avx2::deinterleave(src, even, odd) },
        super::simd::Isa::Portable => {}
    }
    split_pairs_portable(src, even, odd)
}

/// [`split_pairs`] in plain loops (the fallback, and the test's second path).
fn split_pairs_portable(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for (e, pair) in even.iter_mut().zip(src.chunks(2)) {
        *e = pair[0];
    }
    for (o, pair) in odd.iter_mut().zip(src.chunks_exact(2)) {
        *o = pair[1];
    }
}

/// The inverse of [`split_pairs`]: `dst[2j] = even[j]`, `dst[2j + 1] = odd[j]`.
#[inline(always)]
fn merge_pairs(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::simd::Isa::get() {
        // SAFETY: the CPU has AVX-512F.
        super::simd::Isa::Avx512 => return unsafe { super::avx512::interleave(even, odd, dst) },
        // SAFETY: the CPU has AVX2 and FMA.
        super::simd::Isa::Avx2 => return unsafe { super::avx2::interleave(even, odd, dst) },
        super::simd::Isa::Portable => {}
    }
    merge_pairs_portable(even, odd, dst)
}

/// [`merge_pairs`] in plain loops (the fallback, and the test's second path).
fn merge_pairs_portable(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    for (pair, &e) in dst.chunks_mut(2).zip(even) {
        pair[0] = e;
    }
    for (pair, &o) in dst.chunks_exact_mut(2).zip(odd) {
        pair[1] = o;
    }
}

/// The four runs `buf[at + i·stride ..][..len]` (`i = 0..4`, `len ≤ stride`), mutably.
#[inline(always)]
fn four_mut(buf: &mut [f32], at: usize, stride: usize, len: usize) -> [&mut [f32]; 4] {
    let (a, rest) = buf[at..].split_at_mut(stride);
    let (b, rest) = rest.split_at_mut(stride);
    let (c, d) = rest.split_at_mut(stride);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

vectorised! {
    /// Input transform of one channel `img[h, w]`: `Bᵀ d B` of every tile to
    /// `v[ξ·plane + at ..][..cols]` for the 16 ξ.
    ///
    /// With the padded image `P[y][x] = img[y − 1][x − 1]` (zero outside) split into four
    /// polyphase planes `Q_ab[i][j] = P[2i + a][2j + b]` (rows of `tw + 1`), entry `(r, q)` of
    /// tile `(i, j)`'s patch is `Q_{r%2, q%2}` at `(i + r/2, j + q/2)`: a fixed shift of a plane
    /// flattened with rows of `tw + 1`. So each transform step is one pass over whole planes.
    fn input_transform(img: &[f32], s: &Shape, work: &mut [f32], v: &mut [f32], plane: usize, at: usize) {
        let (w, tw, ph) = (s.w, s.tw(), s.phase());
        let rw = tw + 1;
        let n = s.cols() + 1;
        let (q, t) = work.split_at_mut(4 * ph);
        q.fill(0.0);
        for y in 0..s.h {
            // Padded row y + 1: a = (y + 1) % 2, plane row (y + 1) / 2.
            let (a, i) = ((y + 1) % 2, y.div_ceil(2));
            let row = &img[y * w..][..w];
            let (q0, q1) = q.split_at_mut(2 * ph);
            let (qa0, qa1) = if a == 0 { q0.split_at_mut(ph) } else { q1.split_at_mut(ph) };
            // x + 1 odd (b = 1) for even x, even (b = 0) for odd x.
            split_pairs(row, &mut qa1[i * rw..][..tw], &mut qa0[i * rw + 1..][..w / 2]);
        }
        let qp = |a: usize, b: usize, di: usize| &q[(a * 2 + b) * ph + di * rw..][..n];
        // Vertical: t_r (r = 0..4) on the two column phases b, over n positions.
        for b in 0..2 {
            let (d0, d1, d2, d3) = (qp(0, b, 0), qp(1, b, 0), qp(0, b, 1), qp(1, b, 1));
            let [t0, t1, t2, t3] = four_mut(t, b * 4 * n, n, n);
            for j in 0..n {
                t0[j] = d0[j] - d2[j];
                t1[j] = d1[j] + d2[j];
                t2[j] = d2[j] - d1[j];
                t3[j] = d1[j] - d3[j];
            }
        }
        // Horizontal, u = (T0[j], T1[j], T0[j+1], T1[j+1]): v0 = u0 − u2, v1 = u1 + u2,
        // v2 = u2 − u1, v3 = u1 − u3.
        let len = n - 1;
        for r in 0..4 {
            let e = &t[r * n..][..n];
            let o = &t[(4 + r) * n..][..n];
            let base = r * 4 * plane + at;
            let [v0, v1, v2, v3] = four_mut(v, base, plane, len);
            for j in 0..len {
                v0[j] = e[j] - e[j + 1];
                v1[j] = o[j] + e[j + 1];
                v2[j] = e[j + 1] - o[j];
                v3[j] = o[j] - o[j + 1];
            }
        }
    }

    /// Output transform of one output channel: `Aᵀ m A` of every tile, the 16 entries at
    /// `m[ξ·plane + at ..][..cols]`, written to `out[h, w]` (the pixels inside the image).
    fn output_transform(m: &[f32], plane: usize, at: usize, s: &Shape, work: &mut [f32], out: &mut [f32]) {
        let (w, tw) = (s.w, s.tw());
        let (rw, len) = (tw + 1, s.cols());
        let mm: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi * plane + at..][..len]);
        // y_ab (a, b = 0..2) over the tiles: rows a of Aᵀ (m0 + m1 + m2; m1 − m2 − m3) down
        // the columns, then the same sums along the rows.
        let (y, _) = work.split_at_mut(4 * len);
        for a in 0..2 {
            let (ya0, ya1) = y[a * 2 * len..][..2 * len].split_at_mut(len);
            let col = |q: usize, j: usize| {
                let (m0, m1, m2, m3) = (mm[q][j], mm[4 + q][j], mm[8 + q][j], mm[12 + q][j]);
                if a == 0 {
                    m0 + m1 + m2
                } else {
                    m1 - m2 - m3
                }
            };
            for j in 0..len {
                let (s0, s1, s2, s3) = (col(0, j), col(1, j), col(2, j), col(3, j));
                ya0[j] = s0 + s1 + s2;
                ya1[j] = s1 - s2 - s3;
            }
        }
        for yy in 0..s.h {
            let (a, i) = (yy % 2, yy / 2);
            let y0 = &y[a * 2 * len + i * rw..][..tw];
            let y1 = &y[(a * 2 + 1) * len + i * rw..][..tw];
            merge_pairs(y0, &y1[..w / 2], &mut out[yy * w..][..w]);
        }
    }

    /// The adjoint of [`output_transform`] for one output channel's gradient `dy[h, w]`:
    /// `A dy Aᵀ` (4×4) of every tile's 2×2 `dy` (zero outside the image and in the spare
    /// columns) to `m[ξ·plane + at ..][..cols]`, with `A` = [1 0; 1 1; 1 −1; 0 −1].
    fn grad_output_transform(dy: &[f32], s: &Shape, work: &mut [f32], m: &mut [f32], plane: usize, at: usize) {
        let (w, tw, len) = (s.w, s.tw(), s.cols());
        let rw = tw + 1;
        // Polyphase planes D_ab[i][j] = dy[2i + a][2j + b] (rows of tw + 1, zero-padded).
        let (d, z) = work.split_at_mut(4 * len);
        d.fill(0.0);
        for y in 0..s.h {
            let (a, i) = (y % 2, y / 2);
            let row = &dy[y * w..][..w];
            let (d0, d1) = d[a * 2 * len..][..2 * len].split_at_mut(len);
            split_pairs(row, &mut d0[i * rw..][..tw], &mut d1[i * rw..][..w / 2]);
        }
        // Down the columns (rows of A times the tile's two rows), per column phase b:
        // z0 = d0, z1 = d0 + d1, z2 = d0 − d1, z3 = −d1.
        for b in 0..2 {
            let (d0, d1) = (&d[b * len..][..len], &d[(2 + b) * len..][..len]);
            let [z0, z1, z2, z3] = four_mut(z, b * 4 * len, len, len);
            for j in 0..len {
                z0[j] = d0[j];
                z1[j] = d0[j] + d1[j];
                z2[j] = d0[j] - d1[j];
                z3[j] = -d1[j];
            }
        }
        // Along the rows: entry (r, q) from z_r of the two column phases the same way.
        for r in 0..4 {
            let (e, o) = (&z[r * len..][..len], &z[(4 + r) * len..][..len]);
            let base = r * 4 * plane + at;
            let [m0, m1, m2, m3] = four_mut(m, base, plane, len);
            for j in 0..len {
                m0[j] = e[j];
                m1[j] = e[j] + o[j];
                m2[j] = e[j] - o[j];
                m3[j] = -o[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3 stride-1 padding-1 convolution in f64.
    fn direct(x: &[f32], wt: &[f32], n: usize, s: Shape) -> Vec<f64> {
        let mut out = vec![0f64; n * s.k * s.h * s.w];
        for b in 0..n {
            for o in 0..s.k {
                for y in 0..s.h {
                    for xx in 0..s.w {
                        let mut acc = 0f64;
                        for c in 0..s.c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (iy, ix) = (y as isize + i - 1, xx as isize + j - 1);
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((b * s.c + c) * s.h + iy as usize) * s.w + ix as usize];
                                    let wv = wt[((o * s.c + c) * 3 + i as usize) * 3 + j as usize];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((b * s.k + o) * s.h + y) * s.w + xx] = acc;
                    }
                }
            }
        }
        out
    }

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut st = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                st = st
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((st >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The (de)interleave as dispatched (AVX-512 or AVX2 where the CPU has it) and the plain
    /// loops, against indexing, every tail length.
    #[test]
    fn pairs_split_and_merge() {
        crate::ops::simd_checks::pairs(split_pairs, merge_pairs);
        crate::ops::simd_checks::pairs(split_pairs_portable, merge_pairs_portable);
    }

    /// Odd and even sizes (partial last tiles), 1-pixel images, blocks of several images.
    #[test]
    fn matches_a_direct_convolution() {
        for (n, c, k, h, w) in [
            (2, 3, 5, 6, 6),
            (3, 4, 2, 7, 5),
            (1, 2, 3, 1, 1),
            (5, 6, 4, 3, 4),
        ] {
            let s = Shape { c, k, h, w };
            let x = rand(n * c * h * w, 1);
            let wt = rand(k * c * 9, 2);
            let mut out = vec![f32::NAN; n * k * h * w];
            conv(&x, &weight_transform(&wt, k, c, false), n, s, &mut out).unwrap();
            let want = direct(&x, &wt, n, s);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 1e-5,
                    "{n}x{c}x{h}x{w}->{k} at {i}: {a} vs {b}"
                );
            }
            // The flipped transform is the convolution with the rotated, transposed kernels.
            let mut wf = vec![0f32; c * k * 9];
            for o in 0..k {
                for i in 0..c {
                    for t in 0..9 {
                        wf[(i * k + o) * 9 + 8 - t] = wt[(o * c + i) * 9 + t];
                    }
                }
            }
            assert_eq!(
                weight_transform(&wt, k, c, true),
                weight_transform(&wf, c, k, false)
            );
            // Weight gradient against Σ dy · x over images and pixels.
            let dy = rand(n * k * h * w, 3);
            let dw = grad_weight(&x, &dy, n, s).unwrap();
            for o in 0..k {
                for ci in 0..c {
                    for t in 0..9 {
                        let (di, dj) = ((t / 3) as isize - 1, (t % 3) as isize - 1);
                        let mut want = 0f64;
                        for b in 0..n {
                            for y in 0..h as isize {
                                for xx in 0..w as isize {
                                    let (iy, ix) = (y + di, xx + dj);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let g = dy[((b * k + o) * h + y as usize) * w + xx as usize];
                                    let v = x[((b * c + ci) * h + iy as usize) * w + ix as usize];
                                    want += g as f64 * v as f64;
                                }
                            }
                        }
                        let got = dw[(o * c + ci) * 9 + t] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "dw {n}x{c}x{h}x{w}->{k} {o} {ci} {t}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
