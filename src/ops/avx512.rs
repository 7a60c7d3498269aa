//! Hand-written AVX-512 kernels: the BatchNorm / GroupNorm statistics and gradients, one
//! max-pool window tap, the even/odd (de)interleave of Winograd's polyphase planes, and the
//! stride-2 gather (and its adjoint) of a strided conv's im2col (col2im).
//!
//! LLVM does not vectorise these well (it keeps most lanes of the lane-split `f32` sums scalar,
//! and runs a max-pool row of 15 outputs in its scalar remainder loop), so on CPUs with
//! AVX-512F they run here: 16 lanes per register, FMA, and masked loads and stores for the
//! tail. Callers pick these, the AVX2 ones ([`super::avx2`]) or the portable loops
//! ([`super::norm_kernels`], `model::pool::window_tap`) by [`super::simd::Isa`]; the portable
//! loops are also the reference of the tests ([`super::simd_checks`]).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs the functions of this module (one cached CPUID check).
#[inline]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Mask of the first `n` lanes (all 16 when `n ≥ 16`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// The 16 lanes of `v` summed in `f64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn lanes_f64(v: __m512) -> f64 {
    let mut a = [0f32; 16];
    // SAFETY: `a` holds 16 f32.
    unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
    a.iter().map(|&x| x as f64).sum()
}

/// `(Σ (x − k), Σ (x − k)²)` (see `norm_kernels::sums_shifted`).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn sums_shifted(v: &[f32], k: f32) -> (f64, f64) {
    let (n, p) = (v.len(), v.as_ptr());
    let kk = _mm512_set1_ps(k);
    let (mut s, mut ss) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(p.add(i)) }, kk);
        s = _mm512_add_ps(s, d);
        ss = _mm512_fmadd_ps(d, d, ss);
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the masked load reads only lanes below n − i.
        let d = _mm512_maskz_sub_ps(m, unsafe { _mm512_maskz_loadu_ps(m, p.add(i)) }, kk);
        s = _mm512_add_ps(s, d);
        ss = _mm512_fmadd_ps(d, d, ss);
    }
    (lanes_f64(s), lanes_f64(ss))
}

/// `(Σ dy, Σ dy·(x − μ))`, `dy` masked by `y > 0` when `y` is given (see
/// `norm_kernels::dot_sums`).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_sums(dy: &[f32], x: &[f32], y: Option<&[f32]>, mu: f32) -> (f64, f64) {
    let n = dy
        .len()
        .min(x.len())
        .min(y.map_or(usize::MAX, <[f32]>::len));
    let (pg, px) = (dy.as_ptr(), x.as_ptr());
    let py = y.map(<[f32]>::as_ptr);
    let (mm, zero) = (_mm512_set1_ps(mu), _mm512_setzero_ps());
    let (mut s, mut sx) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i < n {
        let m = tail_mask(n - i);
        // SAFETY: masked loads read only the lanes below n − i of each slice (all ≥ n long).
        let (mut g, xv) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pg.add(i)),
                _mm512_maskz_loadu_ps(m, px.add(i)),
            )
        };
        if let Some(py) = py {
            // SAFETY: as above.
            let yv = unsafe { _mm512_maskz_loadu_ps(m, py.add(i)) };
            g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(yv, zero), g);
        }
        s = _mm512_add_ps(s, g);
        // Lanes past the end hold g = 0, so they add nothing.
        sx = _mm512_fmadd_ps(g, _mm512_sub_ps(xv, mm), sx);
        i += 16;
    }
    (lanes_f64(s), lanes_f64(sx))
}

