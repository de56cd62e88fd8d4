//! The matrix-product driver: `out = x · Wᵀ (+ bias)` for every weight storage, split across the
//! thread pool by output features, computed by register-tiled micro-kernels.
//!
//! - f32, f16 and bf16 weights go through the float tiles ([`super::tile`]): 16-bit weights are
//!   widened in registers, so they stream at half the bytes of f32 and compute exactly what
//!   their f32 widening computes.
//! - Block-quantized weights go through the integer tiles ([`super::quant::int`]): the
//!   activation rows are quantized to 8 bits once per call, then every output is a sum of
//!   integer block dot products.
//!
//! Work split: the output features (weight rows, the expensive read) are cut into contiguous
//! chunks, a few per thread, so each thread streams disjoint weight rows once for every input
//! row. Inside a chunk, `C` weight rows at a time are kept in registers/L1 while blocks of input
//! rows pass `R` at a time. Every output is computed by the same arithmetic whatever `R`, `C`,
//! the chunking or the thread count, so a sequence's results do not depend on the batch it is in.
//! Nothing is allocated per call once the per-thread activation buffers have grown.

use std::cell::RefCell;

use super::activation::{self, Act};
use super::panel::{self, PANEL};
use super::quant::act::{QActs, QRow};
use super::quant::{int, packed, QK, QK_K};
use super::tile::{self, WKind};
use super::weights::{Matrix, WeightData};
use crate::tensor::DType;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;
/// Input rows per cache block: the block's activations stay in L2 while a chunk of weight rows
/// passes over them.
const ROW_BLOCK: usize = 16;
/// Chunks of output features per thread (load balance against scheduling overhead).
const CHUNKS_PER_THREAD: usize = 4;

/// `out[t, o] = Σ_i x[t, i] · w[o, i] (+ bias[o])` for `t` in `0..rows`.
/// x: [rows, w.cols], out: [rows, w.rows].
pub fn matmul(x: &[f32], w: &Matrix, bias: Option<&[f32]>, out: &mut [f32]) {
    matmul_act(x, w, bias, out, Act::None);
}

/// [`matmul`] followed by `act` on every output, applied by each task to the features it has
/// just written (fused: no second pass over `out`, no extra hand-off to the pool).
pub fn matmul_act(x: &[f32], w: &Matrix, bias: Option<&[f32]>, out: &mut [f32], act: Act) {
    product(x, w, bias, out, act, false);
}

/// `out[t, o] += Σ_i x[t, i] · w[o, i] (+ bias[o])`: [`matmul`] added into `out` as each output
/// is stored (the residual connection fused into the projection: no second buffer, no second
/// pass). Every output is `out + (product + bias)`, the same arithmetic as [`matmul`] followed by
/// [`super::add_in_place`]. x: [rows, w.cols], out: [rows, w.rows].
pub fn matmul_add(x: &[f32], w: &Matrix, bias: Option<&[f32]>, out: &mut [f32]) {
    product(x, w, bias, out, Act::None, true);
}

fn product(
    x: &[f32],
    w: &Matrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
    act: Act,
    accumulate: bool,
) {
    let (n_out, n_in) = (w.rows, w.cols);
    if n_out == 0 || n_in == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let rows = x.len() / n_in;
    debug_assert_eq!(x.len(), rows * n_in);
    debug_assert_eq!(out.len(), rows * n_out);
    let segs = Segments::of(w);
    let (need32, need_k) = segs.activation_blocks();
    let epi = Epilogue {
        bias,
        act,
        accumulate,
    };
    ACTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut acts) => {
            let (a32, ak) = &mut *acts;
            run(x, rows, n_in, &segs, need32, need_k, a32, ak, epi, out);
        }
        // Re-entered on this thread (a nested job stole work while this one waits): use
        // private buffers rather than the busy ones.
        Err(_) => {
            let (mut a32, mut ak) = (QActs::default(), QActs::default());
            run(
                x, rows, n_in, &segs, need32, need_k, &mut a32, &mut ak, epi, out,
            );
        }
    });
}

thread_local! {
    /// Per-thread quantized-activation buffers (32-value and 256-value blocks).
    static ACTS: RefCell<(QActs, QActs)> = RefCell::new(Default::default());
}

