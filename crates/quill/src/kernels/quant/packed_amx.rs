//! Intel AMX kernels over interleaved groups ([`super::packed`]) for batches and prefill: the
//! integer dot products of up to 16 activation rows against two groups (16 weight rows) run on
//! the tile unit, for Q8_0 and for the K-quants Q4_K, Q5_K and Q6_K.
//!
//! **Q8_0** ([`span_q8_0`]): a block's products are one `tdpbssd`, instead of 8 `vpdpbusd` per
//! row. The interleaved layout is nearly AMX's operand layout: a Q8_0 group-block's quant bytes
//! are 8 units of 32 bytes, unit `u` holding values `4u..4u+4` of the group's 8 rows, so a B
//! tile row (16 columns × 4 bytes) is unit `u` of one group beside unit `u` of the next. The
//! activations' block is an A tile of `m` rows × 32 bytes at the rows' stride. The C tile
//! (`m` × 16 sums) goes to memory, row `r`'s 16 sums one 512-bit load with group 0 in lanes
//! 0..8, as in [`super::packed_avx512::group_pair`]; from there every lane takes that kernel's
//! float steps, so the bits are those of every other kernel. Measured on the AVX-512 + AMX
//! Xeon (`quill bench --prompt-tokens 128 --batch 8,16`, with and without `QUILL_NO_AMX`,
//! alternated): GPT-2 q8_0 prefill 1690–1704 → 2008–2133 tokens/s, batch 8 703–718 → 764–815,
//! batch 16 993–1009 → 1238–1291. The same kernel for Q4_0 / Q4_1 (nibbles split into bytes
//! for the B tile) measured level with their VNNI kernels, which need no sign handling, so
//! they stay there. Per step the tile work (about 25 cycles: loads, product, the C tile's
//! store) and the 16 rows' float steps (about 30) do not overlap.
//!
//! **Q4_K / Q5_K** ([`Q45`], run by [`span_sblocks`]): their float steps come once per 256-value super-block, but
//! each 32-value sub-block has its own integer scale. Splitting the scale as `8·hi + lo` keeps
//! `hi·q` and `lo·q` in unsigned bytes, so the scales go into two B tiles and a super-block's
//! sums accumulate inside two C tiles (`tdpbsud`, 64 values per product), stored once per
//! super-block. Same machine and method: Q4_K_M prefill 1680–1713 → 2049–2054 tokens/s,
//! Q5_K_M 1546–1621 → 1985–2047, batch 16 +17–23%.
//!
//! **Q6_K** ([`q6k`], run by [`span_sblocks`] too): signed 8-bit scales over 16-value sub-blocks, too wide to split into
//! two digits. Each value times its scale, less the −32 offset, is a 16-bit product; its low
//! and high bytes make two B tiles (`tdpbsud`, `tdpbssd`), and the super-block's sums again
//! accumulate inside two C tiles. From 6 rows ([`min_rows`]).
//!
//! The tiles' instructions are written as `asm!` (Rust's AMX intrinsics and target features are
//! not stable); the assembler knows the mnemonics. Linux hands out the tile state only on
//! request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once in [`available`].

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::act::QRow;
use super::packed::{K_DMIN, LANES};
use super::packed_avx2::{layout, MAX_ROWS};
use super::packed_avx512::{emit_pair, halves, q45k_finish, q45k_scale, q45k_scales, q45k_weights};
use crate::tensor::DType;

mod q6k;

/// Q8_0 in [`super::packed_avx2`]'s kernel numbering.
const Q8_0: u8 = 0;

/// Whether the CPU has AMX-TILE and AMX-INT8, the OS granted this process the tile state, and
/// `QUILL_NO_AMX` is unset (it keeps the AVX-512 kernels, for comparison); checked once.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if std::env::var_os("QUILL_NO_AMX").is_some() || !crate::kernels::simd::has_vnni() {
            return false;
        }
        // CPUID leaf 7 exists on every CPU with AVX-512 (checked above).
        let l7 = __cpuid_count(7, 0);
        let (tile, int8) = (l7.edx >> 24 & 1 == 1, l7.edx >> 25 & 1 == 1);
        tile && int8 && request_tile_state()
    })
}

