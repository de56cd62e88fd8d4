//! Causal attention of new query rows over their sequences' KV caches. One call covers every
//! sequence of a batch, split over the thread pool by (sequence, query row, head) units, so a
//! decode step of many sequences is one parallel region per layer instead of one per sequence.

use super::{simd, softmax};

/// Below this many multiply-adds attention runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// One KV head's cached rows, `[positions, hd]`, in the cache's storage type. Half-precision
/// rows hold each key and value rounded to the nearest f16 (as llama.cpp's default cache
/// does): half the bytes for attention to stream, and every score and sum then computed
/// exactly as over the f32 widening of those rows.
#[derive(Debug, Clone, PartialEq)]
pub enum KvRows {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl KvRows {
    /// Values held (positions · hd).
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32(v) => v.len(),
            KvRows::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the rows start, as bytes (for the SIMD kernels, which read either type).
    #[cfg(target_arch = "x86_64")]
    fn base(&self) -> *const u8 {
        match self {
            KvRows::F32(v) => v.as_ptr().cast(),
            KvRows::F16(v) => v.as_ptr().cast(),
        }
    }
}

/// One sequence's part of an [`attention`] call.
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq<'a> {
    /// [n_new, n_head, hd]: the new rows' queries; row `t` sits at position `start + t` and
    /// sees positions `0..=start + t`.
    pub q: &'a [f32],
    /// Per KV head, [positions, hd]: at least `start + n_new` positions, the new rows' own keys
    /// included. Each head's positions are contiguous, so one head's scan streams memory.
    pub keys: &'a [KvRows],
    /// Per KV head, [positions, hd], as `keys`.
    pub values: &'a [KvRows],
    /// Positions already in the cache before the new rows.
    pub start: usize,
}

impl AttnSeq<'_> {
    fn rows(&self, n_head: usize, hd: usize) -> usize {
        self.q.len() / (n_head * hd)
    }
}

/// Causal attention for every sequence in `seqs`; `out` is [Σ n_new, n_head, hd], the
/// sequences' rows in order. `scores` is scratch, grown as needed (one row of scores per
/// parallel task).
///
/// Each (sequence, row, head) unit is computed by the same code whatever the split and whatever
/// else is in the batch, so results depend neither on the thread count nor on the batch.
///
/// # Panics
/// If a sequence's KV head count differs from the others' or does not divide `n_head`, or its
/// cache holds fewer than `start + n_new` positions (callers' invariants, not user input).
pub fn attention(
    seqs: &[AttnSeq<'_>],
    n_head: usize,
    hd: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Some(first) = seqs.first() else { return };
    let n_kv = first.keys.len();
    assert!(
        n_kv > 0 && n_head.is_multiple_of(n_kv),
        "{n_head} heads over {n_kv} KV heads"
    );
    let group = n_head / n_kv;
    let mut units = 0;
    let mut len = 0;
    let mut macs = 0;
    for s in seqs {
        let n_new = s.rows(n_head, hd);
        let visible = s.start + n_new;
        assert!(s.keys.len() == n_kv && s.values.len() == n_kv);
        assert!(
            s.keys
                .iter()
                .chain(s.values)
                .all(|h| h.len() >= visible * hd),
            "KV cache shorter than {visible} positions"
        );
        units += n_new * n_head;
        len = len.max(visible);
        // Σ over units of visible positions · hd, for the scores and the value sums.
        macs += 2 * n_head * hd * (n_new * s.start + n_new * (n_new + 1) / 2);
    }
    if units == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let per = if threads > 1 && macs >= PARALLEL_MIN_MACS {
        units.div_ceil(threads * 4).max(1)
    } else {
        units
    };
    let tasks = units.div_ceil(per);
    if scores.len() < tasks * len {
        scores.resize(tasks * len, 0.0);
    }
    let head = |u: usize, sc: &mut [f32], oh: &mut [f32]| {
        let (mut r, h) = (u / n_head, u % n_head);
        // The batch holds a handful of sequences: find this row's by a scan.
        let mut s = &seqs[0];
        for cand in seqs {
            s = cand;
            let n = cand.rows(n_head, hd);
            if r < n {
                break;
            }
            r -= n;
        }
        let g = h / group;
        let kv = KvHead {
            keys: &s.keys[g],
            values: &s.values[g],
        };
        one_head(
            &s.q[(r * n_head + h) * hd..][..hd],
            kv,
            &mut sc[..s.start + r + 1],
            oh,
        );
    };
    let task = |i: usize, o: &mut [f32], sc: &mut [f32]| {
        for (j, oh) in o.chunks_exact_mut(hd).enumerate() {
            head(i * per + j, sc, oh);
        }
    };
    let out = &mut out[..units * hd];
    if tasks > 1 {
        super::team::run_chunks(out, per * hd, scores, len, tasks, task);
    } else {
        task(0, out, &mut scores[..len]);
    }
}

/// One KV head's keys and values: position `p`'s vector is `[p·hd..][..hd]`.
#[derive(Clone, Copy)]
struct KvHead<'a> {
    keys: &'a KvRows,
    values: &'a KvRows,
}

