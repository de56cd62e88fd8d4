//! Float weights (f32, f16, bf16) in panels of 16 rows, and the "outer-product" micro-kernels
//! that read them: the layout of a loaded model's float matrices.
//!
//! A panel holds 16 consecutive weight rows column by column: `[cols][16]` values, so one step
//! along the inner dimension reads the 16 rows' weights for that input (one 64-byte line in
//! f32). A tile broadcasts one activation value per input row and multiply-adds it into 16
//! output lanes per row: every load feeds every row of the tile and no horizontal sums are
//! needed, where the dot-product tiles ([`super::tile`]) load each activation vector per tile
//! and finish every output with a horizontal sum. With 6 input rows × 16 outputs in 12
//! registers, the per-step traffic is 2 weight vectors and 6 broadcasts for 12 multiply-adds,
//! which keeps batches and prefill near the FMA peak instead of the cache's bandwidth.
//!
//! **Every output is one fused multiply-add chain** `acc ← fma(x[i], w[i], acc)` for
//! `i = 0..cols`, starting from +0: the order does not depend on the tile shape, the number of
//! rows in the batch, the threads, or the vector width (each lane is its own chain), so a
//! sequence's logits are bit-identical alone or in any batch, and the portable kernel (using
//! `f32::mul_add`) gives the same bits as the AVX2 one.
//!
//! Rows past the last whole panel (`rows % 16`) stay row-major after the panels and go through
//! the dot-product tiles.

use super::tile::WKind;

/// Rows per panel.
pub(crate) const PANEL: usize = 16;

/// One cache line: the unit of the panel buffer, so every panel starts 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line([u8; 64]);

/// A float matrix `[rows, cols]` regrouped in panels (see the module documentation). Owned:
/// building one copies the weights (the source's file pages can then be released).
#[derive(Clone)]
pub struct Panels {
    kind: WKind,
    rows: usize,
    cols: usize,
    store: Store,
}

/// The panels' memory (shared by clones; never written after the build).
#[derive(Clone)]
enum Store {
    /// An anonymous map advised to use transparent huge pages: about 500 page faults instead of
    /// 250,000 for GPT-2's 500 MB while building, and fewer TLB misses while streaming.
    Map(std::sync::Arc<memmap2::MmapMut>),
    /// Where the OS gives no such map: the heap, 64-byte aligned.
    Heap(std::sync::Arc<Vec<Line>>),
}

/// A zeroed, writable buffer of at least `len` bytes for [`Store`] (and for `quill bench`'s
/// bandwidth probe, which reads memory like the panels'), 64-byte aligned.
pub(crate) enum Draft {
    Map(memmap2::MmapMut),
    Heap(Vec<Line>),
}

impl Draft {
    pub(crate) fn new(len: usize) -> Draft {
        #[cfg(target_os = "linux")]
        if len >= 4 << 20 {
            if let Ok(m) = memmap2::MmapOptions::new().len(len).map_anon() {
                // Failure only means small pages.
                let _ = m.advise(memmap2::Advice::HugePage);
                return Draft::Map(m);
            }
        }
        Draft::Heap(vec![Line([0; 64]); len.div_ceil(64)])
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        match self {
            Draft::Map(m) => m,
            // SAFETY: `Line` is 64 plain bytes; the view covers exactly the allocation.
            Draft::Heap(v) => unsafe {
                std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), v.len() * 64)
            },
        }
    }

    fn finish(self) -> Store {
        match self {
            Draft::Map(m) => Store::Map(std::sync::Arc::new(m)),
            Draft::Heap(v) => Store::Heap(std::sync::Arc::new(v)),
        }
    }
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Panels({:?}, [{}, {}], {} bytes)",
            self.kind,
            self.rows,
            self.cols,
            self.bytes().len()
        )
    }
}

