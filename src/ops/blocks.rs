//! Running a batch in blocks of `nb` images over the threads: the two drivers that conv2d's
//! im2col path and Winograd share.
//!
//! With at least as many blocks as threads, blocks run in parallel, each with single-threaded
//! GEMMs; otherwise they run in turn and every GEMM uses all threads.

use rayon::prelude::*;

/// Whether `n` images in blocks of `nb` run in parallel on `threads` (see the module docs).
fn parallel(n: usize, nb: usize, threads: usize) -> bool {
    threads > 1 && n.div_ceil(nb.max(1)) >= threads
}

/// Runs `f(scratch, first image, block, threads)` over `out` (images of `item` floats each)
/// cut into blocks of `nb` images, `scratch` made once per worker.
pub(crate) fn for_blocks<S>(
    out: &mut [f32],
    item: usize,
    nb: usize,
    threads: usize,
    scratch: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [f32], usize) -> Result<(), String> + Sync,
) -> Result<(), String> {
    let n = out.len() / item.max(1);
    let size = (nb * item).max(1);
    if parallel(n, nb, threads) {
        out.par_chunks_mut(size)
            .enumerate()
            .try_for_each_init(&scratch, |s, (b, o)| f(s, b * nb, o, 1))
    } else {
        let mut s = scratch();
        out.chunks_mut(size)
            .enumerate()
            .try_for_each(|(b, o)| f(&mut s, b * nb, o, threads))
    }
}

/// The sum over `n` images of a `len`-float quantity (a weight gradient): `f(acc, scratch,
/// first image, images, accumulate, threads)` adds a block's share into `acc`, or writes all of
/// `acc` when `!accumulate` (the first block of a run, so `acc` starts uninitialised). In
/// parallel, each thread takes one contiguous run of blocks with its own partial sum, and the
/// partial sums are added at the end.
pub(crate) fn sum_blocks<S>(
    n: usize,
    nb: usize,
    threads: usize,
    len: usize,
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(&mut [f32], &mut S, usize, usize, bool, usize) -> Result<(), String> + Sync,
) -> Result<Vec<f32>, String> {
    let nb = nb.max(1);
    // Images lo..hi in blocks of nb into acc.
    let run = |acc: &mut [f32], lo: usize, hi: usize, threads: usize| {
        let mut s = scratch();
        for (i, b) in (lo..hi).step_by(nb).enumerate() {
            f(acc, &mut s, b, nb.min(hi - b), i > 0, threads)?;
        }
        Ok::<_, String>(())
    };
    // A run of at least one block writes its whole sum; only an empty batch sums to zeros.
    let sum = |lo: usize, hi: usize| {
        if lo < hi {
            super::alloc::overwritten_f32(len)
        } else {
            vec![0f32; len]
        }
    };
    if !parallel(n, nb, threads) {
        let mut acc = sum(0, n);
        run(&mut acc, 0, n, threads)?;
        return Ok(acc);
    }
    let per = n.div_ceil(nb).div_ceil(threads) * nb;
    let parts = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let (lo, hi) = (t * per, ((t + 1) * per).min(n));
            let mut acc = sum(lo, hi);
            run(&mut acc, lo, hi, 1)?;
            Ok(acc)
        })
        .collect::<Result<Vec<Vec<f32>>, String>>()?;
    let mut it = parts.into_iter();
    let mut acc = it.next().unwrap_or_else(|| vec![0f32; len]);
    for part in it {
        for (a, b) in acc.iter_mut().zip(&part) {
            *a += b;
        }
    }
    Ok(acc)
}