#[allow(clippy::too_many_arguments)]
fn run(
    x: &[f32],
    rows: usize,
    n_in: usize,
    segs: &Segments<'_>,
    need32: bool,
    need_k: bool,
    a32: &mut QActs,
    ak: &mut QActs,
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    if need32 {
        a32.quantize(x, n_in, QK);
    }
    if need_k {
        ak.quantize(x, n_in, QK_K);
    }
    let n_out = segs.n_out;
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && rows * n_out * n_in >= PARALLEL_MIN_MACS;
    let chunk = if parallel {
        (n_out / (threads * CHUNKS_PER_THREAD))
            .max(16)
            .next_multiple_of(PANEL)
    } else {
        n_out
    };
    let n_tasks: usize = (0..segs.len)
        .map(|s| segs.get(s).rows.div_ceil(chunk))
        .sum();
    let dst = Out {
        ptr: out.as_mut_ptr(),
        n_out,
    };
    let ctx = Ctx {
        x,
        rows,
        n_in,
        a32,
        ak,
        epi,
        dst,
    };
    let task = |t: usize| {
        let (seg, a, b) = segs.task(t, chunk);
        ctx.compute(&seg, a, b);
    };
    if parallel && n_tasks > 1 {
        super::team::run(n_tasks, task);
    } else {
        (0..n_tasks).for_each(task);
    }
}

/// A row range of the weight matrix with one storage type.
#[derive(Clone, Copy)]
struct Seg<'a> {
    kind: Kind,
    /// `rows · row_bytes` bytes.
    data: &'a [u8],
    row_bytes: usize,
    rows: usize,
    /// Index of the segment's first row among the matrix's output features.
    first: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float(WKind),
    Quant(DType),
    /// Interleaved groups of 8 rows ([`packed`]); the segment's rows are a multiple of 8.
    Packed(DType),
    /// Float panels of 16 rows ([`panel`]); the segment's rows are a multiple of 16.
    Panel(WKind),
}

/// The segments of a matrix: one for f32/16-bit storage, one per part for quantized storage.
struct Segments<'a> {
    w: &'a Matrix,
    len: usize,
    n_out: usize,
}

impl<'a> Segments<'a> {
    fn of(w: &'a Matrix) -> Self {
        let len = match &w.data {
            WeightData::Quant(q) => q.parts.len(),
            WeightData::Panel(p) if p.full_rows() < w.rows => 2,
            _ => 1,
        };
        Segments {
            w,
            len,
            n_out: w.rows,
        }
    }

    fn get(&self, i: usize) -> Seg<'a> {
        let (rows, cols) = (self.w.rows, self.w.cols);
        match &self.w.data {
            WeightData::Owned(_) | WeightData::Mapped { .. } => {
                let f = self.w.as_slice();
                // SAFETY: reinterpreting initialised f32 values as their bytes.
                let data =
                    unsafe { std::slice::from_raw_parts(f.as_ptr().cast::<u8>(), f.len() * 4) };
                Seg {
                    kind: Kind::Float(WKind::F32),
                    data,
                    row_bytes: cols * 4,
                    rows,
                    first: 0,
                }
            }
            WeightData::Half {
                bytes,
                offset,
                bf16,
                ..
            } => Seg {
                kind: Kind::Float(if *bf16 { WKind::Bf16 } else { WKind::F16 }),
                data: &bytes.as_slice()[*offset..*offset + rows * cols * 2],
                row_bytes: cols * 2,
                rows,
                first: 0,
            },
            WeightData::Panel(p) => {
                let full = p.full_rows();
                let rb = cols * p.kind().bytes();
                let (first, rows, kind) = match i {
                    0 => (0, full, Kind::Panel(p.kind())),
                    _ => (full, rows - full, Kind::Float(p.kind())),
                };
                Seg {
                    kind,
                    data: &p.bytes()[first * rb..(first + rows) * rb],
                    row_bytes: rb,
                    rows,
                    first,
                }
            }
            WeightData::Quant(q) => {
                let first = q.parts[..i].iter().map(|p| p.rows).sum();
                let p = &q.parts[i];
                Seg {
                    kind: if p.is_interleaved() {
                        Kind::Packed(p.dtype)
                    } else {
                        Kind::Quant(p.dtype)
                    },
                    data: p.data(cols),
                    row_bytes: p.row_bytes(cols),
                    rows: p.rows,
                    first,
                }
            }
        }
    }

    /// Which activation quantizations the quantized segments need: (32-value, 256-value).
    fn activation_blocks(&self) -> (bool, bool) {
        let (mut b32, mut bk) = (false, false);
        for i in 0..self.len {
            if let Kind::Quant(d) | Kind::Packed(d) = self.get(i).kind {
                if int::act_block(d) == QK_K {
                    bk = true;
                } else {
                    b32 = true;
                }
            }
        }
        (b32, bk)
    }

    /// Task `t` of chunks of `chunk` rows, counted segment by segment: (segment, rows a..b).
    fn task(&self, mut t: usize, chunk: usize) -> (Seg<'a>, usize, usize) {
        let mut last = self.get(0);
        for i in 0..self.len {
            let s = self.get(i);
            let n = s.rows.div_ceil(chunk);
            if t < n {
                return (s, t * chunk, ((t + 1) * chunk).min(s.rows));
            }
            t -= n;
            last = s;
        }
        (last, last.rows, last.rows)
    }
}

