//! Opt-in `bf16×3` matrix products on Intel AMX (`--matmul-precision high`).
//!
//! Each `f32` operand is split into a high and a low `bfloat16` (`x ≈ hi + lo`, both rounded to
//! nearest even, `|x − hi − lo| ≤ 2⁻¹⁸·|x|`), and `a·b` is computed as `a_hi·b_hi + a_hi·b_lo +
//! a_lo·b_hi` with `f32` accumulation, dropping only `a_lo·b_lo` (≤ 2⁻¹⁸ relative). This is the
//! contract of JAX's `Precision.HIGH` on TPUs and one of the paths PyTorch's
//! `set_float32_matmul_precision("high")` allows; it is *not* `f32` (`"highest"`), which stays
//! the default. Errors measured here: about 10⁻⁵ of the largest output, against 4·10⁻³ to 10⁻²
//! for a single `bf16` product (README, "AMX").
//!
//! Both operands are packed once per product into 16×32 `bf16` tiles, a high and a low tile per
//! 32 reduction steps (A row-major, B in AMX's pair-interleaved "VNNI" order). Each task computes
//! a block of `MC × NC` outputs 32×32 at a time with four accumulator tiles, walking the
//! reduction in chunks of `KC` tile steps (loop order: chunk, column pair, row pair). Tile loads, not products, bound this CPU (a 1 KiB
//! `tileloadd` from L1 took about 2.5 times a `tdpbf16ps`), so the three products of a step share
//! loads: 10 tile loads per 12 products. x86-64 only (the module is compiled there alone).

use super::sgemm::{MatRef, StridedDst};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// `bf16` values per tile row (reduction steps per tile) and rows per tile (16 × 64 bytes).
const TILE_K: usize = 32;
const TILE_ROWS: usize = 16;
/// `u16`s per tile.
const TILE_LEN: usize = TILE_K * TILE_ROWS;
/// `u16`s per reduction step of 32 for one row (or column) tile: its high and low tile.
const STEP_LEN: usize = 2 * TILE_LEN;
/// Output rows and columns per task (multiples of 32) and reduction tile steps per chunk.
/// Chosen from a sweep on ViT-B/16's `1576 × 768 @ 768 × 3072` (KC 3–24, MC 256–1024, NC
/// 128–512; one thread, three runs each): differences were within this machine's noise except
/// that KC = 24 was fastest in most runs.
const MC: usize = 256;
const NC: usize = 128;
const KC: usize = 24;

/// Whether this CPU and OS let this process run AMX `bf16` tile products (CPUID's AMX-TILE and
/// AMX-BF16 bits, AVX-512BW for the packing, and Linux granting the tile state through
/// `arch_prctl(ARCH_REQ_XCOMP_PERM)`). Checked once.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(detect)
}

#[cfg(target_os = "linux")]
fn detect() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only when leaf 0 reports it.
    #[allow(unused_unsafe)]
    let (max_leaf, edx7) = unsafe {
        let max = __cpuid_count(0, 0).eax;
        (max, if max >= 7 { __cpuid_count(7, 0).edx } else { 0 })
    };
    let amx_bf16 = edx7 & (1 << 22) != 0;
    let amx_tile = edx7 & (1 << 24) != 0;
    if max_leaf < 7
        || !amx_bf16
        || !amx_tile
        || !std::is_x86_feature_detected!("avx512bw")
        || !std::is_x86_feature_detected!("avx512f")
    {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: asks the kernel for permission to use the AMX tile state in this process; it
    // touches no memory of ours and fails cleanly (non-zero) where it is not granted.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn detect() -> bool {
    false
}

/// Packed operand: per row (or column) tile, `kt` steps of a high and a low tile.
struct Packed {
    data: Vec<u16>,
    kt: usize,
}

impl Packed {
    /// The high tile of row (or column) tile `t` at step `k`; its low tile follows it.
    fn tile(&self, t: usize, k: usize) -> *const u16 {
        self.data[(t * self.kt + k) * STEP_LEN..].as_ptr()
    }
}

