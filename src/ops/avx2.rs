//! The kernels of [`super::avx512`] again for CPUs with AVX2 + FMA but no AVX-512 (AMD Zen 2/3,
//! Intel client cores): BatchNorm / GroupNorm plane sums, one max-pool window tap, Winograd's
//! even/odd (de)interleave, and the stride-2 gather (and its adjoint) of a strided conv's
//! im2col (col2im).
//!
//! Same contracts as the AVX-512 versions, 8 lanes per register. AVX2 has no cheap masked
//! stores, so each function runs whole registers while they fit inside every slice and
//! finishes with the scalar loop of the portable version (or, where doing an element twice is
//! harmless, with an overlapping last block). On a Zen 3 the portable loops (which LLVM leaves
//! scalar) and the im2col around them were about 30 % of a `resnet_tiny` training step.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs the functions of this module (cached CPUID checks).
#[inline]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The 8 lanes of `v` summed in `f64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lanes_f64(v: __m256) -> f64 {
    let mut a = [0f32; 8];
    // SAFETY: `a` holds 8 f32.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
    a.iter().map(|&x| x as f64).sum()
}

/// The even lanes of `a` then of `b`: `[a0, a2, a4, a6, b0, b2, b4, b6]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn evens_of(a: __m256, b: __m256) -> __m256 {
    // [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit lanes 0, 2, 1, 3.
    let s = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
}

/// The odd lanes of `a` then of `b`: `[a1, a3, a5, a7, b1, b3, b5, b7]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn odds_of(a: __m256, b: __m256) -> __m256 {
    let s = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
}

/// `(e0, o0, e1, o1, …, e3, o3)` and `(e4, o4, …, e7, o7)`: `e` and `o` interleaved.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn zip(e: __m256, o: __m256) -> (__m256, __m256) {
    let (lo, hi) = (_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o));
    (
        _mm256_permute2f128_ps::<0x20>(lo, hi),
        _mm256_permute2f128_ps::<0x31>(lo, hi),
    )
}

/// `(Σ (x − k), Σ (x − k)²)` (see `norm_kernels::sums_shifted`).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn sums_shifted(v: &[f32], k: f32) -> (f64, f64) {
    let (n, p) = (v.len(), v.as_ptr());
    let kk = _mm256_set1_ps(k);
    // Two registers per sum: the adds of one are not waiting on the other's.
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut q0, mut q1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (d0, d1) = unsafe {
            (
                _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), kk),
                _mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), kk),
            )
        };
        s0 = _mm256_add_ps(s0, d0);
        s1 = _mm256_add_ps(s1, d1);
        q0 = _mm256_fmadd_ps(d0, d0, q0);
        q1 = _mm256_fmadd_ps(d1, d1, q1);
        i += 16;
    }
    let tail = super::norm_kernels::sums_shifted_portable(&v[i..], k);
    (
        lanes_f64(_mm256_add_ps(s0, s1)) + tail.0,
        lanes_f64(_mm256_add_ps(q0, q1)) + tail.1,
    )
}

/// `(Σ dy, Σ dy·(x − μ))`, `dy` masked by `y > 0` when `y` is given (see
/// `norm_kernels::dot_sums`).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_sums(dy: &[f32], x: &[f32], y: Option<&[f32]>, mu: f32) -> (f64, f64) {
    let n = dy
        .len()
        .min(x.len())
        .min(y.map_or(usize::MAX, <[f32]>::len));
    let (pg, px) = (dy.as_ptr(), x.as_ptr());
    let py = y.map(<[f32]>::as_ptr);
    let (mm, zero) = (_mm256_set1_ps(mu), _mm256_setzero_ps());
    let (mut s, mut sx) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and every slice is at least n long.
        let (mut g, xv) = unsafe { (_mm256_loadu_ps(pg.add(i)), _mm256_loadu_ps(px.add(i))) };
        if let Some(py) = py {
            // SAFETY: as above.
            let yv = unsafe { _mm256_loadu_ps(py.add(i)) };
            g = _mm256_and_ps(g, _mm256_cmp_ps::<_CMP_GT_OQ>(yv, zero));
        }
        s = _mm256_add_ps(s, g);
        sx = _mm256_fmadd_ps(g, _mm256_sub_ps(xv, mm), sx);
        i += 8;
    }
    let tail = super::norm_kernels::dot_sums_portable(&dy[i..n], &x[i..n], y.map(|y| &y[i..n]), mu);
    (lanes_f64(s) + tail.0, lanes_f64(sx) + tail.1)
}

