//! Reduced-scale decoding of grayscale sequential JPEGs, the layout of CheXpert and
//! MIMIC-CXR-JPG films, fast enough to beat libjpeg-turbo's `draft()` mode.
//!
//! Each 8×8 block yields an `n`×`n` block (`n` = 1, 2 or 4, i.e. 1/8, 1/4 or 1/2 scale) whose
//! samples are the exact means of the block's full-resolution inverse DCT over each
//! `(8/n)`×`(8/n)` cell. The means are linear in the DCT coefficients, so every non-zero
//! coefficient is added in, weighted, as soon as it is Huffman-decoded: `n²` multiply-adds per
//! coefficient and no IDCT at all. Entropy decoding reads a 64-bit buffer refilled eight bytes at
//! a time from the scan with its byte stuffing removed, with 9-bit lookup tables.
//!
//! Supported: 8-bit, one component, baseline or extended sequential Huffman coding, restart
//! markers. Anything else (progressive, lossless, arithmetic coding, colour, 12-bit, a height
//! given by DNL) returns `None`, and the caller decodes with `jpeg-decoder` instead; so do corrupt
//! files, so that its error message is the one reported.

/// Zigzag position → natural (row-major) index in the 8×8 block.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

const LOOKUP_BITS: u32 = 9;

/// A decoded image: `width`×`height` 8-bit samples.
pub(crate) struct Reduced {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A canonical Huffman table (JPEG Annex C) with a 9-bit direct lookup.
struct Huffman {
    /// `(length << 8) | symbol` for codes of ≤ 9 bits, indexed by the next 9 bits; 0 = longer.
    lookup: Vec<u16>,
    /// Largest code of each length (−1 when none), lengths 1..=16.
    maxcode: [i32; 18],
    /// `values` index of the first code of each length, minus that code.
    delta: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Option<Huffman> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return None;
        }
        let mut lookup = vec![0u16; 1 << LOOKUP_BITS];
        let mut maxcode = [-1i32; 18];
        let mut delta = [0i32; 17];
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            delta[len] = k as i32 - code;
            for _ in 0..n {
                // More codes than the length allows: a corrupt table.
                if code >= 1 << len {
                    return None;
                }
                if len as u32 <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len as u32;
                    let base = (code as usize) << shift;
                    for e in &mut lookup[base..base + (1 << shift)] {
                        *e = ((len as u16) << 8) | values[k] as u16;
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                maxcode[len] = code - 1;
            }
            code <<= 1;
        }
        Some(Huffman {
            lookup,
            maxcode,
            delta,
            values,
        })
    }
}

/// MSB-first bit reader over unstuffed scan bytes followed by at least 8 bytes of padding.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            buf: 0,
            n: 0,
        }
    }

    /// Tops the buffer up to at least 56 bits (zeros past the end of the data).
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(w) = self.data.get(self.pos..self.pos + 8) {
            let w = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            self.buf |= w >> self.n;
            self.pos += ((63 - self.n) >> 3) as usize;
            self.n |= 56;
        } else {
            while self.n <= 56 {
                let b = self.data.get(self.pos).copied().unwrap_or(0);
                self.pos += 1;
                self.buf |= (b as u64) << (56 - self.n);
                self.n += 8;
            }
        }
    }

    #[inline(always)]
    fn peek(&self, k: u32) -> u32 {
        (self.buf >> (64 - k)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, k: u32) {
        self.buf <<= k;
        self.n -= k;
    }

    /// Whether more bits were consumed than the data holds before its 8 bytes of padding
    /// (a truncated scan decoded from padding zeros).
    fn overran(&self) -> bool {
        self.pos * 8 - self.n as usize > self.data.len().saturating_sub(8) * 8
    }

    /// Next Huffman symbol; the buffer must hold ≥ 16 bits.
    #[inline(always)]
    fn symbol(&mut self, h: &Huffman) -> Option<u8> {
        let e = h.lookup[self.peek(LOOKUP_BITS) as usize];
        if e != 0 {
            self.consume((e >> 8) as u32);
            return Some(e as u8);
        }
        for len in LOOKUP_BITS + 1..=16 {
            let code = self.peek(len) as i32;
            if code <= h.maxcode[len as usize] {
                self.consume(len);
                return h
                    .values
                    .get((code + h.delta[len as usize]) as usize)
                    .copied();
            }
        }
        None
    }

    /// `s` magnitude bits as a signed value (JPEG `EXTEND`); the buffer must hold ≥ `s` bits.
    #[inline(always)]
    fn extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.peek(s) as i32;
        self.consume(s);
        if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(((*b.get(at)? as usize) << 8) | *b.get(at + 1)? as usize)
}