/// `out(r, c) (+)= (a @ b)[r, c]` in `bf16×3` on AMX.
///
/// # Safety
/// [`available`] must be true; `out` must be valid for writes at every `(r, c)` of the
/// `a.rows × b.cols` product through its strides, not aliased by `a` or `b`, and the spans of
/// `a` and `b` must have been checked. `a.cols == b.rows > 0`.
pub(crate) unsafe fn gemm_bf16x3(
    out: StridedDst,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let kt = k.div_ceil(TILE_K);
    let (mt, nt) = (m.div_ceil(32) * 2, n.div_ceil(32) * 2);
    let par = threads > 1;
    // SAFETY: `available()` (caller) implies AVX-512F/BW.
    let pa = unsafe { pack_a(a, mt, kt, par) };
    let pb = unsafe { pack_b(b, nt, kt, par) };
    let tasks: Vec<(usize, usize)> = (0..m.div_ceil(MC))
        .flat_map(|i| (0..n.div_ceil(NC)).map(move |j| (i * MC, j * NC)))
        .collect();
    let run = |&(r0, c0): &(usize, usize)| {
        let rows = (m - r0).min(MC);
        let cols = (n - c0).min(NC);
        // SAFETY: tasks cover disjoint blocks of the output; `available()` holds.
        unsafe { block_task(&pa, &pb, &out, r0, rows, c0, cols, accumulate) };
    };
    if par {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}

/// Loads the tile configuration (eight 16 × 64-byte tiles) on this thread, and releases the
/// tile state when dropped.
struct TileScope;

impl TileScope {
    /// # Safety
    /// [`available`] must be true.
    unsafe fn new() -> TileScope {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row
            c[48 + t] = TILE_ROWS as u8;
        }
        let cfg = Config(c);
        // SAFETY: `cfg` is a valid 64-byte palette-1 configuration; AMX is available.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg as *const Config, options(nostack, readonly));
        }
        TileScope
    }
}

impl Drop for TileScope {
    fn drop(&mut self) {
        // SAFETY: a `TileScope` exists only after a successful `ldtilecfg`.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

/// One task: output rows `r0..r0 + rows`, columns `c0..c0 + cols`.
///
/// # Safety
/// As [`gemm_bf16x3`]; no other task writes this block.
#[allow(clippy::too_many_arguments)]
unsafe fn block_task(
    pa: &Packed,
    pb: &Packed,
    out: &StridedDst,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
    accumulate: bool,
) {
    let (mp, np) = (rows.div_ceil(32), cols.div_ceil(32));
    let ldc = np * 32;
    let mut acc = super::alloc::overwritten_f32(mp * 32 * ldc);
    let kt = pa.kt;
    // SAFETY: AMX is available (caller).
    let _tiles = unsafe { TileScope::new() };
    let mut k0 = 0;
    while k0 < kt {
        let kn = (kt - k0).min(KC);
        for j in 0..np {
            let nt = c0 / 16 + 2 * j;
            for i in 0..mp {
                let mt = r0 / 16 + 2 * i;
                // SAFETY: tiles `mt, mt + 1` and `nt, nt + 1` exist (rows and columns are
                // packed in pairs of tiles), `k0 + kn <= kt`, and the 32×32 block of `acc` at
                // (32 i, 32 j) lies inside it.
                unsafe {
                    block_32x32(
                        [pa.tile(mt, k0), pa.tile(mt + 1, k0)],
                        [pb.tile(nt, k0), pb.tile(nt + 1, k0)],
                        kn,
                        acc.as_mut_ptr().add(i * 32 * ldc + j * 32),
                        ldc,
                        k0 == 0,
                    )
                };
            }
        }
        k0 += kn;
    }
    for r in 0..rows {
        let src = &acc[r * ldc..r * ldc + cols];
        for (c, &v) in src.iter().enumerate() {
            // SAFETY: (r0 + r, c0 + c) is inside the product; this task owns the block.
            unsafe {
                let d = out.at(r0 + r, c0 + c);
                *d = if accumulate { *d + v } else { v };
            }
        }
    }
}

/// `C (+)= A·B` for one 32×32 block: `a` the first of `kn` consecutive packed steps of the two
/// row tiles, `b` those of the two column tiles; `c` is row-major with row stride `ldc`
/// elements; `first` starts from zero instead of loading `c`.
///
/// Per step, tiles 4–5 hold A and 6–7 hold B, and the products run in the order hi·hi, hi·lo
/// (reusing the high A tiles), lo·hi, so that a step loads 10 tiles for its 12 products.
///
/// # Safety
/// A tile configuration is loaded ([`TileScope`]); every pointer covers what is read or
/// written; `kn ≥ 1`.
#[inline]
unsafe fn block_32x32(
    a: [*const u16; 2],
    b: [*const u16; 2],
    kn: usize,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    use std::arch::asm;
    let s = ldc * 4;
    // SAFETY: as the function's contract.
    unsafe {
        let (c1, c2) = (c.add(16), c.add(16 * ldc));
        let c3 = c2.add(16);
        if first {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        } else {
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) s,
                options(nostack, readonly)
            );
        }
        asm!(
            "2:",
            // hi · hi
            "tileloadd tmm4, [{a0} + {t}*1]",
            "tileloadd tmm6, [{b0} + {t}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {t}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {t}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // hi · lo
            "tileloadd tmm6, [{b0} + {t}*1 + 1024]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b1} + {t}*1 + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // lo · hi
            "tileloadd tmm4, [{a0} + {t}*1 + 1024]",
            "tileloadd tmm6, [{b0} + {t}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {t}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {t}*1 + 1024]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 2048",
            "add {a1}, 2048",
            "add {b0}, 2048",
            "add {b1}, 2048",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a[0] => _,
            a1 = inout(reg) a[1] => _,
            b0 = inout(reg) b[0] => _,
            b1 = inout(reg) b[1] => _,
            n = inout(reg) kn => _,
            t = in(reg) 64usize,
            options(nostack, readonly)
        );
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) s,
            options(nostack)
        );
    }
}