/// `oh = Σ_p softmax(q·k_p/√hd)_p · v_p` over the first `sc.len()` positions.
fn one_head(qh: &[f32], kv: KvHead<'_>, sc: &mut [f32], oh: &mut [f32]) {
    let hd = qh.len();
    let scale = 1.0 / (hd as f32).sqrt();
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && simd::has_avx2_f16c() {
        // SAFETY: AVX2, FMA and F16C are present; `scores`/`weighted_sum` check that the rows
        // cover `sc.len()` positions before reading them.
        unsafe {
            let (k, v) = (kv.keys, kv.values);
            match k {
                KvRows::F32(_) => avx2::scores::<false>(qh, k.base(), k.len(), scale, sc, v.base()),
                KvRows::F16(_) => avx2::scores::<true>(qh, k.base(), k.len(), scale, sc, v.base()),
            }
            softmax(sc);
            match v {
                KvRows::F32(_) => avx2::weighted_sum::<false>(sc, v.base(), v.len(), oh),
                KvRows::F16(_) => avx2::weighted_sum::<true>(sc, v.base(), v.len(), oh),
            }
        }
        return;
    }
    // Portable: the same arithmetic over each position's values as f32 (f16 rows widened into
    // a small buffer, on the stack for head sizes up to 256).
    let mut stack = [0.0f32; 256];
    let mut heap = Vec::new();
    let wide: &mut [f32] = if hd <= stack.len() {
        &mut stack[..hd]
    } else {
        heap.resize(hd, 0.0);
        &mut heap
    };
    for (p, s) in sc.iter_mut().enumerate() {
        *s = simd::dot(qh, position(kv.keys, p, wide)) * scale;
    }
    softmax(sc);
    oh.fill(0.0);
    for (p, &w) in sc.iter().enumerate() {
        simd::axpy(w, position(kv.values, p, wide), oh);
    }
}

/// Position `p`'s `wide.len()` values of `rows` as f32: borrowed from f32 rows, widened into
/// `wide` from f16 ones.
fn position<'a>(rows: &'a KvRows, p: usize, wide: &'a mut [f32]) -> &'a [f32] {
    let hd = wide.len();
    match rows {
        KvRows::F32(v) => &v[p * hd..][..hd],
        KvRows::F16(v) => {
            for (w, h) in wide.iter_mut().zip(&v[p * hd..][..hd]) {
                *w = h.to_f32();
            }
            wide
        }
    }
}

