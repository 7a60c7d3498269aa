// noisycxr's own CUDA kernels, compiled to PTX by build.rs (`--features cuda`) and loaded by
// src/ops/cuda.rs. Every kernel computes in f32 and reads / writes its tensors in their own
// dtype (f32, bf16 or f16); the suffix of each entry point names those dtypes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float ld(const __half *p, size_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void st(__half *p, size_t i, float v) { p[i] = __float2half_rn(v); }

// ---------------------------------------------------------------------------------------------
// AdamW, one pass over p, g, m, v (src/optim/adamw.rs, PyTorch's `_single_tensor_adamw` order),
// optionally writing the updated f32 master into a half-precision mirror (the model's variable).

__device__ __forceinline__ float lerp_torch(float a, float b, float w) {
    return fabsf(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

template <typename G, typename M>
__device__ void adamw(float *p, const G *g, float *m, float *v, M *mirror, size_t n, float keep,
                      float gscale, float w1, float b2, float one_minus_b2, float neg_step_size,
                      float bc2_sqrt, float eps) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)blockDim.x * gridDim.x) {
        float gi = ld(g, i) * gscale;
        float pi = p[i] * keep;
        float mi = lerp_torch(m[i], gi, w1);
        float vi = v[i] * b2 + one_minus_b2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi += neg_step_size * (mi / denom);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (mirror != nullptr) st(mirror, i, pi);
    }
}

#define ADAMW(NAME, G, M)                                                                      \
    extern "C" __global__ void NAME(float *p, const G *g, float *m, float *v, M *mirror,       \
                                    size_t n, float keep, float gscale, float w1, float b2,    \
                                    float one_minus_b2, float neg_step_size, float bc2_sqrt,   \
                                    float eps) {                                               \
        adamw(p, g, m, v, mirror, n, keep, gscale, w1, b2, one_minus_b2, neg_step_size,        \
              bc2_sqrt, eps);                                                                  \
    }
ADAMW(adamw_f32_f32, float, float)
ADAMW(adamw_bf16_bf16, __nv_bfloat16, __nv_bfloat16)
ADAMW(adamw_f16_f16, __half, __half)

// Sets *flag to 1 if any of x[0..n) is an inf or NaN (f16 loss scaling's overflow check).
#define NONFINITE(NAME, T)                                                                     \
    extern "C" __global__ void NAME(const T *x, size_t n, int *flag) {                          \
        for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                  \
             i += (size_t)blockDim.x * gridDim.x) {                                            \
            if (!isfinite(ld(x, i))) {                                                          \
                *flag = 1;                                                                     \
                return;                                                                        \
            }                                                                                  \
        }                                                                                      \
    }
NONFINITE(nonfinite_f32, float)
NONFINITE(nonfinite_bf16, __nv_bfloat16)
NONFINITE(nonfinite_f16, __half)

// ---------------------------------------------------------------------------------------------
// Row kernels: one warp per row of length d (blockDim = (32, ROWS_PER_BLOCK)).

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// y = softmax(x) over each row.
template <typename T>
__device__ void softmax_fwd(const T *x, T *y, size_t rows, int d) {
    size_t r = blockIdx.x * (size_t)blockDim.y + threadIdx.y;
    if (r >= rows) return;
    const T *xr = x + r * d;
    T *yr = y + r * d;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < d; j += 32) mx = fmaxf(mx, ld(xr, j));
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += 32) s += __expf(ld(xr, j) - mx);
    float inv = 1.0f / warp_sum(s);
    for (int j = threadIdx.x; j < d; j += 32) st(yr, j, __expf(ld(xr, j) - mx) * inv);
}

// dx = y · (dy − Σ dy·y) over each row.
template <typename T>
__device__ void softmax_bwd(const T *y, const T *dy, T *dx, size_t rows, int d) {
    size_t r = blockIdx.x * (size_t)blockDim.y + threadIdx.y;
    if (r >= rows) return;
    size_t o = r * d;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += 32) dot += ld(y, o + j) * ld(dy, o + j);
    dot = warp_sum(dot);
    for (int j = threadIdx.x; j < d; j += 32) st(dx, o + j, ld(y, o + j) * (ld(dy, o + j) - dot));
}

// (mean, 1/σ) of one row, two passes (as the CPU kernel).
template <typename T>
__device__ float2 row_stats(const T *xr, int d, float eps) {
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += 32) s += ld(xr, j);
    float mean = warp_sum(s) / d;
    float q = 0.0f;
    for (int j = threadIdx.x; j < d; j += 32) {
        float c = ld(xr, j) - mean;
        q += c * c;
    }
    float var = warp_sum(q) / d;
    return make_float2(mean, rsqrtf(var + eps));
}

// y = (x − μ)/σ · γ + β over each row.
template <typename T>
__device__ void layer_norm_fwd(const T *x, const T *g, const T *b, T *y, size_t rows, int d,
                               float eps) {
    size_t r = blockIdx.x * (size_t)blockDim.y + threadIdx.y;
    if (r >= rows) return;
    const T *xr = x + r * d;
    float2 ms = row_stats(xr, d, eps);
    for (int j = threadIdx.x; j < d; j += 32)
        st(y, r * d + j, (ld(xr, j) - ms.x) * ms.y * ld(g, j) + ld(b, j));
}