/// The high and low `bfloat16` halves of 16 `f32`s, each in the low 16 bits of a 32-bit lane:
/// `hi = rne(x)`, `lo = rne(x − hi)` (the subtraction is exact).
#[target_feature(enable = "avx512f")]
fn split16(x: __m512) -> (__m512i, __m512i) {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rne(bits: __m512i) -> __m512i {
        // bits + 0x7FFF + ((bits >> 16) & 1), truncated to the top 16 bits.
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let r = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), odd);
        _mm512_and_si512(r, _mm512_set1_epi32(0xFFFF_0000u32 as i32))
    }
    let hi = rne(_mm512_castps_si512(x));
    let rest = _mm512_sub_ps(x, _mm512_castsi512_ps(hi));
    let lo = rne(_mm512_castps_si512(rest));
    (_mm512_srli_epi32::<16>(hi), _mm512_srli_epi32::<16>(lo))
}

/// Packs `a` (`m × k`) into `mt` row tiles of `kt` steps (a high and a low tile each),
/// zero-padded.
///
/// # Safety
/// AVX-512F and BW must be available; `a`'s span must have been checked.
unsafe fn pack_a(a: MatRef<'_>, mt: usize, kt: usize, par: bool) -> Packed {
    let k = a.cols;
    let data = unfilled(mt * kt * STEP_LEN);
    let fill = |t: usize, steps: &mut [u16]| {
        let rows = a.rows.saturating_sub(t * TILE_ROWS).min(TILE_ROWS);
        // Zero what the rows below do not write: the rows past `rows` in every step, and the
        // last step (its columns past `k`).
        if rows < TILE_ROWS {
            for step in steps.chunks_exact_mut(TILE_LEN) {
                step[rows * TILE_K..].fill(0);
            }
        }
        let last = steps.len() - STEP_LEN;
        steps[last..].fill(0);
        if a.rs == 1 && a.cs != 1 && rows > 0 {
            // SAFETY: AVX-512F/BW (caller); rows t·16 .. + rows of `a` lie in its span.
            unsafe { split_rows_transposed(a, t * TILE_ROWS, rows, steps) };
            return;
        }
        for r in 0..rows {
            let row = (t * TILE_ROWS + r) * a.rs;
            // SAFETY: AVX-512F/BW (caller); row `t·16 + r` of `a` lies in its checked span;
            // `steps` holds `k.div_ceil(32)` steps of 16 rows.
            unsafe { split_row(&a.data[row..], a.cs, k, r, steps) };
        }
    };
    pack(data, kt, par, fill)
}