/// Attention for head sizes that are a multiple of 8, written for the shapes that matter
/// (hd = 64): scores four positions at a time with one transposed horizontal reduction for the
/// four, and the value sum kept in registers across positions instead of a load and store of the
/// output per position. Bit for bit the arithmetic of `simd::dot` and `simd::axpy` (the portable
/// path above), so the faster kernel changes no result.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Eight values at element `i` of rows of f32 (`H` false) or f16 (`H` true), as f32.
    #[inline(always)]
    unsafe fn load<const H: bool>(base: *const u8, i: usize) -> __m256 {
        if H {
            _mm256_cvtph_ps(_mm_loadu_si128(base.add(2 * i).cast()))
        } else {
            _mm256_loadu_ps(base.cast::<f32>().add(i))
        }
    }

    /// `sc[p] = scale · q·k_p`, four positions at a time, over `len` stored key values at `k`
    /// (f32, or f16 when `H`). Each score is bit-identical to `simd::dot(q, k_p) · scale` over
    /// the widened key (two 8-lane accumulators over 16-value steps, their sum, the same
    /// pairwise horizontal sum): the four horizontal sums are done together by a 4×4 transpose
    /// instead of one after another.
    ///
    /// `v` is the head's value rows (stored as the keys): each group's values are prefetched
    /// into L2 while its keys are scored, so the value sum after the softmax reads them from
    /// cache. A head's scan is one short stream (a sequence's 500 positions are 125 KiB of f32
    /// keys, 4 KiB pages), which the hardware prefetchers serve poorly; the value rows are the
    /// next thing read. GPT-2 f16, `quill bench --prompt-tokens 700 --gen-tokens 32`, three
    /// alternated rounds on the AVX-512 Xeon: decode 79.2–81.0 → 82.8–86.2 tokens/s, batch 8
    /// 594–629 → 618–658; nanoGPT's sample.py workload (batch 10, f32) about 5% faster.
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `k` holds `len` values of its type; `q.len() % 8 == 0`. `v` is
    /// only prefetched, never read.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores<const H: bool>(
        q: &[f32],
        k: *const u8,
        len: usize,
        scale: f32,
        sc: &mut [f32],
        v: *const u8,
    ) {
        let hd = q.len();
        let n_pos = sc.len();
        assert!(n_pos * hd <= len);
        let qp = q.as_ptr();
        let row = hd * if H { 2 } else { 4 };
        let mut p = 0;
        while p < n_pos {
            let n = (n_pos - p).min(4);
            let at = v.wrapping_add(p * row);
            for l in (0..n * row).step_by(64) {
                _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(l).cast());
            }
            let mut a0 = [_mm256_setzero_ps(); 4];
            let mut a1 = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 16 <= hd {
                let (q0, q1) = (_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(qp.add(i + 8)));
                for (j, (s0, s1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate().take(n) {
                    let at = (p + j) * hd + i;
                    *s0 = _mm256_fmadd_ps(q0, load::<H>(k, at), *s0);
                    *s1 = _mm256_fmadd_ps(q1, load::<H>(k, at + 8), *s1);
                }
                i += 16;
            }
            if i < hd {
                let q0 = _mm256_loadu_ps(qp.add(i));
                for (j, s0) in a0.iter_mut().enumerate().take(n) {
                    *s0 = _mm256_fmadd_ps(q0, load::<H>(k, (p + j) * hd + i), *s0);
                }
            }
            // h_j = low half + high half of (a0_j + a1_j); the score is
            // (h_j[0] + h_j[2]) + (h_j[1] + h_j[3]), for the four j at once.
            let h: [__m128; 4] = std::array::from_fn(|j| {
                let v = _mm256_add_ps(a0[j], a1[j]);
                _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1))
            });
            let (t0, t1) = (_mm_unpacklo_ps(h[0], h[1]), _mm_unpacklo_ps(h[2], h[3]));
            let (t2, t3) = (_mm_unpackhi_ps(h[0], h[1]), _mm_unpackhi_ps(h[2], h[3]));
            let (c0, c1) = (_mm_movelh_ps(t0, t1), _mm_movehl_ps(t1, t0));
            let (c2, c3) = (_mm_movelh_ps(t2, t3), _mm_movehl_ps(t3, t2));
            let s = _mm_add_ps(_mm_add_ps(c0, c2), _mm_add_ps(c1, c3));
            let mut out = [0.0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), _mm_mul_ps(s, _mm_set1_ps(scale)));
            sc[p..p + n].copy_from_slice(&out[..n]);
            p += n;
        }
    }

    /// `oh = Σ_p w[p] · v_p` over `len` stored values at `v` (f32, or f16 when `H`), 64
    /// features at a time in eight registers (then 8 at a time).
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `v` holds `len` values of its type; `oh.len() % 8 == 0`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum<const H: bool>(
        w: &[f32],
        v: *const u8,
        len: usize,
        oh: &mut [f32],
    ) {
        let hd = oh.len();
        assert!(w.len() * hd <= len);
        let mut c = 0;
        while c + 64 <= hd {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (p, &wp) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wp);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(wv, load::<H>(v, p * hd + c + 8 * j), *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(oh.as_mut_ptr().add(c + 8 * j), *a);
            }
            c += 64;
        }
        while c < hd {
            let mut acc = _mm256_setzero_ps();
            for (p, &wp) in w.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(wp), load::<H>(v, p * hd + c), acc);
            }
            _mm256_storeu_ps(oh.as_mut_ptr().add(c), acc);
            c += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{per_head, values};

    /// The same rows as f16.
    fn to_f16(rows: &[KvRows]) -> Vec<KvRows> {
        rows.iter()
            .map(|r| match r {
                KvRows::F32(v) => KvRows::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
                KvRows::F16(v) => KvRows::F16(v.clone()),
            })
            .collect()
    }

    /// Their f32 widening.
    fn widened(rows: &[KvRows]) -> Vec<KvRows> {
        rows.iter()
            .map(|r| match r {
                KvRows::F16(v) => KvRows::F32(v.iter().map(|h| h.to_f32()).collect()),
                KvRows::F32(v) => KvRows::F32(v.clone()),
            })
            .collect()
    }

    /// An f16 cache gives exactly what an f32 cache holding the same (rounded) values gives,
    /// on the portable path (odd head size) and the SIMD one (8- and 64-wide pieces), for
    /// prefill rows and a decode row; and stays close to the unrounded f32 cache.
    #[test]
    fn f16_rows_compute_exactly_what_their_widening_computes() {
        for hd in [19, 16, 72] {
            let (n_head, n_kv, start, n_new) = (6, 3, 37, 5);
            let len = start + n_new;
            let q = values(n_new * n_head * hd, 31);
            let keys = per_head(&values(len * n_kv * hd, 32), n_kv, hd);
            let vals = per_head(&values(len * n_kv * hd, 33), n_kv, hd);
            let (k16, v16) = (to_f16(&keys), to_f16(&vals));
            let (kw, vw) = (widened(&k16), widened(&v16));
            let run = |q: &[f32], keys: &[KvRows], values: &[KvRows], start: usize| {
                let mut out = vec![0.0; q.len()];
                let seq = AttnSeq {
                    q,
                    keys,
                    values,
                    start,
                };
                attention(&[seq], n_head, hd, &mut Vec::new(), &mut out);
                out
            };
            let half = run(&q, &k16, &v16, start);
            assert_eq!(half, run(&q, &kw, &vw, start), "hd {hd}");
            let exact = run(&q, &keys, &vals, start);
            for (a, b) in half.iter().zip(&exact) {
                assert!((a - b).abs() < 2e-3, "hd {hd}: {a} vs {b}");
            }
            let last = &q[(n_new - 1) * n_head * hd..];
            assert_eq!(
                run(last, &k16, &v16, len - 1),
                half[(n_new - 1) * n_head * hd..],
                "hd {hd}: decode row"
            );
        }
    }
}