/// Eight taps from `src` at stride `s` ∈ {1, 2} starting at `at` (`src[at + j·s]`, j < 8), or
/// `None` when the loads would leave the slice. For stride 2 near the end it loads from
/// `at − 1` and takes the odd lanes, so a slice of exactly `at + 15` floats still serves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn strided8(src: &[f32], at: usize, s: usize) -> Option<__m256> {
    let p = src.as_ptr();
    // SAFETY (each arm): the 8 or 16 floats loaded lie inside `src`, as the guard says.
    unsafe {
        match s {
            1 if at + 8 <= src.len() => Some(_mm256_loadu_ps(p.add(at))),
            2 if at + 16 <= src.len() => Some(evens_of(
                _mm256_loadu_ps(p.add(at)),
                _mm256_loadu_ps(p.add(at + 8)),
            )),
            2 if at >= 1 && at + 15 <= src.len() => Some(odds_of(
                _mm256_loadu_ps(p.add(at - 1)),
                _mm256_loadu_ps(p.add(at + 7)),
            )),
            _ => None,
        }
    }
}

/// The starts of the 8-wide blocks that cover `n` outputs: 0, 8, 16, … and, when `n` is not a
/// multiple of 8, a last block at `n − 8` that overlaps the one before it (for kernels where
/// doing an output twice gives the same result). Empty when `n < 8`.
#[cfg(target_arch = "x86_64")]
fn blocks8(n: usize) -> impl Iterator<Item = usize> {
    let last = (n >= 8 && n % 8 != 0).then(|| n - 8);
    (0..n / 8).map(|b| 8 * b).chain(last)
}

/// One max-pool window tap across a row of outputs for stride `s` ∈ {1, 2} (see
/// `avx512::window_tap`). The last, partial block of 8 outputs is run again over outputs the
/// block before it already took this tap for: taking the same tap twice changes nothing (a
/// value equal to the best is not larger, and a NaN tap writes the same NaN and index).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
///
/// # Panics
/// When `s` is not 1 or 2, or `taps` is shorter than `(n − 1)·s + 1` for `n` outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn window_tap(
    best: &mut [f32],
    idx: &mut [u32],
    taps: &[f32],
    s: usize,
    start: u32,
    first: bool,
) {
    let n = best.len().min(idx.len());
    assert!(s == 1 || s == 2, "window_tap: stride {s}");
    assert!(
        n == 0 || taps.len() > (n - 1) * s,
        "window_tap: taps too short"
    );
    let (pb, pi) = (best.as_mut_ptr(), idx.as_mut_ptr());
    let step = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(s as i32),
    );
    for j in blocks8(n) {
        let at = j * s;
        let Some(v) = strided8(taps, at, s) else {
            // Only a single block of exactly 8 stride-2 outputs over 15 taps gets here.
            crate::model::pool::window_tap(best, idx, taps, s, start, first);
            return;
        };
        let iv = _mm256_add_epi32(_mm256_set1_epi32((start as usize + at) as i32), step);
        // SAFETY: outputs j..j + 8 are inside `best` and `idx` (j + 8 ≤ n).
        unsafe {
            if first {
                _mm256_storeu_ps(pb.add(j), v);
                _mm256_storeu_si256(pi.add(j) as *mut __m256i, iv);
            } else {
                let b = _mm256_loadu_ps(pb.add(j));
                let take = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(v, b),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
                );
                let old = _mm256_loadu_si256(pi.add(j) as *const __m256i);
                let ni = _mm256_blendv_ps(_mm256_castsi256_ps(old), _mm256_castsi256_ps(iv), take);
                _mm256_storeu_ps(pb.add(j), _mm256_blendv_ps(b, v, take));
                _mm256_storeu_si256(pi.add(j) as *mut __m256i, _mm256_castps_si256(ni));
            }
        }
    }
    if n < 8 {
        crate::model::pool::window_tap(best, idx, taps, s, start, first);
    }
}