/// Runs `fill(t, steps)` on each row (or column) tile's `kt` steps of `data`, on rayon's pool
/// when `par`; `fill` must write or zero every element of its steps.
fn pack(
    mut data: Vec<u16>,
    kt: usize,
    par: bool,
    fill: impl Fn(usize, &mut [u16]) + Sync,
) -> Packed {
    let fill = |(t, steps): (usize, &mut [u16])| fill(t, steps);
    if par {
        data.par_chunks_mut(kt * STEP_LEN)
            .enumerate()
            .for_each(fill);
    } else {
        data.chunks_mut(kt * STEP_LEN).enumerate().for_each(fill);
    }
    Packed { data, kt }
}

/// Lanes `0..take` of `x[0], x[stride], x[2·stride], …` (zeros above `take`): a plain load for
/// unit strides, a gather otherwise.
///
/// # Safety
/// AVX-512F; `x[(take − 1)·stride]` is in bounds; `take ≤ 16`; `15·stride < 2³¹`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load16(x: &[f32], stride: usize, take: usize) -> __m512 {
    let mask = ((1u32 << take) - 1) as __mmask16;
    // SAFETY: the contract; masked-off lanes are not read.
    unsafe {
        if stride == 1 {
            _mm512_maskz_loadu_ps(mask, x.as_ptr())
        } else {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride as i32),
            );
            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, x.as_ptr())
        }
    }
}

/// Splits one row of A (`k` values, `x[j·stride]`) into row `r` of the high and low tiles of
/// `steps`.
///
/// # Safety
/// AVX-512F and BW; `x[(k − 1)·stride]` in bounds, `15·stride < 2³¹`; `r < 16`; `steps` holds
/// `k.div_ceil(32)` steps.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn split_row(x: &[f32], stride: usize, k: usize, r: usize, steps: &mut [u16]) {
    let mut j = 0;
    while j < k {
        let take = (k - j).min(16);
        // SAFETY: elements j .. j + take of the row are in bounds (contract).
        let v = unsafe { load16(&x[j * stride..], stride, take) };
        // SAFETY: j < k ≤ 32·steps, r < 16.
        unsafe { store_row16(steps, r, j, v) };
        j += 16;
    }
}

/// Splits 16 values of row `r` of A at reduction steps `j .. j + 16` (`j` a multiple of 16) and
/// stores them in row `r`, columns `j % 32 ..` of step `j / 32`'s high tile, then its low tile.
///
/// # Safety
/// AVX-512F and BW; `r < 16` and `j < 32 · steps` for the steps that `steps` holds.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store_row16(steps: &mut [u16], r: usize, j: usize, v: __m512) {
    let (hi, lo) = split16(v);
    let at = (j / TILE_K) * STEP_LEN + r * TILE_K + j % TILE_K;
    debug_assert!(at + TILE_LEN + 16 <= steps.len());
    // SAFETY: both 16-value runs lie inside `steps` (contract).
    unsafe {
        let p = steps.as_mut_ptr().add(at);
        _mm256_storeu_si256(p.cast(), _mm512_cvtepi32_epi16(hi));
        _mm256_storeu_si256(p.add(TILE_LEN).cast(), _mm512_cvtepi32_epi16(lo));
    }
}

/// A `Vec<u16>` of length `n` with unspecified contents; the packers write (or zero) every
/// element before a kernel reads it.
#[allow(clippy::uninit_vec)]
fn unfilled(n: usize) -> Vec<u16> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: every bit pattern is a valid u16; see above for the writes.
    unsafe { v.set_len(n) };
    v
}