/// Where results go: `out` [rows, n_out]. Tasks write disjoint columns.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    n_out: usize,
}
// SAFETY: tasks write disjoint output features, and `matmul` holds `&mut out` until every task
// has finished.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// What happens to each output as it is stored: `+ bias`, then the activation, or added into
/// what `out` holds.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    act: Act,
    /// Add into `out` instead of overwriting it ([`matmul_add`]).
    accumulate: bool,
}

struct Ctx<'a> {
    x: &'a [f32],
    rows: usize,
    n_in: usize,
    a32: &'a QActs,
    ak: &'a QActs,
    epi: Epilogue<'a>,
    dst: Out,
}

/// Calls `$f::<R, C>(args)` for run-time `R` in 1..=4 and `C` in the listed values.
macro_rules! by_shape {
    ($r:expr, $c:expr, $f:ident $args:tt, [$($C:literal),*]) => {
        match $r {
            1 => by_shape!(@c 1, $c, $f $args, [$($C),*]),
            2 => by_shape!(@c 2, $c, $f $args, [$($C),*]),
            3 => by_shape!(@c 3, $c, $f $args, [$($C),*]),
            _ => by_shape!(@c 4, $c, $f $args, [$($C),*]),
        }
    };
    (@c $R:literal, $c:expr, $f:ident $args:tt, [$($C:literal),*]) => {
        match $c {
            $($C => $f::<$R, $C> $args,)*
            _ => {}
        }
    };
}

/// `panel_tile::<rr, P>(t)` for `rr` among the listed row counts, 12 rows otherwise (the most
/// a pass takes).
macro_rules! panel_rows {
    ($rr:expr, $P:literal, $t:expr, [$($R:literal),*]) => {
        match $rr {
            $($R => panel_tile::<$R, $P>($t),)*
            _ => panel_tile::<12, $P>($t),
        }
    };
}