/// Asks Linux for permission to use the AMX tile data (XTILEDATA, state component 18) in this
/// process: without it the first tile instruction faults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it fails cleanly on kernels without
    // AMX support.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn request_tile_state() -> bool {
    false
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    /// Bytes per row of tiles 0..16.
    colsb: [u16; 16],
    /// Rows of tiles 0..16.
    rows: [u8; 16],
}

/// Configures tiles `0..shapes.len()` as `(bytes per row, rows)`; the others stay unused (an
/// unused tile must have neither rows nor bytes, or `ldtilecfg` faults).
///
/// # Safety
/// [`available`] must be true; every shape must fit a tile (at most 64 bytes × 16 rows).
#[inline(always)]
unsafe fn configure(shapes: impl Iterator<Item = (u16, u8)>) {
    let mut cfg = TileConfig {
        palette: 1,
        start_row: 0,
        _reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for (t, (colsb, rows)) in shapes.take(16).enumerate() {
        (cfg.colsb[t], cfg.rows[t]) = (colsb, rows);
    }
    asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly));
}

/// A 64-byte aligned scratch buffer.
#[repr(C, align(64))]
struct Aligned<const N: usize>([u8; N]);

/// Tiles per set (C, A, B; two sets, see [`product`]) and their shapes for `m` rows: C `m` × 16
/// i32, A `m` × 32 activation bytes, B 8 × 64 weight bytes.
fn tile_shape(t: usize, m: usize) -> (u16, u8) {
    match t % 3 {
        0 => (64, m as u8),
        1 => (32, m as u8),
        _ => (64, 8),
    }
}

/// Whether the AMX kernel takes these rows: at least two (one row is decode, bound by memory,
/// on the 256-bit kernels), and every row `stride` bytes after the previous one (one A tile).
pub(super) fn takes(x: &[QRow<'_>]) -> Option<usize> {
    if x.len() < 2 || x.len() > MAX_ROWS {
        return None;
    }
    let base = x[0].q.as_ptr() as usize;
    let stride = (x[1].q.as_ptr() as usize).wrapping_sub(base);
    let uniform = x
        .iter()
        .enumerate()
        .all(|(r, row)| row.q.as_ptr() as usize == base.wrapping_add(r.wrapping_mul(stride)));
    (uniform && stride >= x[0].q.len()).then_some(stride)
}

/// The fewest activation rows for which [`packed::span`](super::packed::span) takes the AMX
/// kernel of `dtype` (one of [`takes_format`]). Q6_K's B tiles cost the most to build (two
/// 16-bit products per 64 weight bytes), the same at any row count, so below 6 rows its VNNI
/// kernel is faster. Measured on the AVX-512 + AMX Xeon, `quill bench --prompt-tokens 8
/// --gen-tokens 32 --batch 2,4,6,8` on GPT-2 Q4_K_M (Q4_K and Q6_K matrices) with the limits
/// set in turn, two rounds: batch 2 272–289 tokens/s with Q6_K on AMX, 301–314 without; batch
/// 4 448–457 with, 475–495 without; batch 6 level (595–608, 601–602). Q8_0, Q4_K and Q5_K
/// take AMX from 2 rows: in the same runs with weights streaming from memory the tiles were
/// level or ahead at every row count (Q4_K_M batch 2 313–321 with Q4_K on AMX, 300–315
/// without; q8_0 batch 4 485–509 against 431–451).
pub(super) fn min_rows(dtype: DType) -> usize {
    match dtype {
        DType::Q6K => 6,
        _ => 2,
    }
}

/// Whether the AMX kernels take `dtype`: Q8_0 (signed weights), Q4_K / Q5_K (unsigned, with
/// their integer scale per 32-value sub-block folded into the weights) and Q6_K (each value
/// times its 16-value sub-block's scale, as two bytes).
pub(super) fn takes_format(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4K | DType::Q5K | DType::Q6K)
}