/// 16×16 transpose in registers: lane `j` of `r[i]` becomes lane `i` of `r[j]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    // Pairs of rows interleaved, then 4×4 blocks per 128-bit lane: u[4g + j] holds, in lane l,
    // rows 4g .. 4g + 4 of column 4l + j.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(t0, t2);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t0, t2);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t1, t3);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t1, t3);
    }
    // Column 4l + j gathers lane l of u[j], u[4 + j], u[8 + j], u[12 + j].
    for j in 0..4 {
        let v = _mm512_shuffle_f32x4::<0x44>(u[j], u[4 + j]);
        let w = _mm512_shuffle_f32x4::<0x44>(u[8 + j], u[12 + j]);
        let v2 = _mm512_shuffle_f32x4::<0xEE>(u[j], u[4 + j]);
        let w2 = _mm512_shuffle_f32x4::<0xEE>(u[8 + j], u[12 + j]);
        r[j] = _mm512_shuffle_f32x4::<0x88>(v, w);
        r[4 + j] = _mm512_shuffle_f32x4::<0xDD>(v, w);
        r[8 + j] = _mm512_shuffle_f32x4::<0x88>(v2, w2);
        r[12 + j] = _mm512_shuffle_f32x4::<0xDD>(v2, w2);
    }
}

/// Loads `lines` runs of `len ≤ 16` contiguous values, run `i` at `data[at + i·stride]`, and
/// transposes them: lane `i` of result `j` is element `j` of run `i` (zeros elsewhere).
///
/// # Safety
/// AVX-512F; `lines ≤ 16` and every run lies inside `data`.
#[target_feature(enable = "avx512f")]
unsafe fn transposed_block(
    data: &[f32],
    at: usize,
    stride: usize,
    lines: usize,
    len: usize,
) -> [__m512; 16] {
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, v) in r.iter_mut().enumerate().take(lines) {
        // SAFETY: run i lies inside `data` (contract).
        *v = unsafe { load16(&data[at + i * stride..], 1, len) };
    }
    transpose16(&mut r);
    r
}

/// [`split_row`] for the `rows` rows from `r0` of an `a` whose rows are strided and columns
/// contiguous (`a.rs == 1`, a transposed operand such as `dYᵀ`): 16×16 blocks are loaded
/// along the columns and transposed in registers instead of gathered.
///
/// # Safety
/// AVX-512F and BW; rows `r0 .. r0 + rows ≤ r0 + 16` lie in `a`'s checked span; `steps` holds
/// `a.cols.div_ceil(32)` steps.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn split_rows_transposed(a: MatRef<'_>, r0: usize, rows: usize, steps: &mut [u16]) {
    let k = a.cols;
    let mut kb = 0;
    while kb < k {
        let take = (k - kb).min(16);
        // SAFETY: columns kb .. kb + take, rows r0 .. r0 + rows are in bounds (contract).
        let r = unsafe { transposed_block(a.data, kb * a.cs + r0, a.cs, take, rows) };
        for (row, &v) in r.iter().enumerate().take(rows) {
            // SAFETY: kb < k ≤ 32·steps, row < 16.
            unsafe { store_row16(steps, row, kb, v) };
        }
        kb += 16;
    }
}

/// Packs `b` (`k × n`) into `nt` column tiles of `kt` steps (a high and a low tile each) in
/// AMX's pair order (tile row `p` holds reduction steps `2p` and `2p + 1` of 16 columns,
/// interleaved), zero-padded.
///
/// # Safety
/// AVX-512F must be available; `b`'s span must have been checked.
unsafe fn pack_b(b: MatRef<'_>, nt: usize, kt: usize, par: bool) -> Packed {
    let data = unfilled(nt * kt * STEP_LEN);
    let fill = |t: usize, steps: &mut [u16]| {
        let cols = b.cols.saturating_sub(t * TILE_ROWS).min(TILE_ROWS);
        // Zero what the pairs below do not write: a tile past the last column, and the last
        // step (its pair rows past `k`). Columns past `cols` are written as zeros.
        if cols == 0 {
            steps.fill(0);
        } else {
            let last = steps.len() - STEP_LEN;
            steps[last..].fill(0);
            // SAFETY: AVX-512F (caller); columns t·16 .. + cols of `b` lie in its checked
            // span; `steps` holds `k.div_ceil(32)` steps.
            unsafe { split_pairs(b, t * TILE_ROWS, cols, steps) };
        }
    };
    pack(data, kt, par, fill)
}