impl Panels {
    /// Regroups `src`, `rows × cols` row-major values of `kind` (little-endian bytes), calling
    /// `done(r0, n)` once rows `r0..r0 + n` have been read (so a mapped source can hand its pages
    /// back stretch by stretch). Panels are built in parallel.
    pub(crate) fn build(
        kind: WKind,
        rows: usize,
        cols: usize,
        src: &[u8],
        done: impl Fn(usize, usize) + Sync,
    ) -> Panels {
        Self::regroup(kind, rows, cols, src, false, done)
    }

    /// [`Self::build`] from `src` stored `[cols, rows]` (`[in, out]`, as Hugging Face GPT-2's
    /// Conv1D matrices): one step of a panel is 16 consecutive source values, so this is a
    /// gather of short runs, with no transposed copy in between.
    pub(crate) fn build_transposed(kind: WKind, rows: usize, cols: usize, src: &[u8]) -> Panels {
        Self::regroup(kind, rows, cols, src, true, |_, _| {})
    }

    fn regroup(
        kind: WKind,
        rows: usize,
        cols: usize,
        src: &[u8],
        transposed: bool,
        done: impl Fn(usize, usize) + Sync,
    ) -> Panels {
        use rayon::prelude::*;
        let es = kind.bytes();
        let row_bytes = cols * es;
        assert_eq!(src.len(), rows * row_bytes, "panel source size");
        let mut draft = Draft::new(rows * row_bytes);
        let dst = draft.bytes();
        let full = rows / PANEL * PANEL;
        let panel_bytes = PANEL * row_bytes;
        let (body, tail) = dst.split_at_mut(full * row_bytes);
        // A few panels per job: about 1 MiB, so the source is released as it is read.
        let per_job = (1 << 20) / panel_bytes.max(1) + 1;
        body.par_chunks_mut(per_job * panel_bytes.max(1))
            .enumerate()
            .for_each(|(j, out)| {
                let r0 = j * per_job * PANEL;
                for (p, panel) in out.chunks_exact_mut(panel_bytes).enumerate() {
                    let first = r0 + p * PANEL;
                    if transposed {
                        // Step i of the panel: source row i, values first..first + 16.
                        let run = PANEL * es;
                        for (i, step) in panel.chunks_exact_mut(run).enumerate() {
                            step.copy_from_slice(&src[(i * rows + first) * es..][..run]);
                        }
                        continue;
                    }
                    let rows = &src[first * row_bytes..][..panel_bytes];
                    match es {
                        4 => regroup::<4>(rows, panel, cols),
                        _ => regroup::<2>(rows, panel, cols),
                    }
                }
                done(r0, out.len() / row_bytes);
            });
        let tail = &mut tail[..(rows - full) * row_bytes];
        if transposed {
            for (t, row) in tail.chunks_exact_mut(row_bytes).enumerate() {
                for (i, v) in row.chunks_exact_mut(es).enumerate() {
                    v.copy_from_slice(&src[(i * rows + full + t) * es..][..es]);
                }
            }
        } else {
            tail.copy_from_slice(&src[full * row_bytes..]);
        }
        done(full, rows - full);
        Panels {
            kind,
            rows,
            cols,
            store: draft.finish(),
        }
    }

    pub(crate) fn kind(&self) -> WKind {
        self.kind
    }

    /// Rows held in whole panels (the rest are row-major after them).
    pub(crate) fn full_rows(&self) -> usize {
        self.rows / PANEL * PANEL
    }

    /// The weight bytes: panels, then the row-major rest.
    pub(crate) fn bytes(&self) -> &[u8] {
        let len = self.rows * self.cols * self.kind.bytes();
        match &self.store {
            Store::Map(m) => &m[..len],
            // SAFETY: `Line` is 64 plain bytes and `len` is within the allocation.
            Store::Heap(v) => unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), len) },
        }
    }

    /// Writes row `r` as f32 into `out` [cols] (a strided gather inside a panel).
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        let es = self.kind.bytes();
        let bytes = self.bytes();
        let full = self.full_rows();
        let widen = |b: &[u8]| match self.kind {
            WKind::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            WKind::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            WKind::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        };
        if r >= full {
            let row = &bytes[r * self.cols * es..][..self.cols * es];
            for (o, b) in out.iter_mut().zip(row.chunks_exact(es)) {
                *o = widen(b);
            }
            return;
        }
        let panel = &bytes[(r / PANEL) * PANEL * self.cols * es..][..PANEL * self.cols * es];
        let lane = r % PANEL;
        for (i, o) in out.iter_mut().enumerate().take(self.cols) {
            *o = widen(&panel[(i * PANEL + lane) * es..][..es]);
        }
    }
}

