//! Causal attention of new query rows over their sequences' KV caches. One call covers every
//! sequence of a batch, split over the thread pool by (sequence, query row, head) units, so a
//! decode step of many sequences is one parallel region per layer instead of one per sequence.

use rayon::prelude::*;

use super::{simd, softmax};

/// Below this many multiply-adds attention runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// One sequence's part of an [`attention`] call.
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq<'a> {
    /// [n_new, n_head, hd]: the new rows' queries; row `t` sits at position `start + t` and
    /// sees positions `0..=start + t`.
    pub q: &'a [f32],
    /// Per KV head, [positions, hd]: at least `start + n_new` positions, the new rows' own keys
    /// included. Each head's positions are contiguous, so one head's scan streams memory.
    pub keys: &'a [Vec<f32>],
    /// Per KV head, [positions, hd], as `keys`.
    pub values: &'a [Vec<f32>],
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
            &kv,
            &mut sc[..s.start + r + 1],
            oh,
        );
    };
    let task = |(i, (o, sc)): (usize, (&mut [f32], &mut [f32]))| {
        for (j, oh) in o.chunks_exact_mut(hd).enumerate() {
            head(i * per + j, sc, oh);
        }
    };
    let out = &mut out[..units * hd];
    if tasks > 1 {
        out.par_chunks_mut(per * hd)
            .zip(scores.par_chunks_mut(len))
            .enumerate()
            .for_each(task);
    } else {
        task((0, (out, &mut scores[..len])));
    }
}

/// One KV head's keys and values: position `p`'s vector is `[p·hd..][..hd]`.
struct KvHead<'a> {
    keys: &'a [f32],
    values: &'a [f32],
}

/// `oh = Σ_p softmax(q·k_p/√hd)_p · v_p` over the first `sc.len()` positions.
fn one_head(qh: &[f32], kv: &KvHead<'_>, sc: &mut [f32], oh: &mut [f32]) {
    let hd = qh.len();
    let scale = 1.0 / (hd as f32).sqrt();
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && simd::has_avx2_f16c() {
        // SAFETY: AVX2 and FMA are present; `scores`/`weighted_sum` check that the slices
        // cover `sc.len()` positions before reading them.
        unsafe {
            avx2::scores(qh, kv, scale, sc);
            softmax(sc);
            avx2::weighted_sum(sc, kv, oh);
        }
        return;
    }
    for (p, s) in sc.iter_mut().enumerate() {
        *s = simd::dot(qh, &kv.keys[p * hd..][..hd]) * scale;
    }
    softmax(sc);
    oh.fill(0.0);
    for (p, &w) in sc.iter().enumerate() {
        simd::axpy(w, &kv.values[p * hd..][..hd], oh);
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

    use super::KvHead;

    /// `sc[p] = scale · q·k_p`, four positions at a time. Each score is bit-identical to
    /// `simd::dot(q, k_p) · scale` (two 8-lane accumulators over 16-value steps, their sum, the
    /// same pairwise horizontal sum): the four horizontal sums are done together by a 4×4
    /// transpose instead of one after another.
    ///
    /// # Safety
    /// AVX2/FMA present; `kv.keys` holds `sc.len()` positions; `q.len() % 8 == 0`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(q: &[f32], kv: &KvHead<'_>, scale: f32, sc: &mut [f32]) {
        let hd = q.len();
        let len = sc.len();
        assert!(len * hd <= kv.keys.len());
        let k = kv.keys.as_ptr();
        let qp = q.as_ptr();
        let mut p = 0;
        while p < len {
            let n = (len - p).min(4);
            let mut a0 = [_mm256_setzero_ps(); 4];
            let mut a1 = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 16 <= hd {
                let (q0, q1) = (_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(qp.add(i + 8)));
                for (j, (s0, s1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate().take(n) {
                    let kp = k.add((p + j) * hd + i);
                    *s0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(kp), *s0);
                    *s1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(kp.add(8)), *s1);
                }
                i += 16;
            }
            if i < hd {
                let q0 = _mm256_loadu_ps(qp.add(i));
                for (j, s0) in a0.iter_mut().enumerate().take(n) {
                    let kp = k.add((p + j) * hd + i);
                    *s0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(kp), *s0);
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

    /// `oh = Σ_p w[p] · v_p`, 64 features at a time in eight registers (then 8 at a time).
    ///
    /// # Safety
    /// AVX2/FMA present; `kv.values` holds `w.len()` positions; `oh.len() % 8 == 0`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sum(w: &[f32], kv: &KvHead<'_>, oh: &mut [f32]) {
        let hd = oh.len();
        let len = w.len();
        assert!(len * hd <= kv.values.len());
        let v = kv.values.as_ptr();
        let mut c = 0;
        while c + 64 <= hd {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (p, &wp) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wp);
                let vp = v.add(p * hd + c);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(vp.add(8 * j)), *a);
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
                let vp = v.add(p * hd + c);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(wp), _mm256_loadu_ps(vp), acc);
            }
            _mm256_storeu_ps(oh.as_mut_ptr().add(c), acc);
            c += 8;
        }
    }
}