/// For rows `s, s + 1` of columns `c0 .. c0 + cols` of `b`, writes pair row `s / 2`:
/// `[hi_s, hi_s+1]` per column into the high tile and `[lo_s, lo_s+1]` into the low one (a
/// missing row `s + 1` counts as zeros).
///
/// # Safety
/// AVX-512F; the columns lie in `b`'s checked span, `15·b.cs < 2³¹`; `steps` holds
/// `b.rows.div_ceil(32)` steps.
#[target_feature(enable = "avx512f")]
unsafe fn split_pairs(b: MatRef<'_>, c0: usize, cols: usize, steps: &mut [u16]) {
    let k = b.rows;
    if b.rs == 1 && b.cs != 1 {
        // Columns contiguous (`b = Wᵀ`): load 16 columns × 16 steps and transpose them.
        let mut kb = 0;
        while kb < k {
            let take = (k - kb).min(16);
            // SAFETY: columns c0 .. c0 + cols, rows kb .. kb + take are in bounds (contract).
            let r = unsafe { transposed_block(b.data, c0 * b.cs + kb, b.cs, cols, take) };
            for q in 0..take.div_ceil(2) {
                // SAFETY: pair row (kb + 2q) / 2 < 16·steps.
                unsafe { store_pair(steps, (kb + 2 * q) / 2, r[2 * q], r[2 * q + 1]) };
            }
            kb += 16;
        }
        return;
    }
    let row = |s: usize| {
        if s < k {
            // SAFETY: row s, columns c0 .. c0 + cols are in bounds (contract).
            unsafe { load16(&b.data[s * b.rs + c0 * b.cs..], b.cs, cols) }
        } else {
            _mm512_setzero_ps()
        }
    };
    let mut s = 0;
    while s < k {
        // SAFETY: pair row s / 2 < 16·steps.
        unsafe { store_pair(steps, s / 2, row(s), row(s + 1)) };
        s += 2;
    }
}