/// One panel: `src` holds 16 rows of `cols` values of `ES` bytes, row-major; `dst` gets them
/// `[cols][16]`.
fn regroup<const ES: usize>(src: &[u8], dst: &mut [u8], cols: usize) {
    for (l, row) in src.chunks_exact(cols * ES).enumerate() {
        for (i, v) in row.chunks_exact(ES).enumerate() {
            let at = (i * PANEL + l) * ES;
            dst[at..at + ES].copy_from_slice(v);
        }
    }
}

/// `out[r][p][l] = Σ_i x[r][i] · w_p[i][l]` for `P` consecutive panels starting at `w`
/// (`panel_bytes` apart), as one fma chain per output (module documentation). `R` ≥ 1, `P` ≥ 1.
/// `fetch` = (`at`, `lines`): the AVX2 tile prefetches `lines` cache lines from `at` on, spread
/// evenly over its steps (the weights the next tiles read, which DRAM would otherwise deliver
/// only when they ask, stalling them; spread so that every pass over a panel keeps DRAM busy).
/// The AVX-512 tile ignores it and prefetches inside its own panels instead ([`avx512::AHEAD`],
/// [`avx512::AHEAD_DECODE`]).
///
/// # Safety
/// Each `x[r]` must be valid for `n` f32 reads, and `w` for `P` panels of `n × 16` weights of
/// `kind` each.
#[inline]
pub(crate) unsafe fn tile<const R: usize, const P: usize>(
    kind: WKind,
    x: &[*const f32; R],
    w: *const u8,
    panel_bytes: usize,
    n: usize,
    fetch: (*const u8, usize),
) -> [[[f32; PANEL]; P]; R] {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        return match kind {
            WKind::F32 => avx512::tile::<0, R, P>(x, w, panel_bytes, n),
            WKind::F16 => avx512::tile::<1, R, P>(x, w, panel_bytes, n),
            WKind::Bf16 => avx512::tile::<2, R, P>(x, w, panel_bytes, n),
        };
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2_f16c() {
        return match kind {
            WKind::F32 => avx2::tile::<0, R, P>(x, w, panel_bytes, n, fetch),
            WKind::F16 => avx2::tile::<1, R, P>(x, w, panel_bytes, n, fetch),
            WKind::Bf16 => avx2::tile::<2, R, P>(x, w, panel_bytes, n, fetch),
        };
    }
    // (Only the x86 kernels prefetch.)
    #[cfg(not(target_arch = "x86_64"))]
    let _ = fetch;
    #[cfg(target_arch = "aarch64")]
    return match kind {
        WKind::F32 => neon::tile::<0, R, P>(x, w, panel_bytes, n),
        WKind::F16 => neon::tile::<1, R, P>(x, w, panel_bytes, n),
        WKind::Bf16 => neon::tile::<2, R, P>(x, w, panel_bytes, n),
    };
    #[cfg(not(target_arch = "aarch64"))]
    portable::<R, P>(kind, x, w, panel_bytes, n)
}