/// `groups` interleaved groups of `dtype` ([`takes_format`]) at `w` against the rows `x`
/// (2..=16, `stride` bytes apart, as [`takes`] found them); `emit(r, first_weight_row,
/// lanes)`. `blocks` is the group-blocks per group (super-blocks for the K-quants). Pairs of
/// groups run on the tiles, an odd last group on the 256-bit VNNI kernel.
///
/// # Safety
/// [`available`] must be true; `w` must cover `groups` groups of `blocks` group-blocks and each
/// `x[r]` `blocks` blocks of values with their scales and sums (as `packed::span` checks them).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn span<F>(
    dtype: DType,
    x: &[QRow<'_>],
    stride: usize,
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    use super::packed_avx2::span_vnni;
    let g = groups / 2 * 2;
    match dtype {
        DType::Q4K => span_sblocks::<Q45<false>, F>(x, stride, w, blocks, g / 2, emit),
        DType::Q5K => span_sblocks::<Q45<true>, F>(x, stride, w, blocks, g / 2, emit),
        DType::Q6K => span_sblocks::<q6k::Q6, F>(x, stride, w, blocks, g / 2, emit),
        _ => span_q8_0(x, stride, w, blocks, g / 2, emit),
    }
    if g < groups {
        // A group is `LANES` rows of `blocks` blocks, the bytes of the rows it interleaves.
        let at = w.add(g * LANES * blocks * dtype.block_bytes());
        let off = g * LANES;
        let mut e = |r, o, v| emit(r, off + o, v);
        match dtype {
            DType::Q4K => span_vnni::<4, _>(x, at, blocks, groups - g, &mut e),
            DType::Q5K => span_vnni::<5, _>(x, at, blocks, groups - g, &mut e),
            DType::Q6K => span_vnni::<3, _>(x, at, blocks, groups - g, &mut e),
            _ => span_vnni::<Q8_0, _>(x, at, blocks, groups - g, &mut e),
        }
    }
}