/// Writes pair row `p` of a column tile: `[hi(x0), hi(x1)]` per column into the high tile and
/// `[lo(x0), lo(x1)]` into the low one.
///
/// # Safety
/// AVX-512F; `p < 16 · steps` for the steps that `steps` holds.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_pair(steps: &mut [u16], p: usize, x0: __m512, x1: __m512) {
    let (h0, l0) = split16(x0);
    let (h1, l1) = split16(x1);
    // Pair row p is row p % 16 of step p / 16 (rows are 32 u16, 64 bytes).
    let at = (p / TILE_ROWS) * STEP_LEN + (p % TILE_ROWS) * TILE_K;
    debug_assert!(at + TILE_LEN + TILE_K <= steps.len());
    // SAFETY: both rows lie inside `steps` (contract).
    unsafe {
        let q = steps.as_mut_ptr().add(at);
        _mm512_storeu_si512(q.cast(), _mm512_or_si512(h0, _mm512_slli_epi32::<16>(h1)));
        _mm512_storeu_si512(
            q.add(TILE_LEN).cast(),
            _mm512_or_si512(l0, _mm512_slli_epi32::<16>(l1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `a @ b` in `f64`.
    fn reference(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
        let mut out = vec![0f64; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                out[r * b.cols + c] = (0..a.cols)
                    .map(|l| {
                        a.data[r * a.rs + l * a.cs] as f64 * b.data[l * b.rs + c * b.cs] as f64
                    })
                    .sum();
            }
        }
        out
    }

    fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// `gemm_bf16x3` into `dst` through strides `rs`, `cs` (AMX must be available).
    fn product(
        dst: &mut [f32],
        rs: usize,
        cs: usize,
        a: MatRef<'_>,
        b: MatRef<'_>,
        accumulate: bool,
        threads: usize,
    ) {
        assert!(available() && dst.len() >= a.rows * b.cols);
        let out = StridedDst {
            ptr: dst.as_mut_ptr(),
            rs,
            cs,
        };
        // SAFETY: AMX is available; `dst` holds the `a.rows × b.cols` product through strides
        // that the callers pick to stay inside it.
        unsafe { gemm_bf16x3(out, a, b, accumulate, threads) };
    }

    /// Largest error over the largest reference magnitude.
    fn rel_err(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
        err / scale
    }

    #[test]
    fn bf16x3_products_are_within_1e_4_of_f64_for_every_layout() {
        if !available() {
            eprintln!("skipped: this CPU or OS offers no AMX bf16");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Shapes with ragged edges in every dimension, one past a reduction chunk (KC tiles ≈
        // 256 steps) and past an output block (MC, NC).
        for &(m, k, n) in &[
            (1, 1, 1),
            (17, 33, 15),
            (40, 300, 70),
            (530, 91, 270),
            (3, 517, 5),
        ] {
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let am = if ta {
                    MatRef::row_major(&a, k, m).t()
                } else {
                    MatRef::row_major(&a, m, k)
                };
                let bm = if tb {
                    MatRef::row_major(&b, n, k).t()
                } else {
                    MatRef::row_major(&b, k, n)
                };
                let want = reference(am, bm);
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; m * n];
                    product(&mut got, n, 1, am, bm, false, threads);
                    let e = rel_err(&got, &want);
                    assert!(e < 1e-4, "{m}x{k}x{n} t{ta}{tb} threads {threads}: {e}");
                    // Accumulating into a transposed destination.
                    let mut acc = vec![1f32; m * n];
                    product(&mut acc, 1, m, am, bm, true, threads);
                    let mut back = vec![0f32; m * n];
                    for r in 0..m {
                        for c in 0..n {
                            back[r * n + c] = acc[c * m + r] - 1.0;
                        }
                    }
                    let e = rel_err(&back, &want);
                    assert!(e < 1e-4, "accumulate {m}x{k}x{n}: {e}");
                }
            }
        }
    }

    #[test]
    fn transpose16_matches_a_scalar_transpose() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut r = [unsafe { _mm512_setzero_ps() }; 16];
        for (i, v) in r.iter_mut().enumerate() {
            // SAFETY: AVX-512F; 16 values per row.
            *v = unsafe { _mm512_loadu_ps(m[16 * i..].as_ptr()) };
        }
        // SAFETY: AVX-512F is available.
        unsafe { transpose16(&mut r) };
        for (j, v) in r.iter().enumerate() {
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F; 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *v) };
            for (i, &x) in out.iter().enumerate() {
                assert_eq!(x, m[16 * i + j], "lane {i} of row {j}");
            }
        }
    }

    #[test]
    fn bf16x3_is_much_closer_than_one_bf16_product() {
        if !available() {
            eprintln!("skipped: this CPU or OS offers no AMX bf16");
            return;
        }
        // A single bf16 product errs by ~2^-9 relative per term; the three-product split must
        // bring that down by orders of magnitude (the lo terms are really used).
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (m, k, n) = (64, 256, 48);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let want = reference(am, bm);
        let mut got = vec![0f32; m * n];
        product(&mut got, n, 1, am, bm, false, 1);
        // Rounded to bf16 by candle (the `half` crate), independently of our split.
        let bf = |v: &[f32]| -> Vec<f32> {
            use candle_core::{DType, Device, Tensor};
            let t = Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
            let t = t
                .to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            t.to_vec1().unwrap()
        };
        let (ab, bb) = (bf(&a), bf(&b));
        let single = reference(MatRef::row_major(&ab, m, k), MatRef::row_major(&bb, k, n));
        let single: Vec<f32> = single.iter().map(|&v| v as f32).collect();
        let (e3, e1) = (rel_err(&got, &want), rel_err(&single, &want));
        assert!(e1 > 1e-3, "one bf16 product: {e1}");
        assert!(e3 < e1 / 50.0, "bf16x3 {e3} vs one bf16 product {e1}");
    }
}