/// The portable kernel: the same chains, with `f32::mul_add` (one rounding, as FMA). (On
/// AArch64 only the tests call it: the NEON kernel serves every machine there.)
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
unsafe fn portable<const R: usize, const P: usize>(
    kind: WKind,
    x: &[*const f32; R],
    w: *const u8,
    panel_bytes: usize,
    n: usize,
) -> [[[f32; PANEL]; P]; R] {
    let es = kind.bytes();
    // (No prefetch: this kernel is for machines without the SIMD ones.)
    let mut acc = [[[0.0f32; PANEL]; P]; R];
    for i in 0..n {
        for p in 0..P {
            let step = w.add(p * panel_bytes + i * PANEL * es);
            let ws: [f32; PANEL] = std::array::from_fn(|l| super::tile::weight(kind, step, l));
            for (row, xr) in acc.iter_mut().zip(x) {
                let xv = *xr.add(i);
                for (a, &wv) in row[p].iter_mut().zip(&ws) {
                    *a = xv.mul_add(wv, *a);
                }
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::PANEL;
    use crate::kernels::tile::avx2::load8;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile<const K: u8, const R: usize, const P: usize>(
        x: &[*const f32; R],
        w: *const u8,
        panel_bytes: usize,
        n: usize,
        (mut pf, lines): (*const u8, usize),
    ) -> [[[f32; PANEL]; P]; R] {
        let es = if K == 0 { 4 } else { 2 };
        let step = PANEL * es;
        // Bresenham: `lines` prefetches spread over `n` steps.
        let mut due = 0;
        // acc[r][2p + h]: row r, panel p, lanes 8h..8h + 8.
        let mut acc = [[[_mm256_setzero_ps(); 2]; P]; R];
        let mut at = w;
        for i in 0..n {
            let mut wv = [[_mm256_setzero_ps(); 2]; P];
            for (p, v) in wv.iter_mut().enumerate() {
                let s = at.add(p * panel_bytes);
                *v = [load8::<K>(s, 0), load8::<K>(s, 8)];
            }
            due += lines;
            while due >= n {
                _mm_prefetch::<_MM_HINT_T0>(pf.cast());
                pf = pf.wrapping_add(64);
                due -= n;
            }
            for r in 0..R {
                let xb = _mm256_broadcast_ss(&*x[r].add(i));
                for p in 0..P {
                    for h in 0..2 {
                        acc[r][p][h] = _mm256_fmadd_ps(xb, wv[p][h], acc[r][p][h]);
                    }
                }
            }
            at = at.add(step);
        }
        let mut out = [[[0.0f32; PANEL]; P]; R];
        for r in 0..R {
            for p in 0..P {
                _mm256_storeu_ps(out[r][p].as_mut_ptr(), acc[r][p][0]);
                _mm256_storeu_ps(out[r][p].as_mut_ptr().add(8), acc[r][p][1]);
            }
        }
        out
    }
}

/// [`avx2`]'s tile with one 16-lane vector per panel step: a panel's 16 outputs are one
/// register, so a tile holds twice the outputs of the AVX2 one in the same registers (and the
/// broadcast folds into the multiply-add as an embedded broadcast operand). Lane `l` is still
/// its own fma chain: the same bits as the AVX2 and portable kernels.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::PANEL;
    use crate::kernels::tile::avx512::load16;

    /// How far ahead of its reads (bytes) a batch tile prefetches each of its panels. With
    /// several input rows a step is mostly multiply-adds, and the out-of-order window then
    /// covers too few weight loads to keep DRAM busy: on the AVX-512 Xeon `perf annotate` put
    /// 75% of GPT-2 f32 batch-8 tile samples on the weight loads, and the hardware prefetchers
    /// did not close the gap. One prefetch per panel and cache line, 2 KiB ahead: batch 8
    /// f32 330–336 → 397–431 tokens/s, f16 574–576 → 629–656 (alternated `quill bench`
    /// runs); 1, 2 and 4 KiB measured alike, 8 KiB lower. The AVX2 tile's prefetch of the
    /// next tile's panels, spread over the steps, measured level here (331–336 → 336–342).
    pub(super) const AHEAD: usize = 2048;

    /// The same for decode (one row), into L2. A decode step is only loads, but the hardware
    /// prefetchers alone left f16 (half the bytes per step of f32, so twice the steps per
    /// line) at about 25 GB/s: GPT-2 f16 decode 103–109 → 124–134 tokens/s with this (4 and
    /// 8 KiB ahead alike, 16 KiB less steady; the L1 hint a little lower), f32 60–63 → 62–65.
    pub(super) const AHEAD_DECODE: usize = 4096;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn tile<const K: u8, const R: usize, const P: usize>(
        x: &[*const f32; R],
        w: *const u8,
        panel_bytes: usize,
        n: usize,
    ) -> [[[f32; PANEL]; P]; R] {
        let es = if K == 0 { 4 } else { 2 };
        let step = PANEL * es;
        // acc[r][p]: row r, panel p.
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        let mut at = w;
        for i in 0..n {
            let mut wv = [_mm512_setzero_ps(); P];
            for (p, v) in wv.iter_mut().enumerate() {
                *v = load16::<K>(at.add(p * panel_bytes), 0);
            }
            // A step is 64 bytes of f32 or 32 of f16/bf16: one prefetch per 64 bytes.
            if K == 0 || i % 2 == 0 {
                for p in 0..P {
                    // Past the panel this reads the next one, or past the matrix nothing:
                    // `wrapping_add`, as a prefetch of any address is harmless.
                    let at = at.add(p * panel_bytes);
                    if R > 1 {
                        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(AHEAD).cast());
                    } else {
                        _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(AHEAD_DECODE).cast());
                    }
                }
            }
            for r in 0..R {
                let xb = _mm512_set1_ps(*x[r].add(i));
                for p in 0..P {
                    acc[r][p] = _mm512_fmadd_ps(xb, wv[p], acc[r][p]);
                }
            }
            at = at.add(step);
        }
        let mut out = [[[0.0f32; PANEL]; P]; R];
        for r in 0..R {
            for p in 0..P {
                _mm512_storeu_ps(out[r][p].as_mut_ptr(), acc[r][p]);
            }
        }
        out
    }
}