// dx = σ⁻¹ (ĝ − mean ĝ − x̂ · mean(ĝ x̂)) with ĝ = dy·γ; stats[r] = (μ, σ⁻¹) for the column sums.
template <typename T>
__device__ void layer_norm_bwd(const T *x, const T *g, const T *dy, T *dx, float2 *stats,
                               size_t rows, int d, float eps) {
    size_t r = blockIdx.x * (size_t)blockDim.y + threadIdx.y;
    if (r >= rows) return;
    size_t o = r * d;
    float2 ms = row_stats(x + o, d, eps);
    float c1 = 0.0f, c2 = 0.0f;
    for (int j = threadIdx.x; j < d; j += 32) {
        float h = ld(dy, o + j) * ld(g, j);
        c1 += h;
        c2 += h * (ld(x, o + j) - ms.x) * ms.y;
    }
    c1 = warp_sum(c1) / d;
    c2 = warp_sum(c2) / d;
    for (int j = threadIdx.x; j < d; j += 32) {
        float xh = (ld(x, o + j) - ms.x) * ms.y;
        float h = ld(dy, o + j) * ld(g, j);
        st(dx, o + j, ms.y * (h - c1 - xh * c2));
    }
    if (threadIdx.x == 0) stats[r] = ms;
}

// Column sums dγ = Σ_r dy·x̂, dβ = Σ_r dy, stage 1: block (32, 8) sums LN_CHUNK rows of 32
// columns into partial[chunk][col]; stage 2 adds the chunks in order (deterministic).
#define LN_CHUNK 64
template <typename T>
__device__ void layer_norm_cols(const T *x, const T *dy, const float2 *stats, float *pg,
                                float *pb, size_t rows, int d) {
    __shared__ float sg[8][33], sb[8][33];
    int col = blockIdx.x * 32 + threadIdx.x;
    size_t r0 = (size_t)blockIdx.y * LN_CHUNK;
    float ag = 0.0f, ab = 0.0f;
    if (col < d) {
        for (size_t r = r0 + threadIdx.y; r < rows && r < r0 + LN_CHUNK; r += 8) {
            float2 ms = stats[r];
            float e = ld(dy, r * d + col);
            ag += e * (ld(x, r * d + col) - ms.x) * ms.y;
            ab += e;
        }
    }
    sg[threadIdx.y][threadIdx.x] = ag;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && col < d) {
        for (int k = 1; k < 8; k++) {
            ag += sg[k][threadIdx.x];
            ab += sb[k][threadIdx.x];
        }
        pg[blockIdx.y * (size_t)d + col] = ag;
        pb[blockIdx.y * (size_t)d + col] = ab;
    }
}

template <typename T>
__device__ void sum_chunks(const float *pg, const float *pb, T *dg, T *db, int chunks, int d) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    float ag = 0.0f, ab = 0.0f;
    for (int c = 0; c < chunks; c++) {
        ag += pg[(size_t)c * d + col];
        ab += pb[(size_t)c * d + col];
    }
    st(dg, col, ag);
    st(db, col, ab);
}

#define ROW_KERNELS(S, T)                                                                      \
    extern "C" __global__ void softmax_fwd_##S(const T *x, T *y, size_t rows, int d) {          \
        softmax_fwd(x, y, rows, d);                                                            \
    }                                                                                          \
    extern "C" __global__ void softmax_bwd_##S(const T *y, const T *dy, T *dx, size_t rows,     \
                                               int d) {                                        \
        softmax_bwd(y, dy, dx, rows, d);                                                       \
    }                                                                                          \
    extern "C" __global__ void layer_norm_fwd_##S(const T *x, const T *g, const T *b, T *y,     \
                                                  size_t rows, int d, float eps) {             \
        layer_norm_fwd(x, g, b, y, rows, d, eps);                                              \
    }                                                                                          \
    extern "C" __global__ void layer_norm_bwd_##S(const T *x, const T *g, const T *dy, T *dx,   \
                                                  float2 *stats, size_t rows, int d,           \
                                                  float eps) {                                 \
        layer_norm_bwd(x, g, dy, dx, stats, rows, d, eps);                                     \
    }                                                                                          \
    extern "C" __global__ void layer_norm_cols_##S(const T *x, const T *dy,                     \
                                                   const float2 *stats, float *pg, float *pb,  \
                                                   size_t rows, int d) {                       \
        layer_norm_cols(x, dy, stats, pg, pb, rows, d);                                        \
    }                                                                                          \
    extern "C" __global__ void sum_chunks_##S(const float *pg, const float *pb, T *dg, T *db,   \
                                              int chunks, int d) {                             \
        sum_chunks(pg, pb, dg, db, chunks, d);                                                 \
    }
ROW_KERNELS(f32, float)
ROW_KERNELS(bf16, __nv_bfloat16)
ROW_KERNELS(f16, __half)