/// One max-pool window tap across a row of outputs for stride `s` ∈ {1, 2}: output `j` sees
/// `taps[j·s]` (input index `start + j·s`) and takes it, value and index, when `first`, when
/// it is larger, or when it is NaN (PyTorch's rule; see `model::pool::window_tap`).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
///
/// # Panics
/// When `s` is not 1 or 2, or `taps` is shorter than `(n − 1)·s + 1` for `n` outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
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
    let (pb, pi, pt, len) = (
        best.as_mut_ptr(),
        idx.as_mut_ptr(),
        taps.as_ptr(),
        taps.len(),
    );
    // Even lanes of two registers, for stride 2.
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut j = 0;
    while j < n {
        let m = tail_mask(n - j);
        // Input elements j·s .. (j + 16)·s, masked to the slice.
        let at = j * s;
        let load = |off: usize| {
            let k = len.saturating_sub(at + off);
            // SAFETY: the mask covers only the elements inside `taps` (none when k = 0, where
            // the address may lie past the end: hence `wrapping_add`).
            unsafe { _mm512_maskz_loadu_ps(tail_mask(k), pt.wrapping_add(at + off)) }
        };
        let v = if s == 1 {
            load(0)
        } else {
            _mm512_permutex2var_ps(load(0), evens, load(16))
        };
        // SAFETY: masked load of the outputs j .. j + 16 below n.
        let b = unsafe { _mm512_maskz_loadu_ps(m, pb.add(j)) };
        let take = if first {
            m
        } else {
            m & (_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, b) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v))
        };
        let iv = _mm512_add_epi32(
            _mm512_set1_epi32((start as usize + at) as i32),
            _mm512_mullo_epi32(lane, _mm512_set1_epi32(s as i32)),
        );
        // SAFETY: masked stores to outputs below n.
        unsafe {
            _mm512_mask_storeu_ps(pb.add(j), take, v);
            _mm512_mask_storeu_epi32(pi.add(j) as *mut i32, take, iv);
        }
        j += 16;
    }
}

/// Splits `src` (`n` floats) into `even[j] = src[2j]` and `odd[j] = src[2j + 1]`, 32 source
/// floats per step, the last step masked.
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
///
/// # Panics
/// When `even` and `odd` do not hold ⌈n/2⌉ and ⌊n/2⌋ floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = src.len();
    assert!(
        even.len() == n.div_ceil(2) && odd.len() == n / 2,
        "deinterleave: lengths"
    );
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (ps, pe, po) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
    for i in (0..n).step_by(32) {
        let rem = n - i;
        // SAFETY: each mask covers exactly the floats left in its slice from that offset
        // (`src` from i and i + 16, `even`, `odd` from i / 2), so masked-off lanes are neither
        // read nor written; `wrapping_add` for an offset past the end under an empty mask.
        unsafe {
            let lo = _mm512_maskz_loadu_ps(tail_mask(rem), ps.add(i));
            let hi =
                _mm512_maskz_loadu_ps(tail_mask(rem.saturating_sub(16)), ps.wrapping_add(i + 16));
            let (me, mo) = (tail_mask(rem.div_ceil(2)), tail_mask(rem / 2));
            _mm512_mask_storeu_ps(pe.add(i / 2), me, _mm512_permutex2var_ps(lo, ie, hi));
            _mm512_mask_storeu_ps(
                po.wrapping_add(i / 2),
                mo,
                _mm512_permutex2var_ps(lo, io, hi),
            );
        }
    }
}

/// The inverse of [`deinterleave`]: `dst[2j] = even[j]`, `dst[2j + 1] = odd[j]`.
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
///
/// # Panics
/// When `even` and `odd` do not hold ⌈n/2⌉ and ⌊n/2⌋ floats for `n = dst.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn interleave(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    assert!(
        even.len() == n.div_ceil(2) && odd.len() == n / 2,
        "interleave: lengths"
    );
    let il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let (pe, po, pd) = (even.as_ptr(), odd.as_ptr(), dst.as_mut_ptr());
    for i in (0..n).step_by(32) {
        let rem = n - i;
        // SAFETY: as in `deinterleave`, the masks cover exactly what is left of each slice.
        unsafe {
            let e = _mm512_maskz_loadu_ps(tail_mask(rem.div_ceil(2)), pe.add(i / 2));
            let o = _mm512_maskz_loadu_ps(tail_mask(rem / 2), po.wrapping_add(i / 2));
            _mm512_mask_storeu_ps(pd.add(i), tail_mask(rem), _mm512_permutex2var_ps(e, il, o));
            let hi = _mm512_permutex2var_ps(e, ih, o);
            _mm512_mask_storeu_ps(
                pd.wrapping_add(i + 16),
                tail_mask(rem.saturating_sub(16)),
                hi,
            );
        }
    }
}

