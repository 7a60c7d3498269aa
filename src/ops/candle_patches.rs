//! Checks of the CPU patches in our vendored `candle-core` (`vendor/candle-core/
//! NOISYCXR_PATCHES.md`) against plain loops, since candle's own test suite is not vendored.

#[cfg(test)]
mod tests {
    use crate::ops::testutil::random;

    /// `sum_keepdim` over every subset of dims of a rank-4 tensor (patch 2: runs of reduced and
    /// kept dims, e.g. a conv bias gradient over `(0, 2, 3)`), against an f64 loop.
    #[test]
    fn reduce_sum_over_any_dims_matches_a_loop() {
        let shape = [3usize, 4, 5, 6];
        let x = random(&shape, 9);
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for mask in 1u32..16 {
            let dims: Vec<usize> = (0..4).filter(|d| mask & (1 << d) != 0).collect();
            let got = x.sum_keepdim(dims.as_slice()).unwrap();
            let out: Vec<usize> = (0..4)
                .map(|d| if dims.contains(&d) { 1 } else { shape[d] })
                .collect();
            assert_eq!(got.dims(), out.as_slice(), "{dims:?}");
            let mut want = vec![0f64; out.iter().product()];
            for (i, &val) in v.iter().enumerate() {
                let (mut rem, mut o) = (i, 0);
                let mut mult = 1;
                for d in (0..4).rev() {
                    let idx = rem % shape[d];
                    rem /= shape[d];
                    o += if dims.contains(&d) { 0 } else { idx * mult };
                    mult *= out[d];
                }
                want[o] += val as f64;
            }
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{dims:?}: {g} vs {w}");
            }
        }
        // A zero-sized dim: the sum is all zeros of the kept shape.
        let z = candle_core::Tensor::zeros(
            (2, 0, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let s = z.sum_keepdim(&[0usize, 1][..]).unwrap();
        assert_eq!(s.to_vec3::<f32>().unwrap(), vec![vec![vec![0f32; 3]]]);
    }
}
