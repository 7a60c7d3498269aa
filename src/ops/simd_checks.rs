//! Test checks shared by the hand-written SIMD kernels ([`super::avx512`], [`super::avx2`]):
//! each takes one instruction set's functions and compares them with the portable loops (or
//! plain indexing) on every tail length around the register widths.

use super::norm_kernels::{dot_sums_portable, sums_shifted_portable};

type WindowTap = unsafe fn(&mut [f32], &mut [u32], &[f32], usize, u32, bool);
type Gather = unsafe fn(&[f32], &mut [f32]);
type Split = unsafe fn(&[f32], &mut [f32], &mut [f32]);
type Merge = unsafe fn(&[f32], &[f32], &mut [f32]);
type Sums = unsafe fn(&[f32], f32) -> (f64, f64);
type DotSums = unsafe fn(&[f32], &[f32], Option<&[f32]>, f32) -> (f64, f64);

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 7919 % 1009) as f32 - 504.0) / 97.0)
        .collect()
}

/// The max-pool tap against the portable loop, with ties and NaNs, both strides, every tail
/// length: same values and same indices. The caller guarantees `f` runs on this CPU.
pub(crate) fn window_tap(f: WindowTap) {
    for s in [1usize, 2] {
        for n in 0..40usize {
            let taps: Vec<f32> = (0..(n.max(1) - 1) * s + 1)
                .map(|i| match i % 11 {
                    3 => f32::NAN,
                    7 => 0.5,
                    _ => ((i * 37) % 13) as f32 / 13.0,
                })
                .collect();
            for first in [true, false] {
                let init: Vec<f32> = (0..n).map(|i| ((i * 5) % 7) as f32 / 7.0).collect();
                let (mut b1, mut i1) = (init.clone(), vec![7u32; n]);
                let (mut b2, mut i2) = (init, vec![7u32; n]);
                // SAFETY: the caller checked the CPU.
                unsafe { f(&mut b1, &mut i1, &taps, s, 100, first) };
                crate::model::pool::window_tap(&mut b2, &mut i2, &taps, s, 100, first);
                let same = b1.iter().zip(&b2).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && i1 == i2,
                    "s={s} n={n} first={first}: {b1:?} {i1:?} vs {b2:?} {i2:?}"
                );
            }
        }
    }
}

/// The stride-2 gather and its adjoint against plain loops, every length around the register
/// widths, sources and destinations longer than needed and exactly as long; the entries the
/// adjoint does not add to keep their bits (a `-0.0` stays `-0.0`).
pub(crate) fn evens(evens: Gather, add_evens: Gather) {
    for n in 0..70usize {
        for extra in [0usize, 1, 5] {
            let len = (2 * n).saturating_sub(1) + extra;
            let src = data(len, 4);
            let mut got = vec![f32::NAN; n];
            // SAFETY: the caller checked the CPU.
            unsafe { evens(&src, &mut got) };
            let want: Vec<f32> = (0..n).map(|j| src[2 * j]).collect();
            assert_eq!(got, want, "evens n={n} extra={extra}");
            let add = data(n, 5);
            let base: Vec<f32> = data(len, 6)
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 4 == 1 { -0.0 } else { v })
                .collect();
            let mut got = base.clone();
            // SAFETY: as above.
            unsafe { add_evens(&add, &mut got) };
            let mut want = base;
            for (j, a) in add.iter().enumerate() {
                want[2 * j] += a;
            }
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "add_evens n={n} extra={extra}: {got:?} vs {want:?}");
        }
    }
}

/// The even/odd split and merge against indexing, every tail length.
pub(crate) fn pairs(split: Split, merge: Merge) {
    for n in 0..100 {
        let src = data(n, n);
        let (mut e, mut o) = (vec![f32::NAN; n.div_ceil(2)], vec![f32::NAN; n / 2]);
        // SAFETY: the caller checked the CPU.
        unsafe { split(&src, &mut e, &mut o) };
        for j in 0..n {
            let got = if j % 2 == 0 { e[j / 2] } else { o[j / 2] };
            assert_eq!(got, src[j], "n={n} j={j}");
        }
        let mut back = vec![f32::NAN; n];
        // SAFETY: as above.
        unsafe { merge(&e, &o, &mut back) };
        assert_eq!(back, src, "n={n}");
    }
}

/// The BatchNorm / GroupNorm plane sums against the portable loops (summation order differs,
/// so within 1e-4 relative), with and without the ReLU mask.
pub(crate) fn sums(sums_shifted: Sums, dot_sums: DotSums) {
    for n in [0usize, 1, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 250, 1000] {
        let (dy, x, y) = (data(n, 1), data(n, 2), data(n, 3));
        let close = |a: (f64, f64), b: (f64, f64)| {
            (a.0 - b.0).abs() <= 1e-4 * (1.0 + b.0.abs())
                && (a.1 - b.1).abs() <= 1e-4 * (1.0 + b.1.abs())
        };
        // SAFETY: the caller checked the CPU.
        let got = unsafe { sums_shifted(&x, 0.3) };
        let want = sums_shifted_portable(&x, 0.3);
        assert!(close(got, want), "sums_shifted n={n}: {got:?} vs {want:?}");
        for mask in [None, Some(y.as_slice())] {
            // SAFETY: as above.
            let got = unsafe { dot_sums(&dy, &x, mask, -0.2) };
            let want = dot_sums_portable(&dy, &x, mask, -0.2);
            assert!(
                close(got, want),
                "dot_sums n={n} mask={}: {got:?} vs {want:?}",
                mask.is_some()
            );
        }
    }
}