impl Ctx<'_> {
    /// Outputs `a..b` of segment `seg`, for every input row.
    fn compute(&self, seg: &Seg<'_>, a: usize, b: usize) {
        // Weight rows per tile (float decode is `float_span`, one weight row per tile).
        let max_c = match seg.kind {
            Kind::Float(_) if super::simd::wide_float_tiles() => 4,
            Kind::Float(_) => 3,
            // Measured on Zen 3 (GPT-2 shapes, weights in DRAM): at decode Q8_0 and Q6_K rows
            // stream fastest one at a time (two at once fall to a third of the bandwidth), the
            // 4-bit formats two at a time. In batches the K-quants share each activation load
            // between two weight rows (divan, 64 rows: Q4_K 4.0 → 2.3 ms, Q5_K 4.1 → 2.6 ms;
            // Q6_K gained nothing).
            Kind::Quant(DType::Q8_0 | DType::Q6K) => 1,
            Kind::Quant(_) if self.rows == 1 => 2,
            Kind::Quant(DType::Q4K | DType::Q5K) => 2,
            Kind::Quant(_) => 1,
            Kind::Packed(d) => return self.packed(d, seg, a, b),
            Kind::Panel(k) => return self.panel(k, seg, a, b),
        };
        // Row-major blocks: up to four input rows at a time pass over the whole chunk (from L2
        // after the first pass), with one dispatch per pass instead of one per tile: a tile of
        // one weight row is too little work to carry its own set-up (Q6_K on the GPT-2
        // up-projection, divan: 8 rows 550 → 311 µs, 64 rows 4.0 → 2.1 ms).
        let k = match (seg.kind, self.rows) {
            (Kind::Quant(d), _) => {
                let mut r0 = 0;
                while r0 < self.rows {
                    let rr = 4.min(self.rows - r0);
                    by_shape!(rr, max_c, int_span(self, d, seg, r0, a, b), [1, 2]);
                    r0 += rr;
                }
                self.activate(seg, 0, self.rows, a, b);
                return;
            }
            (Kind::Float(k), 1) => {
                float_span(self, k, seg, a, b);
                self.activate(seg, 0, 1, a, b);
                return;
            }
            (Kind::Float(k), _) => k,
            (Kind::Packed(_) | Kind::Panel(_), _) => return,
        };
        // Float batches: input rows per tile; 6 × 4 tiles fit AVX-512's 32 registers (24
        // accumulators).
        let max_r = if max_c == 4 { 6 } else { 4 };
        let mut r0 = 0;
        while r0 < self.rows {
            let r1 = (r0 + ROW_BLOCK).min(self.rows);
            let mut o = a;
            while o < b {
                let c = max_c.min(b - o);
                let mut r = r0;
                while r < r1 {
                    let rr = max_r.min(r1 - r);
                    match rr {
                        6 => by_shape!(@c 6, c, float_tile(self, k, seg, r, o), [1, 2, 3, 4]),
                        5 => by_shape!(@c 5, c, float_tile(self, k, seg, r, o), [1, 2, 3, 4]),
                        _ => by_shape!(rr, c, float_tile(self, k, seg, r, o), [1, 2, 3, 4]),
                    }
                    r += rr;
                }
                o += c;
            }
            self.activate(seg, r0, r1, a, b);
            r0 = r1;
        }
    }

    /// Outputs `a..b` (whole groups of 8) of an interleaved segment, for every input row: per
    /// block of input rows, one pass over the chunk's groups.
    fn packed(&self, dtype: DType, seg: &Seg<'_>, a: usize, b: usize) {
        let acts = self.acts(dtype);
        let rb = seg.row_bytes;
        let w = &seg.data[a * rb..b * rb];
        let mut r0 = 0;
        while r0 < self.rows {
            let r1 = (r0 + ROW_BLOCK).min(self.rows);
            let xs: [QRow<'_>; ROW_BLOCK] = std::array::from_fn(|i| acts.row((r0 + i).min(r1 - 1)));
            packed::span(dtype, &xs[..r1 - r0], w, self.n_in, |r, o, v| {
                self.store::<1, { packed::LANES }>(seg, r0 + r, a + o, [v])
            });
            self.activate(seg, r0, r1, a, b);
            r0 = r1;
        }
    }

    /// Outputs `a..b` (whole panels) of a panel segment, for every input row. Decode takes four
    /// panels per tile (eight independent fma chains to hide their latency); batches take each
    /// panel once per block of input rows, in passes of up to 12 rows (AVX-512) or 6 (AVX2), the
    /// panel staying in cache between passes.
    fn panel(&self, kind: WKind, seg: &Seg<'_>, a: usize, b: usize) {
        let n = self.n_in;
        let pb = PANEL * seg.row_bytes;
        let w = &seg.data[a * seg.row_bytes..b * seg.row_bytes];
        let panels = (b - a) / PANEL;
        debug_assert_eq!(w.len(), panels * pb);
        if self.rows == 1 {
            // Decode streams four panels at once, and the hardware prefetcher follows those
            // streams: software prefetch on top measured slower (GPT-2 head, f32: 3.9 → 5.5 ms).
            let none = (w.as_ptr(), 0);
            let x = [self.x[..n].as_ptr()];
            let mut p = 0;
            while p + 4 <= panels {
                // SAFETY: `x` covers `n` values and `w` holds panels `p..p + 4` (sliced above).
                let v = unsafe { panel::tile::<1, 4>(kind, &x, w[p * pb..].as_ptr(), pb, n, none) };
                for (q, vals) in v[0].iter().enumerate() {
                    self.store::<1, PANEL>(seg, 0, a + (p + q) * PANEL, [*vals]);
                }
                p += 4;
            }
            for p in p..panels {
                // SAFETY: as above, for panel `p`.
                let v = unsafe { panel::tile::<1, 1>(kind, &x, w[p * pb..].as_ptr(), pb, n, none) };
                self.store::<1, PANEL>(seg, 0, a + p * PANEL, [v[0][0]]);
            }
            self.activate(seg, 0, 1, a, b);
            return;
        }
        // With 16-lane vectors (AVX-512) a panel is one register, so a tile takes two panels
        // and up to 12 rows (24 accumulators of the 32 registers; the broadcasts are memory
        // operands); with 8-lane vectors one panel is two registers, and 6 rows make 12
        // accumulators of 16. Twelve rows, not eight: a batch of 10 (nanoGPT's sample.py
        // workload) reads each weight once per step instead of twice (GPT-2 f32, batch 10:
        // 418–420 → 502–507 tokens/s); prefill measured level.
        let (pair, most) = if super::simd::wide_float_tiles() {
            (2, 12)
        } else {
            (1, 6)
        };
        let mut r0 = 0;
        while r0 < self.rows {
            let r1 = (r0 + ROW_BLOCK).min(self.rows);
            let passes = (r1 - r0).div_ceil(most);
            let mut p = 0;
            while p < panels {
                let two = pair == 2 && p + 2 <= panels;
                let np = if two { 2 } else { 1 };
                let wp = w[p * pb..][..np * pb].as_ptr();
                // Cache lines of the tile's panels, and where the panels after them start
                // (inside this chunk, else the next chunk's, which another task may stream, and
                // past the matrix nothing; `wrapping_add`, as a prefetch of any address is
                // harmless).
                let lines = (np * pb).div_ceil(64);
                let next = w.as_ptr().wrapping_add((p + np) * pb);
                let o = a + p * PANEL;
                let mut r = r0;
                for q in 0..passes {
                    let rr = (r1 - r).div_ceil(passes - q);
                    // Every pass fetches its share of the next panels while it computes (the
                    // AVX2 tile; the AVX-512 one prefetches on its own: see `panel::tile`).
                    let (l0, l1) = (q * lines / passes, (q + 1) * lines / passes);
                    let ahead = (next.wrapping_add(l0 * 64), l1 - l0);
                    let t = (self, kind, seg, r, o, wp, ahead);
                    if two {
                        panel_rows!(rr, 2, t, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
                    } else {
                        panel_rows!(rr, 1, t, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
                    }
                    r += rr;
                }
                p += np;
            }
            self.activate(seg, r0, r1, a, b);
            r0 = r1;
        }
    }

    /// The quantized activations the integer kernels for `dtype` read.
    fn acts(&self, dtype: DType) -> &QActs {
        if int::act_block(dtype) == QK_K {
            self.ak
        } else {
            self.a32
        }
    }

    /// Applies the fused activation to features `a..b` of `seg` in rows `r0..r1`, which this
    /// task has just written.
    fn activate(&self, seg: &Seg<'_>, r0: usize, r1: usize, a: usize, b: usize) {
        if self.epi.act == Act::None {
            return;
        }
        for r in r0..r1 {
            let start = r * self.dst.n_out + seg.first + a;
            // SAFETY: features `seg.first + a..seg.first + b` of row `r` lie inside `out`,
            // belong to this task alone, and were all written by it.
            let vals = unsafe { std::slice::from_raw_parts_mut(self.dst.ptr.add(start), b - a) };
            activation::apply(self.epi.act, vals);
        }
    }

    /// Stores `vals[i][j]` as row `r + i`, feature `seg.first + o + j`, adding the bias (and
    /// with `accumulate`, onto what the output holds: `out + (v + bias)`). The epilogue is
    /// chosen once per call, not per element, and each row's `C` outputs are written as one
    /// slice. (The cost left here in prefill profiles is the stores' cache misses: the output
    /// rows are fresh lines.)
    #[inline]
    fn store<const R: usize, const C: usize>(
        &self,
        seg: &Seg<'_>,
        r: usize,
        o: usize,
        vals: [[f32; C]; R],
    ) {
        let col = seg.first + o;
        let bias = self.epi.bias.map(|bs| &bs[col..col + C]);
        for (i, row) in vals.iter().enumerate() {
            // SAFETY: `r + i < rows` and `col + C <= n_out`, so the `C` values lie inside row
            // `r + i` of `out`; no other task touches features `col..col + C`, so this is the
            // only reference to them.
            let d = unsafe {
                std::slice::from_raw_parts_mut(self.dst.ptr.add((r + i) * self.dst.n_out + col), C)
            };
            match (bias, self.epi.accumulate) {
                (None, false) => d.copy_from_slice(row),
                (None, true) => {
                    for (d, &v) in d.iter_mut().zip(row) {
                        *d += v;
                    }
                }
                (Some(bs), false) => {
                    for ((d, &v), &b) in d.iter_mut().zip(row).zip(bs) {
                        *d = v + b;
                    }
                }
                (Some(bs), true) => {
                    for ((d, &v), &b) in d.iter_mut().zip(row).zip(bs) {
                        *d += v + b;
                    }
                }
            }
        }
    }
}

/// Decode: the one input row against weight rows `a..b` of `seg`, one weight row per tile. At one
/// input row a tile only needs enough independent work to hide latency, and streaming one weight
/// row at a time measured fastest (GPT-2 f16 decode 91.7 → 118 tokens/s against four at once).
fn float_span(ctx: &Ctx<'_>, kind: WKind, seg: &Seg<'_>, a: usize, b: usize) {
    let n = ctx.n_in;
    let rb = seg.row_bytes;
    let x = &ctx.x[..n];
    let w = &seg.data[a * rb..b * rb];
    // SAFETY: `x` covers `n` values and `w` covers `b - a` rows of `n` weights each (sliced just
    // above, so an out-of-range chunk panics instead).
    unsafe {
        tile::span::<1, 1, _>(kind, &[x.as_ptr()], w.as_ptr(), rb, b - a, n, |o, v| {
            ctx.store(seg, 0, a + o, v)
        })
    };
}

fn float_tile<const R: usize, const C: usize>(
    ctx: &Ctx<'_>,
    kind: WKind,
    seg: &Seg<'_>,
    r: usize,
    o: usize,
) {
    let n = ctx.n_in;
    let xs: [*const f32; R] = std::array::from_fn(|i| ctx.x[(r + i) * n..][..n].as_ptr());
    let ws: [*const u8; C] =
        std::array::from_fn(|j| seg.data[(o + j) * seg.row_bytes..][..seg.row_bytes].as_ptr());
    // SAFETY: each pointer starts a slice of `n` values checked just above.
    let vals = unsafe { tile::tile::<R, C>(kind, &xs, &ws, n, C * seg.row_bytes) };
    ctx.store(seg, r, o, vals);
}

/// A panel tile's arguments: the context, the weights' kind, the segment, the first input row,
/// the first output, the first panel, and the prefetch ([`panel::tile`]'s `fetch`).
type PanelArgs<'a, 'b> = (
    &'a Ctx<'b>,
    WKind,
    &'a Seg<'b>,
    usize,
    usize,
    *const u8,
    (*const u8, usize),
);

/// Input rows `r..r + R` against `P` consecutive panels at `wp` (outputs `o..o + 16 P` of
/// `seg`).
fn panel_tile<const R: usize, const P: usize>((ctx, kind, seg, r, o, wp, ahead): PanelArgs) {
    let n = ctx.n_in;
    let xs: [*const f32; R] = std::array::from_fn(|i| ctx.x[(r + i) * n..][..n].as_ptr());
    let pb = PANEL * seg.row_bytes;
    // SAFETY: each `xs` pointer starts a slice of `n` values (checked just above); `wp` starts
    // `P` whole panels of `seg` (the caller sliced them).
    let v = unsafe { panel::tile::<R, P>(kind, &xs, wp, pb, n, ahead) };
    for p in 0..P {
        ctx.store::<R, PANEL>(seg, r, o + p * PANEL, v.map(|rows| rows[p]));
    }
}

/// Rows `r0..r0 + R` against weight rows `a..b` of `seg`, `C` at a time (the odd one left over
/// alone).
fn int_span<const R: usize, const C: usize>(
    ctx: &Ctx<'_>,
    dtype: DType,
    seg: &Seg<'_>,
    r0: usize,
    a: usize,
    b: usize,
) {
    let acts = ctx.acts(dtype);
    let xs: [QRow<'_>; R] = std::array::from_fn(|i| acts.row(r0 + i));
    let rb = seg.row_bytes;
    let mid = a + (b - a) / C * C;
    int::span::<R, C>(
        dtype,
        &xs,
        &seg.data[a * rb..mid * rb],
        rb,
        ctx.n_in,
        |o, v| ctx.store(seg, r0, a + o, v),
    );
    if mid < b {
        int::span::<R, 1>(
            dtype,
            &xs,
            &seg.data[mid * rb..b * rb],
            rb,
            ctx.n_in,
            |o, v| ctx.store(seg, r0, mid + o, v),
        );
    }
}
