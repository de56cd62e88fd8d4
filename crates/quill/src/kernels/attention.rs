//! Causal attention of new query rows over the KV cache, split over the thread pool by
//! (query row, head) pairs.

use rayon::prelude::*;

use super::{simd, softmax};

/// Below this many multiply-adds attention runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// Causal attention of `n_new` query rows against a KV cache that already holds their keys and
/// values. The query row `t` sits at position `start + t` and sees positions `0..=start + t`.
///
/// q: [n_new, n_head, hd]; keys/values: [positions, n_kv_head, hd] (at least `start + n_new`
/// rows); out: [n_new, n_head, hd]. `scores` is scratch, grown as needed (one row of scores per
/// parallel task).
///
/// Each (row, head) pair is computed by the same code whatever the split, so results do not
/// depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    n_head: usize,
    n_kv_head: usize,
    hd: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let n_new = q.len() / (n_head * hd);
    let units = n_new * n_head;
    if units == 0 {
        return;
    }
    let len = start + n_new;
    // Σ over units of visible positions · hd, for the query rows and the value sums.
    let macs = 2 * n_head * hd * (n_new * start + n_new * (n_new + 1) / 2);
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
        let (t, h) = (u / n_head, u % n_head);
        let g = h / (n_head / n_kv_head);
        let kv_stride = n_kv_head * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let qh = &q[u * hd..][..hd];
        let sc = &mut sc[..start + t + 1];
        for (p, s) in sc.iter_mut().enumerate() {
            *s = simd::dot(qh, &keys[p * kv_stride + g * hd..][..hd]) * scale;
        }
        softmax(sc);
        oh.fill(0.0);
        for (p, &w) in sc.iter().enumerate() {
            simd::axpy(w, &values[p * kv_stride + g * hd..][..hd], oh);
        }
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
