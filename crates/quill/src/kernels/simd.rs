//! Hand-written SIMD for the f32 hot path, chosen once at run time from the CPU's features.
//! quill owns these because decode speed is the product: a dot product that streams weights at
//! memory bandwidth is the whole of batch-1 decoding.
//!
//! Every function computes a given output the same way whatever the thread count or batch
//! composition (fixed accumulator layout and summation order), so results are reproducible on
//! one machine. Machines with different instruction sets may differ in the last bits.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2Fma;
        }
        Level::Portable
    })
}

/// Whether the CPU has AVX2, FMA and F16C (the x86-64 kernels' instruction set), checked once.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx2_f16c() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| level() == Level::Avx2Fma && std::arch::is_x86_feature_detected!("f16c"))
}

/// Whether the CPU also has AVX-512 VNNI (with F, BW and VL), used by the interleaved integer
/// kernels.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_vnni() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        has_avx2_f16c()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    })
}

/// Whether the CPU has AVX-512 F (with AVX2/FMA/F16C), used by the float matrix tiles.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx512() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| has_avx2_f16c() && std::arch::is_x86_feature_detected!("avx512f"))
}

/// Whether the CPU has the Armv8.2+ dot-product extension (`sdot`), used by the interleaved
/// integer kernels; checked once.
#[cfg(target_arch = "aarch64")]
pub(super) fn has_dotprod() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::arch::is_aarch64_feature_detected!("dotprod"))
}

/// Whether the float tiles are 16 lanes wide (AVX-512): enough registers for 4 × 4 tiles.
pub(super) fn wide_float_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The instruction set the kernels use on this machine.
pub fn describe() -> &'static str {
    match level() {
        // NEON is part of AArch64: the integer kernels for the 32-value block formats use it
        // (with `sdot` where present); the float kernels are the portable ones, which the
        // compiler vectorises with NEON.
        #[cfg(target_arch = "aarch64")]
        Level::Portable if has_dotprod() => "neon+dotprod (32-value quant blocks), portable",
        #[cfg(target_arch = "aarch64")]
        Level::Portable => "neon (32-value quant blocks), portable",
        #[cfg(not(target_arch = "aarch64"))]
        Level::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma if has_vnni() && super::quant::has_amx() => {
            "avx2+fma, avx512 float tiles, avx512-vnni, amx-int8 (q8_0, q4_k, q5_k, q6_k batches)"
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma if has_vnni() => "avx2+fma, avx512 float tiles, avx512-vnni",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma if has_avx512() => "avx2+fma, avx512 float tiles",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => "avx2+fma",
    }
}

/// `Σ a[i]·b[i]`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match level() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time above).
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { dot_avx2(a, b) },
        Level::Portable => dot_portable(a, b),
    }
}

/// `y[i] += alpha · x[i]`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    match level() {
        // SAFETY: as in `dot`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { axpy_avx2(alpha, x, y) },
        Level::Portable => {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi += alpha * xi;
            }
        }
    }
}

/// The portable kernel: the same accumulator layout as the SIMD one (two 8-lane partial sums
/// over 16-element steps), written so the compiler vectorises it.
fn dot_portable(xr: &[f32], w: &[f32]) -> f32 {
    let n = w.len();
    let mut a0 = [0.0f32; 8];
    let mut a1 = [0.0f32; 8];
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..8 {
            a0[k] += xr[i + k] * w[i + k];
            a1[k] += xr[i + 8 + k] * w[i + 8 + k];
        }
        i += 16;
    }
    if i + 8 <= n {
        for k in 0..8 {
            a0[k] += xr[i + k] * w[i + k];
        }
        i += 8;
    }
    let mut v = [0.0f32; 8];
    for k in 0..8 {
        v[k] = a0[k] + a1[k];
    }
    let mut s = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
    for j in i..n {
        s += xr[j] * w[j];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = b.len().min(a.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
        a1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            a1,
        );
        i += 16;
    }
    if i + 8 <= n {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
        i += 8;
    }
    let mut s = hsum256(_mm256_add_ps(a0, a1));
    for j in i..n {
        s += *pa.add(j) * *pb.add(j);
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += 8;
    }
    while i < n {
        *py.add(i) += alpha * *px.add(i);
        i += 1;
    }
}

/// Horizontal sum of eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
    _mm_cvtss_f32(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_agree_on_odd_lengths() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 257] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.3).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-4, "n = {n}");
            assert!(
                (dot_portable(&a, &b) as f64 - exact).abs() < 1e-4,
                "n = {n}"
            );
            let mut y = b.clone();
            axpy(0.5, &a, &mut y);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
        }
    }
}