/// Splits `src` (`n` floats) into `even[j] = src[2j]` and `odd[j] = src[2j + 1]`.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
///
/// # Panics
/// When `even` and `odd` do not hold ⌈n/2⌉ and ⌊n/2⌋ floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = src.len();
    assert!(
        even.len() == n.div_ceil(2) && odd.len() == n / 2,
        "deinterleave: lengths"
    );
    let (ps, pe, po) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: src i..i + 16 and even, odd i/2..i/2 + 8 are inside their slices.
        unsafe {
            let (a, b) = (_mm256_loadu_ps(ps.add(i)), _mm256_loadu_ps(ps.add(i + 8)));
            _mm256_storeu_ps(pe.add(i / 2), evens_of(a, b));
            _mm256_storeu_ps(po.add(i / 2), odds_of(a, b));
        }
        i += 16;
    }
    for (j, &v) in src.iter().enumerate().skip(i) {
        if j % 2 == 0 {
            even[j / 2] = v;
        } else {
            odd[j / 2] = v;
        }
    }
}

/// The inverse of [`deinterleave`]: `dst[2j] = even[j]`, `dst[2j + 1] = odd[j]`.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
///
/// # Panics
/// When `even` and `odd` do not hold ⌈n/2⌉ and ⌊n/2⌋ floats for `n = dst.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn interleave(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    assert!(
        even.len() == n.div_ceil(2) && odd.len() == n / 2,
        "interleave: lengths"
    );
    let (pe, po, pd) = (even.as_ptr(), odd.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: as in `deinterleave`.
        unsafe {
            let (lo, hi) = zip(
                _mm256_loadu_ps(pe.add(i / 2)),
                _mm256_loadu_ps(po.add(i / 2)),
            );
            _mm256_storeu_ps(pd.add(i), lo);
            _mm256_storeu_ps(pd.add(i + 8), hi);
        }
        i += 16;
    }
    for (j, d) in dst.iter_mut().enumerate().skip(i) {
        *d = if j % 2 == 0 { even[j / 2] } else { odd[j / 2] };
    }
}

/// `dst[j] = src[2j]` for every `j < dst.len()` (a stride-2 gather; a partial last block of
/// 8 overlaps the one before it).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
///
/// # Panics
/// When `src` is shorter than `2·dst.len() − 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn evens(src: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    assert!(src.len() + 1 >= 2 * n, "evens: lengths");
    let pd = dst.as_mut_ptr();
    let mut done = n >= 8;
    for i in blocks8(n) {
        match strided8(src, 2 * i, 2) {
            // SAFETY: dst i..i + 8 is inside `dst` (i + 8 ≤ n).
            Some(v) => unsafe { _mm256_storeu_ps(pd.add(i), v) },
            None => {
                // Only a single block of 8 over 15 floats gets here.
                done = false;
                break;
            }
        }
    }
    if !done {
        for (j, d) in dst.iter_mut().enumerate() {
            *d = src[2 * j];
        }
    }
}

/// The adjoint of [`evens`]: `dst[2j] += src[j]` for every `j < src.len()`, the odd entries of
/// `dst` left as they are (bit for bit: they are blended back, not added to zero).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
///
/// # Panics
/// When `dst` is shorter than `2·src.len() − 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn add_evens(src: &[f32], dst: &mut [f32]) {
    let n = src.len();
    assert!(dst.len() + 1 >= 2 * n, "add_evens: lengths");
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let zero = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n && 2 * i + 16 <= dst.len() {
        // SAFETY: src i..i + 8 and dst 2i..2i + 16 are inside their slices.
        unsafe {
            let (lo, hi) = zip(_mm256_loadu_ps(ps.add(i)), zero);
            let (dl, dh) = (pd.add(2 * i), pd.add(2 * i + 8));
            let (a, b) = (_mm256_loadu_ps(dl), _mm256_loadu_ps(dh));
            _mm256_storeu_ps(dl, _mm256_blend_ps::<0b0101_0101>(a, _mm256_add_ps(a, lo)));
            _mm256_storeu_ps(dh, _mm256_blend_ps::<0b0101_0101>(b, _mm256_add_ps(b, hi)));
        }
        i += 8;
    }
    for j in i..n {
        dst[2 * j] += src[j];
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::simd_checks as check;
    use super::*;

    #[test]
    fn match_the_portable_loops() {
        if !available() {
            eprintln!("no AVX2 + FMA here; nothing to compare");
            return;
        }
        check::window_tap(window_tap);
        check::evens(evens, add_evens);
        check::pairs(deinterleave, interleave);
        check::sums(sums_shifted, dot_sums);
    }
}