/// The AArch64 kernel: [`avx2`]'s tile on 4-lane NEON vectors (4 per panel), f16 widened by
/// `fcvtl` (base AArch64; written as assembly, as Rust's `float16x4_t` is not stable) and bf16
/// by a 16-bit shift. `vfmaq_f32` is one fused multiply-add, so each output is the portable
/// kernel's chain, bit for bit. Tested under QEMU; no Arm machine was at hand to time it.
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;
    use std::arch::asm;

    use super::PANEL;

    /// Four weights at `p` of kind `K` (0 f32, 1 f16, 2 bf16) as f32.
    #[inline(always)]
    unsafe fn load4<const K: u8>(p: *const u8) -> float32x4_t {
        match K {
            0 => vld1q_f32(p.cast()),
            1 => {
                let h = vld1_u16(p.cast());
                let r: float32x4_t;
                // SAFETY: base AArch64 SIMD; registers only.
                asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) r, in(vreg) h, options(pure, nomem, nostack));
                r
            }
            _ => vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))),
        }
    }

    /// # Safety
    /// As [`super::tile`].
    #[inline]
    pub(super) unsafe fn tile<const K: u8, const R: usize, const P: usize>(
        x: &[*const f32; R],
        w: *const u8,
        panel_bytes: usize,
        n: usize,
    ) -> [[[f32; PANEL]; P]; R] {
        let es = if K == 0 { 4 } else { 2 };
        let step = PANEL * es;
        // acc[r][p][q]: row r, panel p, lanes 4q..4q + 4.
        let mut acc = [[[vdupq_n_f32(0.0); 4]; P]; R];
        let mut at = w;
        for i in 0..n {
            let mut wv = [[vdupq_n_f32(0.0); 4]; P];
            for (p, v) in wv.iter_mut().enumerate() {
                let s = at.add(p * panel_bytes);
                *v = std::array::from_fn(|q| load4::<K>(s.add(4 * q * es)));
            }
            for (ar, xr) in acc.iter_mut().zip(x) {
                let xv = *xr.add(i);
                for (ap, wp) in ar.iter_mut().zip(&wv) {
                    for (a, &wq) in ap.iter_mut().zip(wp) {
                        *a = vfmaq_n_f32(*a, wq, xv);
                    }
                }
            }
            at = at.add(step);
        }
        let mut out = [[[0.0f32; PANEL]; P]; R];
        for (or, ar) in out.iter_mut().zip(&acc) {
            for (op, ap) in or.iter_mut().zip(ar) {
                for (q, &a) in ap.iter().enumerate() {
                    vst1q_f32(op.as_mut_ptr().add(4 * q), a);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::values;

    fn encode(kind: WKind, v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|&f| match kind {
                WKind::F32 => f.to_le_bytes().to_vec(),
                WKind::F16 => half::f16::from_f32(f).to_le_bytes().to_vec(),
                WKind::Bf16 => half::bf16::from_f32(f).to_le_bytes().to_vec(),
            })
            .collect()
    }

    /// The panel layout gives back every row (in panels and in the row-major rest), and reports
    /// every row read exactly once.
    #[test]
    fn panels_hold_every_row() {
        for (rows, cols) in [(1usize, 5usize), (16, 3), (37, 7), (50, 33)] {
            for kind in [WKind::F32, WKind::F16, WKind::Bf16] {
                let v = values(rows * cols, 3);
                let src = encode(kind, &v);
                let seen = std::sync::Mutex::new(vec![0u8; rows]);
                let p = Panels::build(kind, rows, cols, &src, |r0, n| {
                    let mut s = seen.lock().expect("not poisoned");
                    for r in r0..r0 + n {
                        s[r] += 1;
                    }
                });
                assert!(seen
                    .into_inner()
                    .expect("not poisoned")
                    .iter()
                    .all(|&c| c == 1));
                // The same matrix stored [cols, rows] gives the same panels.
                let t: Vec<f32> = (0..rows * cols)
                    .map(|j| v[(j % rows) * cols + j / rows])
                    .collect();
                let tp = Panels::build_transposed(kind, rows, cols, &encode(kind, &t));
                assert_eq!(tp.bytes(), p.bytes(), "{kind:?} {rows}x{cols} transposed");
                let mut row = vec![0.0; cols];
                for r in 0..rows {
                    p.row_into(r, &mut row);
                    for (i, &got) in row.iter().enumerate() {
                        let want = match kind {
                            WKind::F32 => v[r * cols + i],
                            WKind::F16 => half::f16::from_f32(v[r * cols + i]).to_f32(),
                            WKind::Bf16 => half::bf16::from_f32(v[r * cols + i]).to_f32(),
                        };
                        assert_eq!(got.to_bits(), want.to_bits(), "{kind:?} {rows}x{cols}");
                    }
                }
            }
        }
    }

    /// Every tile shape, and the portable kernel, give each output the bits of its fma chain
    /// over the widened weights, on lengths that are no multiple of the vector width.
    #[test]
    fn tiles_compute_one_fma_chain_per_output() {
        for n in [1usize, 7, 9, 33, 100] {
            for kind in [WKind::F32, WKind::F16, WKind::Bf16] {
                let rows = 3 * PANEL;
                let x = values(6 * n, 1);
                let src = encode(kind, &values(rows * n, 2));
                let p = Panels::build(kind, rows, n, &src, |_, _| {});
                let pb = PANEL * n * kind.bytes();
                let chain = |r: usize, o: usize| {
                    let mut w = vec![0.0; n];
                    p.row_into(o, &mut w);
                    (0..n).fold(0.0f32, |a, i| x[r * n + i].mul_add(w[i], a))
                };
                let xs: [*const f32; 6] = std::array::from_fn(|r| x[r * n..].as_ptr());
                let base = p.bytes().as_ptr();
                // SAFETY: `x` rows cover `n` values; the buffer holds 3 whole panels.
                let (six, one, multi, port) = unsafe {
                    (
                        tile::<6, 1>(kind, &xs, base.add(pb), pb, n, (base, 3)),
                        tile::<1, 3>(kind, &[xs[4]], base, pb, n, (base, 0)),
                        tile::<2, 2>(kind, &[xs[5], xs[0]], base.add(pb), pb, n, (base, 2 * n)),
                        portable::<2, 3>(kind, &[xs[1], xs[4]], base, pb, n),
                    )
                };
                for l in 0..PANEL {
                    for (r, got) in six.iter().enumerate() {
                        assert_eq!(got[0][l].to_bits(), chain(r, PANEL + l).to_bits());
                    }
                    for q in 0..3 {
                        let o = q * PANEL + l;
                        assert_eq!(one[0][q][l].to_bits(), chain(4, o).to_bits());
                        assert_eq!(port[0][q][l].to_bits(), chain(1, o).to_bits());
                        assert_eq!(port[1][q][l].to_bits(), chain(4, o).to_bits());
                    }
                    for (q, (m0, m1)) in multi[0].iter().zip(&multi[1]).enumerate() {
                        let o = (q + 1) * PANEL + l;
                        assert_eq!(m0[l].to_bits(), chain(5, o).to_bits());
                        assert_eq!(m1[l].to_bits(), chain(0, o).to_bits());
                    }
                }
                // Each x86 kernel directly (the dispatch above picks one), at the widest shapes
                // the driver uses: 12 rows × 2 panels (AVX-512), 6 rows × 1 panel (AVX2).
                #[cfg(target_arch = "x86_64")]
                {
                    let xs8: [*const f32; 8] = std::array::from_fn(|r| x[(r % 6) * n..].as_ptr());
                    let xs12: [*const f32; 12] = std::array::from_fn(|r| x[(r % 6) * n..].as_ptr());
                    let check = |got: &[[[f32; PANEL]; 2]], first: usize| {
                        for (r, row) in got.iter().enumerate() {
                            for (q, out) in row.iter().enumerate() {
                                for (l, v) in out.iter().enumerate() {
                                    let want = chain(r % 6, (first + q) * PANEL + l);
                                    assert_eq!(v.to_bits(), want.to_bits(), "{kind:?} n={n}");
                                }
                            }
                        }
                    };
                    let k = match kind {
                        WKind::F32 => 0,
                        WKind::F16 => 1,
                        WKind::Bf16 => 2,
                    };
                    // SAFETY: as above; panels 1 and 2 are whole.
                    unsafe {
                        if crate::kernels::simd::has_avx512() {
                            let w = base.add(pb);
                            check(
                                &match k {
                                    0 => avx512::tile::<0, 12, 2>(&xs12, w, pb, n),
                                    1 => avx512::tile::<1, 12, 2>(&xs12, w, pb, n),
                                    _ => avx512::tile::<2, 12, 2>(&xs12, w, pb, n),
                                },
                                1,
                            );
                        }
                        if crate::kernels::simd::has_avx2_f16c() {
                            check(
                                &match k {
                                    0 => avx2::tile::<0, 8, 2>(&xs8, base, pb, n, (base, 5)),
                                    1 => avx2::tile::<1, 8, 2>(&xs8, base, pb, n, (base, 5)),
                                    _ => avx2::tile::<2, 8, 2>(&xs8, base, pb, n, (base, 5)),
                                },
                                0,
                            );
                        }
                    }
                }
                // And the chains are the products' sums (against f64).
                let mut w = vec![0.0; n];
                p.row_into(PANEL + 3, &mut w);
                let exact: f64 = (0..n).map(|i| x[2 * n + i] as f64 * w[i] as f64).sum();
                let got = six[2][0][3] as f64;
                assert!(
                    (got - exact).abs() < 1e-4 * (1.0 + exact.abs()),
                    "{got} {exact}"
                );
            }
        }
    }
}