/// Mean of `C(u)/2 · cos((2x+1)uπ/16)` over the `m = 8/n` samples of cell `q`, for each
/// frequency `u`: `a[q][u]`. The block's cell mean is `Σ_uv F(v,u) a[qy][v] a[qx][u] + 128`.
fn cell_means(n: usize) -> Vec<[f64; 8]> {
    let m = 8 / n;
    (0..n)
        .map(|q| {
            let mut a = [0.0f64; 8];
            for (u, au) in a.iter_mut().enumerate() {
                let c = if u == 0 {
                    std::f64::consts::FRAC_1_SQRT_2
                } else {
                    1.0
                } / 2.0;
                let s: f64 = (q * m..(q + 1) * m)
                    .map(|x| ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos())
                    .sum();
                *au = c * s / m as f64;
            }
            a
        })
        .collect()
}

/// Decodes `bytes` at `n`/8 scale (`n` ∈ {1, 2, 4}); `None` when the file is not a layout this
/// decoder handles (or is corrupt): the caller then falls back to the general decoder.
///
/// The output is `ceil(w n / 8)`×`ceil(h n / 8)`, libjpeg's scaled size.
pub(crate) fn decode(bytes: &[u8], n: usize) -> Option<Reduced> {
    if ![1, 2, 4].contains(&n) || bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut frame: Option<(usize, usize, usize)> = None; // (width, height, quant table)
    let mut restart = 0usize;
    let mut pos = 2;
    loop {
        // Next marker (fill bytes 0xFF allowed).
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        while *bytes.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = *bytes.get(pos)?;
        pos += 1;
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue;
        }
        let len = be16(bytes, pos)?;
        let seg = bytes.get(pos + 2..pos + len)?;
        match marker {
            0xC0 | 0xC1 => {
                // Baseline / extended sequential Huffman: 8-bit, one component only.
                if seg.len() < 9 || seg[0] != 8 || seg[5] != 1 {
                    return None;
                }
                let (h, w) = (be16(seg, 1)?, be16(seg, 3)?);
                // Height 0 (given later by DNL) and absurd sizes go to the general decoder.
                if h == 0 || w == 0 || w * h > 1 << 28 {
                    return None;
                }
                frame = Some((w, h, (seg[8] & 3) as usize));
            }
            0xC2..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => return None,
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    let (class, id) = (seg[p] >> 4, (seg[p] & 3) as usize);
                    let counts: [u8; 16] = seg.get(p + 1..p + 17)?.try_into().ok()?;
                    let total: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = seg.get(p + 17..p + 17 + total)?.to_vec();
                    let table = Huffman::new(&counts, values)?;
                    match class {
                        0 => dc[id] = Some(table),
                        1 => ac[id] = Some(table),
                        _ => return None,
                    }
                    p += 17 + total;
                }
            }
            0xDB => {
                let mut p = 0;
                while p < seg.len() {
                    let (precision, id) = (seg[p] >> 4, (seg[p] & 3) as usize);
                    let mut t = [0u16; 64];
                    if precision == 0 {
                        for (k, v) in seg.get(p + 1..p + 65)?.iter().enumerate() {
                            t[k] = *v as u16;
                        }
                        p += 65;
                    } else {
                        for (k, v) in t.iter_mut().enumerate() {
                            *v = be16(seg, p + 1 + 2 * k)? as u16;
                        }
                        p += 129;
                    }
                    qt[id] = Some(t);
                }
            }
            0xDD => restart = be16(seg, 0)?,
            0xDA => {
                let (w, h, tq) = frame?;
                if seg.first() != Some(&1) || seg.len() < 6 {
                    return None;
                }
                let (td, ta) = ((seg[2] >> 4) as usize & 3, (seg[2] & 3) as usize);
                if seg[3] != 0 || seg[4] != 63 || seg[5] != 0 {
                    return None; // not a sequential scan
                }
                let (dct, act) = (dc[td].as_ref()?, ac[ta].as_ref()?);
                return scan(&bytes[pos + len..], w, h, n, &qt[tq]?, dct, act, restart);
            }
            0xD9 | 0xD8 => return None,
            _ => {} // APPn, COM, DNL before a scan, ...: skipped
        }
        pos += len;
    }
}

/// Splits the entropy-coded data at restart markers and removes byte stuffing.
fn unstuff(data: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(data.len() + 8);
    let mut starts = vec![0];
    let mut i = 0;
    while i < data.len() {
        match data[i..].iter().position(|&b| b == 0xFF) {
            None => {
                out.extend_from_slice(&data[i..]);
                break;
            }
            Some(p) => {
                out.extend_from_slice(&data[i..i + p]);
                i += p;
                let next = data.get(i + 1).copied().unwrap_or(0xD9);
                match next {
                    0x00 => {
                        out.push(0xFF);
                        i += 2;
                    }
                    0xFF => i += 1,
                    0xD0..=0xD7 => {
                        out.extend_from_slice(&[0; 8]);
                        starts.push(out.len());
                        i += 2;
                    }
                    _ => break, // EOI or another marker: end of the scan
                }
            }
        }
    }
    out.extend_from_slice(&[0; 8]);
    (out, starts)
}