/// `dst[j] = src[2j]` for every `j < dst.len()`: a stride-2 gather (im2col of a stride-2
/// conv), 16 outputs from two source registers per step, the last step masked.
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
///
/// # Panics
/// When `src` is shorter than `2·dst.len() − 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn evens(src: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    assert!(src.len() + 1 >= 2 * n, "evens: lengths");
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    for i in (0..n).step_by(16) {
        // The source floats this step reads: 2·16, or 2·rem − 1 for the last.
        let (rem, span) = (n - i, (2 * (n - i)).min(32) - 1);
        // SAFETY: `span` floats from 2i lie in `src` (2i + span ≤ 2n − 1 ≤ src.len()) and
        // `rem` from i in `dst`; masked-off lanes are neither read nor written.
        unsafe {
            let lo = _mm512_maskz_loadu_ps(tail_mask(span), ps.add(2 * i));
            let hi = _mm512_maskz_loadu_ps(
                tail_mask(span.saturating_sub(16)),
                ps.wrapping_add(2 * i + 16),
            );
            _mm512_mask_storeu_ps(
                pd.add(i),
                tail_mask(rem),
                _mm512_permutex2var_ps(lo, ie, hi),
            );
        }
    }
}

/// The adjoint of [`evens`]: `dst[2j] += src[j]` for every `j < src.len()`, the odd entries
/// of `dst` left as they are (col2im of a stride-2 conv).
///
/// # Safety
/// The CPU must support AVX-512F ([`available`]).
///
/// # Panics
/// When `dst` is shorter than `2·src.len() − 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn add_evens(src: &[f32], dst: &mut [f32]) {
    let n = src.len();
    assert!(dst.len() + 1 >= 2 * n, "add_evens: lengths");
    // src lane j to lanes 2j and 2j + 1 (only the even one is added): the low and high halves.
    let il = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let ih = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let even: __mmask16 = 0x5555;
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    for i in (0..n).step_by(16) {
        let (rem, span) = (n - i, (2 * (n - i)).min(32) - 1);
        let (ml, mh) = (tail_mask(span), tail_mask(span.saturating_sub(16)));
        // SAFETY: as in `evens`, with the roles of the slices swapped.
        unsafe {
            let v = _mm512_maskz_loadu_ps(tail_mask(rem), ps.add(i));
            let (dl, dh) = (pd.add(2 * i), pd.wrapping_add(2 * i + 16));
            let lo = _mm512_maskz_loadu_ps(ml, dl);
            let lo = _mm512_mask_add_ps(lo, even, lo, _mm512_permutexvar_ps(il, v));
            _mm512_mask_storeu_ps(dl, ml, lo);
            let hi = _mm512_maskz_loadu_ps(mh, dh);
            let hi = _mm512_mask_add_ps(hi, even, hi, _mm512_permutexvar_ps(ih, v));
            _mm512_mask_storeu_ps(dh, mh, hi);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::simd_checks as check;
    use super::*;

    #[test]
    fn match_the_portable_loops() {
        if !available() {
            eprintln!("no AVX-512F here; nothing to compare");
            return;
        }
        check::window_tap(window_tap);
        check::evens(evens, add_evens);
        check::pairs(deinterleave, interleave);
        check::sums(sums_shifted, dot_sums);
    }
}
