//! Checks of the patches in our vendored `candle-core` (`vendor/candle-core/
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

    /// Patch 6: the gradients left for the variables carry no op graph. Without the detach,
    /// `w`'s gradient is `x.t().matmul(grad)` and `x` is a variable, so the stored tensor kept
    /// the forward graph alive (and, through an optimizer's state, every later step's).
    #[test]
    fn stored_gradients_are_detached() {
        let x = candle_core::Var::from_tensor(&random(&[4, 3], 1)).unwrap();
        let w = candle_core::Var::from_tensor(&random(&[3, 2], 2)).unwrap();
        let y = x.matmul(&w).unwrap().relu().unwrap();
        // Two consumers of `y`, so its gradient is also summed once (the `Occupied` branch).
        let loss = (y.sum_all().unwrap() + y.sqr().unwrap().sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w)] {
            let g = grads.get(v.as_tensor()).unwrap();
            assert!(!g.track_op(), "gradient of {name} still tracks its graph");
        }
    }

    /// Patch 7: conv2d's input gradient, now a stride-1 conv of the zero-dilated gradient with
    /// the flipped kernel, equals conv_transpose2d's (0.11.1's formula) on every geometry our
    /// models use and some they don't: strides 1-3, odd and even sizes (the forward's floor
    /// leaves a row out), dilation 2, unequal kernel sides (explicit padding) and a padding
    /// larger than `dilation·(k - 1)` on one side (the conv_transpose2d fallback). The weight
    /// gradient is unchanged; an input that tracks nothing gets none. A non-square input whose
    /// sides need different output paddings now gets a gradient of its own shape.
    #[test]
    fn conv2d_input_gradient_matches_conv_transpose2d() {
        use candle_core::{DType, Var};
        // (cin, cout, h, w, kh, kw, padding, stride, dilation)
        let cases = [
            (3, 4, 7, 7, 3, 3, 1, 1, 1),
            (3, 4, 8, 8, 3, 3, 1, 2, 1),
            (3, 4, 9, 9, 3, 3, 1, 2, 1),
            (2, 3, 8, 7, 1, 1, 0, 2, 1),
            (2, 3, 15, 16, 7, 7, 3, 2, 1),
            (2, 3, 9, 9, 3, 3, 2, 1, 2),
            (2, 3, 9, 9, 3, 3, 0, 2, 1),
            (2, 3, 8, 8, 1, 3, 0, 1, 1),
            (2, 3, 8, 8, 3, 1, 1, 1, 1),
            (2, 3, 10, 11, 3, 3, 1, 3, 1),
        ];
        for (i, &(cin, cout, h, w, kh, kw, p, s, d)) in cases.iter().enumerate() {
            let f64t = |shape: &[usize], seed| random(shape, seed).to_dtype(DType::F64).unwrap();
            let x = Var::from_tensor(&f64t(&[2, cin, h, w], 10 + i as u64)).unwrap();
            let k = Var::from_tensor(&f64t(&[cout, cin, kh, kw], 20 + i as u64)).unwrap();
            let y = x.conv2d(&k, p, s, d, 1).unwrap();
            let r = f64t(y.dims(), 30 + i as u64);
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let got = grads.get(x.as_tensor()).unwrap();
            // The new path answers every case but the one whose padding exceeds
            // `dilation·(kw - 1)` (case 8), which falls back to conv_transpose2d.
            let direct =
                candle_core::backprop::conv2d_input_grad(&r, &k, x.dims(), p, s, d).unwrap();
            assert_eq!(direct.is_some(), i != 8, "case {i}: which path");
            if let Some(direct) = direct {
                let diff = (&direct - got).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(
                    diff.to_scalar::<f64>().unwrap(),
                    0.0,
                    "case {i}: backward used it"
                );
            }
            // conv_transpose2d takes one output padding for both sides, and 0.11.1 passed the
            // height's: with `h != w` its gradient could come out a column too wide or too
            // narrow (cases 3 and 4). Here the reference gets the larger of the two and is cut
            // back to the input (what lies past its edge is not part of the gradient).
            let out_pad =
                |len: usize, out: usize, k: usize| len + 2 * p - ((out - 1) * s + d * (k - 1) + 1);
            let out_padding =
                out_pad(h, y.dim(2).unwrap(), kh).max(out_pad(w, y.dim(3).unwrap(), kw));
            let want = r
                .conv_transpose2d(&k, p, out_padding, s, d)
                .unwrap()
                .narrow(2, 0, h)
                .unwrap()
                .narrow(3, 0, w)
                .unwrap();
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let diff = diff.to_scalar::<f64>().unwrap();
            assert!(
                diff <= 1e-12 * scale.max(1.0),
                "case {i}: max |diff| {diff}"
            );
            let want_k = x
                .transpose(0, 1)
                .unwrap()
                .conv2d(&r.transpose(0, 1).unwrap(), p, d, s, 1)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .narrow(2, 0, kh)
                .unwrap()
                .narrow(3, 0, kw)
                .unwrap();
            let got_k = grads.get(k.as_tensor()).unwrap();
            let diff = (got_k - want_k).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f64>().unwrap() <= 1e-12,
                "case {i}: kernel gradient"
            );
            // An input that tracks nothing (an image batch) gets no gradient.
            let plain = x.as_tensor().detach();
            let y = plain.conv2d(&k, p, s, d, 1).unwrap();
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(
                grads.get(&plain).is_none(),
                "case {i}: untracked input got a gradient"
            );
            assert!(grads.get(k.as_tensor()).is_some());
        }
    }
}