#[allow(clippy::too_many_arguments)]
fn scan(
    data: &[u8],
    w: usize,
    h: usize,
    n: usize,
    q: &[u16; 64],
    dct: &Huffman,
    act: &Huffman,
    restart: usize,
) -> Option<Reduced> {
    let (bw, bh) = (w.div_ceil(8), h.div_ceil(8));
    let blocks = bw * bh;
    let (clean, starts) = unstuff(data);
    let per = if restart > 0 { restart } else { blocks };
    if starts.len() < blocks.div_ceil(per) {
        return None; // fewer restart intervals than the frame needs: truncated
    }
    // Weights of zigzag coefficient k on output cell i, dequantisation included.
    let a = cell_means(n);
    let nn = n * n;
    let mut weights = vec![0.0f32; 64 * nn];
    for k in 0..64 {
        let (v, u) = (ZIGZAG[k] / 8, ZIGZAG[k] % 8);
        for qy in 0..n {
            for qx in 0..n {
                weights[k * nn + qy * n + qx] = (q[k] as f64 * a[qy][v] * a[qx][u]) as f32;
            }
        }
    }
    let stride = bw * n;
    let mut full = vec![0u8; stride * bh * n];
    let mut acc = [0.0f32; 16];
    let mut block = 0;
    let ends: Vec<usize> = starts[1..].iter().copied().chain([clean.len()]).collect();
    for (&start, &end) in starts.iter().zip(&ends).take(blocks.div_ceil(per)) {
        let mut bits = Bits::new(&clean[start..end]);
        let mut pred = 0i32;
        for _ in 0..per.min(blocks - block) {
            bits.refill();
            let s = bits.symbol(dct)? as u32;
            if s > 11 {
                return None;
            }
            pred = pred.wrapping_add(bits.extend(s));
            let d = pred as f32 * weights[0];
            acc[..nn].fill(d);
            let mut k = 1;
            while k < 64 {
                bits.refill();
                let rs = bits.symbol(act)?;
                let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
                if s == 0 {
                    if r != 15 {
                        break;
                    }
                    k += 16;
                    continue;
                }
                k += r;
                if k > 63 {
                    return None;
                }
                let v = bits.extend(s) as f32;
                for (o, wt) in acc[..nn].iter_mut().zip(&weights[k * nn..(k + 1) * nn]) {
                    *o += v * wt;
                }
                k += 1;
            }
            let (by, bx) = (block / bw, block % bw);
            for qy in 0..n {
                let row = (by * n + qy) * stride + bx * n;
                for qx in 0..n {
                    full[row + qx] = (acc[qy * n + qx] + 128.5).clamp(0.0, 255.0) as u8;
                }
            }
            block += 1;
        }
        if bits.overran() {
            return None;
        }
    }
    // Crop the block-aligned output to libjpeg's scaled size.
    let (ow, oh) = ((w * n).div_ceil(8), (h * n).div_ceil(8));
    let mut data = Vec::with_capacity(ow * oh);
    for y in 0..oh {
        data.extend_from_slice(&full[y * stride..y * stride + ow]);
    }
    Some(Reduced {
        width: ow,
        height: oh,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_huffman_tables_are_refused() {
        // Three codes of length 1 cannot exist.
        let mut counts = [0u8; 16];
        counts[0] = 3;
        assert!(Huffman::new(&counts, vec![1, 2, 3]).is_none());
        // Counts that disagree with the number of values.
        counts[0] = 1;
        assert!(Huffman::new(&counts, vec![1, 2]).is_none());
        // A valid table: codes 0 (len 1) and 10, 11 (len 2).
        counts[1] = 2;
        let h = Huffman::new(&counts, vec![7, 8, 9]).unwrap();
        let mut bits = Bits::new(&[0b0101_1000, 0, 0, 0, 0, 0, 0, 0, 0]);
        bits.refill();
        let got: Vec<u8> = (0..3).map(|_| bits.symbol(&h).unwrap()).collect();
        assert_eq!(got, vec![7, 8, 9]);
    }

    #[test]
    fn cell_means_are_box_averages_of_the_idct_basis() {
        // n = 1: only the DC term has a non-zero mean, 1/(2 sqrt 2) (the 1/8 DC scale).
        let a = cell_means(1);
        assert!((a[0][0] - 1.0 / (2.0 * 2f64.sqrt())).abs() < 1e-12);
        assert!(a[0][1..].iter().all(|v| v.abs() < 1e-12));
        // n = 2: the first odd basis function has opposite means on the two halves.
        let a = cell_means(2);
        assert!((a[0][1] + a[1][1]).abs() < 1e-12 && a[0][1] > 0.0);
    }
}