/// Q8_0 on the tiles: one product per block of a pair of groups, then per lane
/// `acc += (d_w·d_x)·i`.
///
/// # Safety
/// As [`span`], for `2 · pairs` groups.
#[inline(always)]
unsafe fn span_q8_0<F>(
    x: &[QRow<'_>],
    stride: usize,
    w: *const u8,
    blocks: usize,
    pairs: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    let steps = pairs * blocks;
    if steps == 0 {
        return;
    }
    let m = x.len();
    let (gb, head) = layout(Q8_0);
    let gbytes = blocks * gb;
    configure((0..6).map(|t| tile_shape(t, m)));
    // The flat stream of (pair of groups, block) steps j: step j's B tile is built AHEAD steps
    // before its product (into a ring of RING buffers), because a tile load of bytes still in
    // the store buffer waits for them to reach the cache (about 60 cycles, measured); its
    // float steps run LAG steps after its product, reading the sums from `c[j % (LAG + 1)]`,
    // so they need not wait for the C tile's store.
    const AHEAD: usize = 3;
    const RING: usize = 4;
    const LAG: usize = 2;
    let mut bt = [const { Aligned([0u8; 512]) }; RING];
    let mut c = [const { Aligned([0u8; 64 * MAX_ROWS]) }; LAG + 1];
    let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
    // Each stream position as (pair, block), advanced by counting (no divisions per step).
    let step_at = |(pair, b): (usize, usize)| {
        let p0 = w.add(pair * 2 * gbytes + b * gb);
        (p0, p0.add(gbytes))
    };
    let next = |(pair, b): (usize, usize)| {
        if b + 1 == blocks {
            (pair + 1, 0)
        } else {
            (pair, b + 1)
        }
    };
    let (mut built, mut prod, mut done) = ((0, 0), (0, 0), (0, 0));
    for j in 0..AHEAD.min(steps) {
        let (p0, p1) = step_at(built);
        build_b(p0.add(head), p1.add(head), bt[j % RING].0.as_mut_ptr());
        built = next(built);
    }
    for j in 0..steps + LAG {
        if j + AHEAD < steps {
            let (p0, p1) = step_at(built);
            build_b(
                p0.add(head),
                p1.add(head),
                bt[(j + AHEAD) % RING].0.as_mut_ptr(),
            );
            built = next(built);
        }
        if j < steps {
            let xa = x[0].q.as_ptr().add(32 * prod.1);
            product(
                xa,
                stride,
                bt[j % RING].0.as_ptr(),
                c[j % (LAG + 1)].0.as_mut_ptr(),
                j % 2,
            );
            prod = next(prod);
        }
        if j >= LAG {
            let (pair, b) = done;
            if b == 0 {
                acc[..m].fill(_mm512_setzero_ps());
            }
            let (p0, p1) = step_at(done);
            floats(x, b, p0, p1, c[(j - LAG) % (LAG + 1)].0.as_ptr(), &mut acc);
            if b + 1 == blocks {
                emit_pair(&acc[..m], 2 * pair, emit);
            }
            done = next(done);
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// A K-quant whose super-block sums accumulate inside two C tiles (C_hi, C_lo), stored once
/// per super-block: each step's two B tiles (B_hi at 0, B_lo at 1024 of a 2 KiB buffer) are
/// built by [`SuperBlock::build`]; a stored super-block's integer per row is
/// `(C_hi << HI_SHIFT) + C_lo`, and [`SuperBlock::finish`] makes it the row's float step.
/// [`span_sblocks`] runs the tiles for every such format.
pub(super) trait SuperBlock {
    /// The format in [`super::packed_avx2`]'s kernel numbering (its group-block layout).
    const KIND: u8;
    /// Whether B_hi holds signed bytes (`tdpbssd`) rather than unsigned ones (`tdpbsud`).
    const SIGNED_HI: bool;
    /// The weight of C_hi's sums against C_lo's, as a left shift.
    const HI_SHIFT: i64;
    /// What a super-block's float steps read from its weights, once for every row.
    type Scales;

    /// The B_hi and B_lo tiles of step `h` (0..4: values `64h..64h + 64`) of a super-block of
    /// two groups at `p0`, `p1`, at `bt` and `bt + 1024`.
    ///
    /// # Safety
    /// AVX-512 F/BW must be present; `p0`/`p1` must cover a group-block, `bt` 2048 writable
    /// bytes (64-byte aligned).
    unsafe fn build(p0: *const u8, p1: *const u8, h: usize, bt: *mut u8);

    /// The float steps' inputs from the super-block of two groups at `p0`, `p1`.
    ///
    /// # Safety
    /// AVX-512 F/BW must be present; `p0`/`p1` must cover a group-block.
    unsafe fn scales(p0: *const u8, p1: *const u8) -> Self::Scales;

    /// Row `x`'s float step for super-block `sb` from its exact integer `isum` per lane.
    ///
    /// # Safety
    /// AVX-512 F/BW must be present; `x` must have super-block `sb`'s scale and sums.
    unsafe fn finish(x: &QRow<'_>, sb: usize, s: &Self::Scales, isum: __m512i, acc: &mut __m512);
}

/// Q4_K (`FIVE` false) or Q5_K on the tiles, with each sub-block's 6-bit scale folded into the
/// weights so that a super-block's integer sums accumulate inside the tiles: a scale is
/// `8·hi + lo` (`hi`, `lo` < 8), and `hi·q` and `lo·q` (at most 7 · 31) are still unsigned
/// bytes, so two B tiles per 64 values (two sub-blocks) hold them, two C tiles sum
/// `Σ_s hi_s·Σ q_w·q_x` and `Σ_s lo_s·Σ q_w·q_x` over the super-block's four products, and
/// `8·C_hi + C_lo` is exactly the 512-bit VNNI kernel's `Σ_s sc_s·Σ q_w·q_x`. The super-block's
/// float steps are that kernel's ([`q45k_finish`]): the same bits. (One product and one C tile
/// store per sub-block, each scaled by a 32-bit multiply per row, measured 25% slower.)
struct Q45<const FIVE: bool>;

impl<const FIVE: bool> SuperBlock for Q45<FIVE> {
    const KIND: u8 = if FIVE { 5 } else { 4 };
    const SIGNED_HI: bool = false;
    const HI_SHIFT: i64 = 3;
    type Scales = ((__m512, __m512), [__m512i; 4]);

    #[inline(always)]
    unsafe fn build(p0: *const u8, p1: *const u8, h: usize, bt: *mut u8) {
        build_b_q45k::<FIVE>(p0, p1, 2 * h, bt);
    }

    #[inline(always)]
    unsafe fn scales(p0: *const u8, p1: *const u8) -> Self::Scales {
        let (_, mnv) = q45k_scales(p0, p1);
        (
            (halves(p0, p1), halves(p0.add(K_DMIN), p1.add(K_DMIN))),
            mnv,
        )
    }

    #[inline(always)]
    unsafe fn finish(x: &QRow<'_>, sb: usize, s: &Self::Scales, isum: __m512i, acc: &mut __m512) {
        q45k_finish(x, sb, s.0, &s.1, isum, acc);
    }
}

/// A [`SuperBlock`] format on the tiles: `2 · pairs` interleaved groups of `sblocks`
/// super-blocks at `w` against the rows `x` (`stride` bytes apart).
///
/// # Safety
/// As [`span`], for `2 · pairs` groups of `sblocks` super-blocks of format `K`.
#[inline(always)]
unsafe fn span_sblocks<K: SuperBlock, F>(
    x: &[QRow<'_>],
    stride: usize,
    w: *const u8,
    sblocks: usize,
    pairs: usize,
    emit: &mut F,
) where
    F: FnMut(usize, usize, [f32; LANES]),
{
    let steps = pairs * 4 * sblocks;
    if steps == 0 {
        return;
    }
    let m = x.len();
    let gb = layout(K::KIND).0;
    let shift = _mm_set_epi64x(0, K::HI_SHIFT);
    let gbytes = sblocks * gb;
    // Tiles: 0, 1 C_hi, C_lo (m × 16 i32); 2, 3 A (m × 64 activation bytes, by parity); 4, 5
    // and 6, 7 B_hi, B_lo (16 × 64 weight bytes, by parity).
    configure((0..8).map(|t| (64, if t < 4 { m as u8 } else { 16 })));
    // Step q of a pair covers sub-blocks 2h, 2h + 1 (h = q % 4) of super-block q / 4. Its B
    // tiles are built AHEAD steps before its product, into a ring of RING buffers (B_hi at 0,
    // B_lo at 1024), for the reason [`span_q8_0`] gives.
    const AHEAD: usize = 3;
    const RING: usize = 4;
    let mut bt = [const { Aligned([0u8; 2048]) }; RING];
    // A super-block's C_hi rows, then its C_lo rows at 64 · MAX_ROWS; two, by parity.
    let mut c = [const { Aligned([0u8; 2 * 64 * MAX_ROWS]) }; 2];
    let at = |pair: usize, sb: usize| {
        let p0 = w.add(pair * 2 * gbytes + sb * gb);
        (p0, p0.add(gbytes))
    };
    let next = |(pair, q): (usize, usize)| {
        if q + 1 == 4 * sblocks {
            (pair + 1, 0)
        } else {
            (pair, q + 1)
        }
    };
    let build = |(pair, q): (usize, usize), bt: *mut u8| {
        let (p0, p1) = at(pair, q >> 2);
        K::build(p0, p1, q & 3, bt);
    };
    let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
    // The super-block whose sums were stored last step, and its buffer.
    let mut pending: Option<(usize, usize, usize)> = None;
    let (mut built, mut prod) = ((0, 0), (0, 0));
    for j in 0..AHEAD.min(steps) {
        build(built, bt[j % RING].0.as_mut_ptr());
        built = next(built);
    }
    let mut stored = 0;
    for j in 0..=steps {
        if j + AHEAD < steps {
            build(built, bt[(j + AHEAD) % RING].0.as_mut_ptr());
            built = next(built);
        }
        let mut now = None;
        if j < steps {
            let (pair, q) = prod;
            let h = q & 3;
            if h == 0 {
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
            }
            product_pair(
                x[0].q.as_ptr().add(64 * q),
                stride,
                bt[j % RING].0.as_ptr(),
                j % 2,
                K::SIGNED_HI,
            );
            if h == 3 {
                let buf = c[stored % 2].0.as_mut_ptr();
                asm!(
                    "tilestored [{c} + {s64} * 1], tmm0",
                    "tilestored [{lo} + {s64} * 1], tmm1",
                    c = in(reg) buf,
                    lo = in(reg) buf.add(64 * MAX_ROWS),
                    s64 = in(reg) 64usize,
                    options(nostack),
                );
                now = Some((pair, q >> 2, stored % 2));
                stored += 1;
            }
            prod = next(prod);
        }
        // The super-block stored last step: its float steps (after this step's product was
        // issued, so they need not wait for the store).
        if let Some((pair, sb, k)) = pending {
            let (p0, p1) = at(pair, sb);
            if sb == 0 {
                acc[..m].fill(_mm512_setzero_ps());
            }
            let scales = K::scales(p0, p1);
            let buf = c[k].0.as_ptr();
            for (r, (xr, a)) in x.iter().zip(acc.iter_mut()).enumerate() {
                let hi = _mm512_load_si512(buf.add(64 * r).cast());
                let lo = _mm512_load_si512(buf.add(64 * (MAX_ROWS + r)).cast());
                let isum = _mm512_add_epi32(_mm512_sll_epi32(hi, shift), lo);
                K::finish(xr, sb, &scales, isum, a);
            }
            if sb + 1 == sblocks {
                emit_pair(&acc[..m], 2 * pair, emit);
            }
        }
        pending = now;
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// The B_hi and B_lo tiles of sub-blocks `s0`, `s0 + 1` of a Q4_K (Q5_K) super-block of two
/// groups (at `p0`, `p1`), at `bt` and `bt + 1024`: B row `k` holds values `4k..4k + 4` of
/// the 64 for each lane, times the lane's sub-block scale's `hi` (`lo`) part.
///
/// # Safety
/// AVX-512 F/BW must be present; `p0`/`p1` must cover a group-block, `bt` 2048 writable bytes
/// (64-byte aligned).
#[inline(always)]
unsafe fn build_b_q45k<const FIVE: bool>(p0: *const u8, p1: *const u8, s0: usize, bt: *mut u8) {
    // A 32-bit lane's value in both its 16-bit halves: a 16-bit multiply then scales the
    // lane's 4 bytes without carries between them.
    let twice = |v: __m512i| _mm512_or_si512(v, _mm512_slli_epi32(v, 16));
    for t in 0..2 {
        let wv = q45k_weights::<FIVE>(p0, p1, s0 + t);
        let sc = q45k_scale(p0, p1, s0 + t);
        let hi = twice(_mm512_srli_epi32(sc, 3));
        let lo = twice(_mm512_and_si512(sc, _mm512_set1_epi32(7)));
        // Values 0..16 of the sub-block are wv[0], wv[2], wv[4], wv[6], values 16..32 wv[1],
        // wv[3], wv[5], wv[7].
        for (i, v) in wv.iter().enumerate() {
            let row = bt.add(64 * (8 * t + i / 2 + 4 * (i % 2)));
            _mm512_store_si512(row.cast(), _mm512_mullo_epi16(*v, hi));
            _mm512_store_si512(row.add(1024).cast(), _mm512_mullo_epi16(*v, lo));
        }
    }
}

/// One step of [`span_sblocks`]: the A tile (`m` rows × 64 activation bytes from `xa`,
/// `stride` apart) times the B_hi and B_lo tiles at `bt` and `bt + 1024`, added into C_hi and
/// C_lo (tiles 0, 1); B_hi's bytes are signed if `signed`, B_lo's unsigned. `parity` picks the
/// A and B tiles, so consecutive steps share none.
///
/// # Safety
/// The tiles must be configured as [`span_sblocks`] does; `xa` must cover the A tile's rows, `bt`
/// 2048 bytes.
#[inline(always)]
unsafe fn product_pair(xa: *const i8, stride: usize, bt: *const u8, parity: usize, signed: bool) {
    macro_rules! step {
        ($hi:literal, $a:literal, $bh:literal, $bl:literal) => {
            asm!(
                concat!("tileloadd ", $a, ", [{xa} + {xs} * 1]"),
                concat!("tileloadd ", $bh, ", [{bt} + {s64} * 1]"),
                concat!("tileloadd ", $bl, ", [{bl} + {s64} * 1]"),
                concat!($hi, " tmm0, ", $a, ", ", $bh),
                concat!("tdpbsud tmm1, ", $a, ", ", $bl),
                xa = in(reg) xa,
                xs = in(reg) stride,
                bt = in(reg) bt,
                bl = in(reg) bt.add(1024),
                s64 = in(reg) 64usize,
                options(nostack, readonly),
            )
        };
    }
    match (signed, parity) {
        (false, 0) => step!("tdpbsud", "tmm2", "tmm4", "tmm5"),
        (false, _) => step!("tdpbsud", "tmm3", "tmm6", "tmm7"),
        (true, 0) => step!("tdpbssd", "tmm2", "tmm4", "tmm5"),
        (true, _) => step!("tdpbssd", "tmm3", "tmm6", "tmm7"),
    }
}

/// Builds the B tile of one block of two groups (quant bytes at `q0`, `q1`) at `bt`: 8 rows of
/// 64 bytes, group 0's 8 rows' 4 bytes then group 1's, so one product covers 16 weight rows.
///
/// # Safety
/// AVX-512 F must be present; `q0`/`q1` must cover a group-block's quant bytes, `bt` 512
/// writable bytes (64-byte aligned).
#[inline(always)]
unsafe fn build_b(q0: *const u8, q1: *const u8, bt: *mut u8) {
    for u in (0..8).step_by(2) {
        // 64 bytes of each group (units u and u + 1) make B rows u ([g0 u, g1 u]) and u + 1.
        let v0 = _mm512_loadu_si512(q0.add(32 * u).cast());
        let v1 = _mm512_loadu_si512(q1.add(32 * u).cast());
        let at = bt.add(64 * u);
        _mm512_store_si512(at.cast(), _mm512_shuffle_i64x2(v0, v1, 0b01_00_01_00));
        _mm512_store_si512(
            at.add(64).cast(),
            _mm512_shuffle_i64x2(v0, v1, 0b11_10_11_10),
        );
    }
}

/// One block's product: the activations' A tile (`xa`, rows `stride` bytes apart) times the B
/// tile at `bt` gives the C tile (`m` × 16 sums), stored at `c` (64 bytes per row). `parity`
/// picks the tile set (C, A, B = 0, 1, 2 or 3, 4, 5), so consecutive blocks share no tile.
/// (Storing each product's sums only after the next product was issued measured the same.)
///
/// # Safety
/// The tiles must be configured as [`span_q8_0`] does; `xa` must cover the A tile's rows, `bt`
/// a B tile, `c` `64 · m` writable bytes.
#[inline(always)]
unsafe fn product(xa: *const i8, stride: usize, bt: *const u8, c: *mut u8, parity: usize) {
    // Signed weights × signed activations, exact 32-bit sums.
    macro_rules! block {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(
                concat!("tilezero ", $c),
                concat!("tileloadd ", $a, ", [{xa} + {xs} * 1]"),
                concat!("tileloadd ", $b, ", [{bt} + {s64} * 1]"),
                concat!("tdpbssd ", $c, ", ", $a, ", ", $b),
                concat!("tilestored [{c} + {s64} * 1], ", $c),
                xa = in(reg) xa,
                xs = in(reg) stride,
                bt = in(reg) bt,
                c = in(reg) c,
                s64 = in(reg) 64usize,
                options(nostack),
            )
        };
    }
    if parity == 0 {
        block!("tmm0", "tmm1", "tmm2")
    } else {
        block!("tmm3", "tmm4", "tmm5")
    }
}

/// Block `b`'s float steps for every row, from its integer sums at `c`: per lane
/// `acc += (d_w·d_x)·i`, as [`super::packed_avx512::group_pair`] takes them.
///
/// # Safety
/// AVX-512 F must be present; `p0`/`p1` are the two groups' group-blocks `b`, `c` holds the
/// sums of `x.len()` rows (64-byte aligned), and each row has block `b`'s scale.
#[inline(always)]
unsafe fn floats(
    x: &[QRow<'_>],
    b: usize,
    p0: *const u8,
    p1: *const u8,
    c: *const u8,
    acc: &mut [__m512; MAX_ROWS],
) {
    let dw = halves(p0, p1);
    for (r, a) in acc[..x.len()].iter_mut().enumerate() {
        let i = _mm512_load_si512(c.add(64 * r).cast());
        let dx = _mm512_set1_ps(*x.get_unchecked(r).d.get_unchecked(b));
        *a = _mm512_add_ps(
            *a,
            _mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(i)),
        );
    }
}
