//! Interleaved ("×8") layout for the 32-value block formats Q8_0, Q4_0 and Q4_1 and for the
//! K-quants Q4_K, Q5_K and Q6_K:
//! eight weight rows stored block by block, so one 32-byte load holds the same four values of
//! eight rows and the integer products of eight outputs land in the eight lanes of one vector. Scales then apply
//! as one vector per block instead of one broadcast per output, and nothing is summed
//! horizontally: the AVX2 kernel does about a third of the work per weight of the row-major one.
//! (llama.cpp's CPU backend repacks Q4_0 the same way for the same reason; the byte order here is
//! quill's own.) Weights are repacked once, at load ([`pack`]); the bytes are the same in number.
//!
//! A group of 8 rows is `blocks` group-blocks of `8 · block_bytes` bytes; group-block `b` holds
//! block `b` of each of the rows `c = 0..8`:
//! - `d[8]: f16` (16 bytes), then for Q4_1 `m[8]: f16` (16 bytes);
//! - the quant bytes as 4-byte units, unit-major: unit `u` of row `c` (its quant bytes
//!   `4u..4u+4`) at `head + 32u + 4c`. Q4_0/Q4_1 have 4 units (byte `j` holds values `j` and
//!   `j + 16` as low and high nibble), Q8_0 has 8 (byte `j` is value `j`).
//!
//! A Q6_K group-block (8 super-blocks of 256 six-bit values `q`, 1680 bytes) is laid out so that
//! one 32-byte load again holds 4 values of each of the 8 rows, ready for the byte products:
//! - `d[8]: f16` at 0;
//! - the scales at 16: sub-block `s`'s (16 values) of row `c` at `16 + 8s + c`;
//! - the low 4 bits at 144: for sub-block `s` two units `L = 0, 1` at `144 + 64s + 32L`, row `c`'s
//!   4 bytes at `+4c`; byte `j` holds value `16s + 8L + j` as low nibble and `16s + 8L + 4 + j`
//!   as high nibble;
//! - the high 2 bits at 1168: for sub-block `s` one unit at `1168 + 32s`, row `c`'s 4 bytes at
//!   `+4c`; bits `2m..2m+2` of byte `j` are the high bits of value `16s + 4m + j`.
//!
//! A Q4_K (Q5_K) group-block (8 super-blocks of 256 values in 8 sub-blocks of 32, 1152 (1408)
//! bytes) keeps the same byte count by keeping the scales and mins at 6 bits:
//! - `d[8]: f16` at 0, `dmin[8]: f16` at 16;
//! - at 32, per sub-block `s` and row `c`, byte `32 + 8s + c`: scale `sc` in bits 0..6, the
//!   min's low 2 bits in bits 6..8;
//! - at 96, per pair `p` of sub-blocks, byte `96 + 8p + c`: the high 4 bits of the mins of
//!   sub-blocks `2p` (low nibble) and `2p + 1` (high nibble);
//! - the 4-bit quants at 128: sub-block `s` in four units `u` at `128 + 128s + 32u`, row `c`'s
//!   4 bytes at `+4c`; byte `j` holds value `4u + j` as low nibble and `16 + 4u + j` as high
//!   nibble (the Q4_0 order within the sub-block);
//! - Q5_K's fifth bits at 1152: sub-block `s` at `1152 + 32s`, row `c`'s 4 bytes at `+4c`; bit
//!   `k` of byte `j` is the fifth bit of value `4k + j`.
//!
//! Every output is computed exactly as the portable row kernels compute it
//! ([`super::int::dot`]: per block an exact integer dot product, then `acc += (d_w·d_x)·Σ` in
//! block order, without fused multiply-adds), so the AVX2 kernel, the portable path and any tile
//! shape give the same bits.

use rayon::prelude::*;

use super::act::QRow;
use super::{int, kquants};
use crate::tensor::DType;

/// Rows per interleaved group.
pub const LANES: usize = 8;

/// Whether `dtype` has an interleaved layout: every block format quill runs
/// ([`super::FORMATS`]) has one.
pub fn packable(dtype: DType) -> bool {
    super::is_supported(dtype)
}

/// Where the Q6_K group-block's fields start: scales, low bits, high bits.
pub(super) const Q6_SCALES: usize = 16;
pub(super) const Q6_LOW: usize = Q6_SCALES + LANES * 16;
pub(super) const Q6_HIGH: usize = Q6_LOW + LANES * 128;

/// Where the Q4_K / Q5_K group-block's fields start: dmin, scales (with the mins' low bits),
/// the mins' high bits, the 4-bit quants, and Q5_K's fifth bits.
pub(super) const K_DMIN: usize = 16;
pub(super) const K_SC: usize = 32;
pub(super) const K_MN: usize = K_SC + LANES * 8;
pub(super) const K_Q: usize = K_MN + LANES * 4;
pub(super) const K_Q5H: usize = K_Q + LANES * 128;

/// Bytes of one row's scale fields at the start of a block (d, or d and m for Q4_1).
fn scale_bytes(dtype: DType) -> usize {
    if dtype == DType::Q4_1 {
        4
    } else {
        2
    }
}

/// Repacks `rows` rows (a multiple of [`LANES`]) of `row_bytes` bytes each from row-major `src`
/// into the interleaved layout. `dtype` must be [`packable`].
pub fn pack(dtype: DType, src: &[u8], rows: usize, row_bytes: usize) -> Vec<u8> {
    debug_assert!(packable(dtype) && rows.is_multiple_of(LANES) && src.len() == rows * row_bytes);
    let gbytes = LANES * row_bytes.max(1);
    let mut out = vec![0u8; rows * row_bytes];
    out.par_chunks_mut(gbytes)
        .zip(src.par_chunks(gbytes))
        .for_each(|(dst, src)| pack_group(dtype, src, dst, row_bytes));
    out
}

/// [`pack`] in place: `data` holds `rows` rows (a multiple of [`LANES`]) of `row_bytes` bytes
/// each, row-major, and ends interleaved. A group of 8 rows fills the same bytes in both
/// layouts, so each group is repacked from a copy of itself (one group's bytes per thread).
pub fn pack_in_place(dtype: DType, data: &mut [u8], rows: usize, row_bytes: usize) {
    debug_assert!(packable(dtype) && rows.is_multiple_of(LANES) && data.len() == rows * row_bytes);
    data.par_chunks_mut(LANES * row_bytes.max(1)).for_each_init(
        || Vec::with_capacity(LANES * row_bytes),
        |src: &mut Vec<u8>, dst| {
            src.clear();
            src.extend_from_slice(dst);
            pack_group(dtype, src, dst, row_bytes);
        },
    );
}

/// One group: the 8 row-major rows `src` (`8 · row_bytes` bytes) interleaved into `dst`.
fn pack_group(dtype: DType, src: &[u8], dst: &mut [u8], row_bytes: usize) {
    let bb = dtype.block_bytes();
    for (b, gb) in dst.chunks_exact_mut(LANES * bb).enumerate() {
        for c in 0..LANES {
            let at = c * row_bytes + b * bb;
            put_block(dtype, gb, c, &src[at..at + bb]);
        }
    }
}

/// Writes row `c`'s block `blk` (its row-major bytes) into group-block `gb`.
fn put_block(dtype: DType, gb: &mut [u8], c: usize, blk: &[u8]) {
    match dtype {
        DType::Q6K => return put_q6k(gb, c, blk),
        DType::Q4K | DType::Q5K => return put_q45k(gb, c, blk, dtype == DType::Q5K),
        _ => {}
    }
    let sb = scale_bytes(dtype);
    gb[2 * c..2 * c + 2].copy_from_slice(&blk[0..2]);
    if sb == 4 {
        gb[16 + 2 * c..16 + 2 * c + 2].copy_from_slice(&blk[2..4]);
    }
    let head = LANES * sb;
    for (u, unit) in blk[sb..].chunks_exact(4).enumerate() {
        gb[head + 32 * u + 4 * c..][..4].copy_from_slice(unit);
    }
}

/// Row `c`'s block from group-block `gb`, in its row-major bytes (`blk`: one block).
pub(crate) fn get_block(dtype: DType, gb: &[u8], c: usize, blk: &mut [u8]) {
    match dtype {
        DType::Q6K => return get_q6k(gb, c, blk),
        DType::Q4K | DType::Q5K => return get_q45k(gb, c, blk, dtype == DType::Q5K),
        _ => {}
    }
    let sb = scale_bytes(dtype);
    blk[0..2].copy_from_slice(&gb[2 * c..2 * c + 2]);
    if sb == 4 {
        blk[2..4].copy_from_slice(&gb[16 + 2 * c..16 + 2 * c + 2]);
    }
    let head = LANES * sb;
    for (u, unit) in blk[sb..].chunks_exact_mut(4).enumerate() {
        unit.copy_from_slice(&gb[head + 32 * u + 4 * c..][..4]);
    }
}

/// [`put_block`] for a Q6_K super-block (the layout in the module header).
fn put_q6k(gb: &mut [u8], c: usize, blk: &[u8]) {
    let q = kquants::q6_k_values(blk);
    gb[2 * c..2 * c + 2].copy_from_slice(&blk[208..210]);
    for s in 0..16 {
        gb[Q6_SCALES + 8 * s + c] = blk[192 + s];
        let v = &q[16 * s..][..16];
        for j in 0..4 {
            for l in 0..2 {
                gb[Q6_LOW + 64 * s + 32 * l + 4 * c + j] =
                    (v[8 * l + j] & 0x0F) | (v[8 * l + 4 + j] << 4);
            }
            gb[Q6_HIGH + 32 * s + 4 * c + j] =
                (0..4).fold(0, |h, m| h | (v[4 * m + j] >> 4) << (2 * m));
        }
    }
}

/// [`get_block`] for a Q6_K super-block.
fn get_q6k(gb: &[u8], c: usize, blk: &mut [u8]) {
    let mut q = [0u8; super::QK_K];
    for s in 0..16 {
        blk[192 + s] = gb[Q6_SCALES + 8 * s + c];
        let v = &mut q[16 * s..][..16];
        for j in 0..4 {
            let h = gb[Q6_HIGH + 32 * s + 4 * c + j];
            for m in 0..4 {
                let (l, hi) = (m / 2, m % 2);
                let low = gb[Q6_LOW + 64 * s + 32 * l + 4 * c + j] >> (4 * hi) & 0x0F;
                v[4 * m + j] = low | ((h >> (2 * m)) & 3) << 4;
            }
        }
    }
    kquants::q6_k_store_values(&q, blk);
    blk[208..210].copy_from_slice(&gb[2 * c..2 * c + 2]);
}

/// [`put_block`] for a Q4_K (`five` false) or Q5_K super-block (the layout in the module header).
fn put_q45k(gb: &mut [u8], c: usize, blk: &[u8], five: bool) {
    let (q, sc, m) = kquants::q45_k_fields(blk, five);
    gb[2 * c..2 * c + 2].copy_from_slice(&blk[0..2]);
    gb[K_DMIN + 2 * c..K_DMIN + 2 * c + 2].copy_from_slice(&blk[2..4]);
    for s in 0..8 {
        gb[K_SC + 8 * s + c] = sc[s] | (m[s] & 3) << 6;
        let v = &q[32 * s..][..32];
        for u in 0..4 {
            for j in 0..4 {
                gb[K_Q + 128 * s + 32 * u + 4 * c + j] =
                    (v[4 * u + j] & 0x0F) | (v[16 + 4 * u + j] & 0x0F) << 4;
            }
        }
        if five {
            for j in 0..4 {
                gb[K_Q5H + 32 * s + 4 * c + j] =
                    (0..8).fold(0, |h, k| h | (v[4 * k + j] >> 4) << k);
            }
        }
    }
    for p in 0..4 {
        gb[K_MN + 8 * p + c] = (m[2 * p] >> 2) | (m[2 * p + 1] >> 2) << 4;
    }
}

/// [`get_block`] for a Q4_K / Q5_K super-block.
fn get_q45k(gb: &[u8], c: usize, blk: &mut [u8], five: bool) {
    let (mut q, mut sc, mut m) = ([0u8; super::QK_K], [0u8; 8], [0u8; 8]);
    for s in 0..8 {
        let byte = gb[K_SC + 8 * s + c];
        let high = gb[K_MN + 8 * (s / 2) + c] >> (4 * (s % 2)) & 0x0F;
        (sc[s], m[s]) = (byte & 63, byte >> 6 | high << 2);
        let v = &mut q[32 * s..][..32];
        for u in 0..4 {
            for j in 0..4 {
                let byte = gb[K_Q + 128 * s + 32 * u + 4 * c + j];
                (v[4 * u + j], v[16 + 4 * u + j]) = (byte & 0x0F, byte >> 4);
            }
        }
        if five {
            for j in 0..4 {
                let h = gb[K_Q5H + 32 * s + 4 * c + j];
                for k in 0..8 {
                    v[4 * k + j] |= (h >> k & 1) << 4;
                }
            }
        }
    }
    blk[0..2].copy_from_slice(&gb[2 * c..2 * c + 2]);
    blk[2..4].copy_from_slice(&gb[K_DMIN + 2 * c..K_DMIN + 2 * c + 2]);
    kquants::q45_k_store_fields(&q, &sc, &m, blk, five);
}

/// Row `c` (0..8) of the interleaved group `group` (`blocks · 8 · block_bytes` bytes) in its
/// row-major bytes, written into `row` (`blocks · block_bytes` bytes).
pub(crate) fn unpack_row(dtype: DType, group: &[u8], c: usize, row: &mut [u8]) {
    let bb = dtype.block_bytes();
    for (gb, blk) in group.chunks_exact(LANES * bb).zip(row.chunks_exact_mut(bb)) {
        get_block(dtype, gb, c, blk);
    }
}

/// Interleaved groups `w` (whole groups of 8 rows of `cols` values) against the activation rows
/// `x` (at most 16): `emit(r, o, vals)` gives outputs `o..o + 8` of activation row `r`, where `o`
/// is the group's first weight row. Per group, every row of `x` passes over the group's
/// weights while they are in L1.
pub(crate) fn span(
    dtype: DType,
    x: &[QRow<'_>],
    w: &[u8],
    cols: usize,
    mut emit: impl FnMut(usize, usize, [f32; LANES]),
) {
    let (bb, be) = (dtype.block_bytes(), dtype.block_elems());
    let blocks = cols / be;
    let gbytes = LANES * blocks * bb;
    let groups = w.len().checked_div(gbytes).unwrap_or(0);
    // Every group and activation row has the length the SIMD kernels read (`QActs` fills every
    // field; the K-quants' activations come in 256-value blocks, without the per-32 fields).
    let fits = |max_rows: usize| {
        packable(dtype)
            && cols.is_multiple_of(be)
            && w.len() == groups * gbytes
            && x.len() <= max_rows
            && x.iter().all(|r| {
                r.q.len() == cols
                    && r.d.len() == blocks
                    && r.sum16.len() == cols / 16
                    && (be == super::QK_K || (r.s.len() == blocks && r.q4.len() == blocks))
            })
    };
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2_f16c() && fits(super::packed_avx2::MAX_ROWS) {
        use super::packed_amx as amx;
        if amx::takes_format(dtype) && x.len() >= amx::min_rows(dtype) && amx::available() {
            if let Some(stride) = amx::takes(x) {
                // SAFETY: AMX (with AVX-512 VNNI) is present and granted; `fits` checked the
                // lengths, `takes` the rows' common stride.
                unsafe { amx::span(dtype, x, stride, w.as_ptr(), blocks, groups, &mut emit) };
                return;
            }
        }
        let vnni = crate::kernels::simd::has_vnni();
        // SAFETY: AVX2/FMA/F16C (and for `span_vnni` AVX-512 VNNI) are present; `fits` checked
        // the lengths.
        unsafe { span_x86(dtype, vnni, x, w.as_ptr(), blocks, groups, &mut emit) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
        && fits(super::packed_neon::MAX_ROWS)
    {
        // SAFETY: NEON is part of AArch64 (and `dotprod` is checked at run time); `fits`
        // checked the lengths.
        unsafe { span_arm(dtype, x, w.as_ptr(), blocks, groups, &mut emit) };
        return;
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (fits, groups);
    span_portable(dtype, x, w, cols, emit)
}

/// The AArch64 kernels for Q8_0 / Q4_0 / Q4_1 (`sdot` where the CPU has it; the same bits).
///
/// # Safety
/// As `packed_neon::span`.
#[cfg(target_arch = "aarch64")]
unsafe fn span_arm(
    dtype: DType,
    x: &[QRow<'_>],
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut impl FnMut(usize, usize, [f32; LANES]),
) {
    use super::packed_neon as k;
    match (dtype, crate::kernels::simd::has_dotprod()) {
        (DType::Q8_0, true) => k::span_dot::<0, _>(x, w, blocks, groups, emit),
        (DType::Q4_0, true) => k::span_dot::<1, _>(x, w, blocks, groups, emit),
        (_, true) => k::span_dot::<2, _>(x, w, blocks, groups, emit),
        (DType::Q8_0, false) => k::span::<0, false, _>(x, w, blocks, groups, emit),
        (DType::Q4_0, false) => k::span::<1, false, _>(x, w, blocks, groups, emit),
        (_, false) => k::span::<2, false, _>(x, w, blocks, groups, emit),
    }
}

/// The x86 kernels for `dtype` (`vnni`: the AVX-512 VNNI variant; the same bits).
///
/// # Safety
/// As `packed_avx2::span` (and `span_vnni` when `vnni`).
#[cfg(target_arch = "x86_64")]
unsafe fn span_x86(
    dtype: DType,
    vnni: bool,
    x: &[QRow<'_>],
    w: *const u8,
    blocks: usize,
    groups: usize,
    emit: &mut impl FnMut(usize, usize, [f32; LANES]),
) {
    use super::packed_avx2 as k;
    match (dtype, vnni) {
        (DType::Q6K, false) => k::span::<3, _>(x, w, blocks, groups, emit),
        (DType::Q4K, false) => k::span::<4, _>(x, w, blocks, groups, emit),
        (DType::Q5K, false) => k::span::<5, _>(x, w, blocks, groups, emit),
        (DType::Q6K, true) => k::span_vnni::<3, _>(x, w, blocks, groups, emit),
        (DType::Q4K, true) => k::span_vnni::<4, _>(x, w, blocks, groups, emit),
        (DType::Q5K, true) => k::span_vnni::<5, _>(x, w, blocks, groups, emit),
        (DType::Q8_0, false) => k::span::<0, _>(x, w, blocks, groups, emit),
        (DType::Q4_0, false) => k::span::<1, _>(x, w, blocks, groups, emit),
        (_, false) => k::span::<2, _>(x, w, blocks, groups, emit),
        (DType::Q8_0, true) => k::span_vnni::<0, _>(x, w, blocks, groups, emit),
        (DType::Q4_0, true) => k::span_vnni::<1, _>(x, w, blocks, groups, emit),
        (_, true) => k::span_vnni::<2, _>(x, w, blocks, groups, emit),
    }
}

/// [`span`] on any CPU: the group's rows unpacked, then the row kernel (the same arithmetic).
fn span_portable(
    dtype: DType,
    x: &[QRow<'_>],
    w: &[u8],
    cols: usize,
    mut emit: impl FnMut(usize, usize, [f32; LANES]),
) {
    let bb = dtype.block_bytes();
    let blocks = cols / dtype.block_elems();
    let gbytes = LANES * blocks * bb;
    let groups = w.len().checked_div(gbytes).unwrap_or(0);
    let rb = blocks * bb;
    thread_local! {
        /// The group's rows, unpacked (kept per thread: no allocation per product).
        static ROWS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    ROWS.with_borrow_mut(|rows| {
        rows.resize(LANES * rb, 0);
        for (g, group) in w.chunks_exact(gbytes.max(1)).enumerate().take(groups) {
            for (c, row) in rows.chunks_exact_mut(rb.max(1)).enumerate() {
                unpack_row(dtype, group, c, row);
            }
            for (r, xr) in x.iter().enumerate() {
                let mut vals = [0.0f32; LANES];
                for (v, row) in vals.iter_mut().zip(rows.chunks_exact(rb.max(1))) {
                    *v = int::dot(dtype, row, xr);
                }
                emit(r, g * LANES, vals);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::act::QActs;

    /// The portable path gives the dispatched (AVX2 where present) kernel's bits, and packing
    /// round-trips every row.
    #[test]
    fn portable_span_matches_the_dispatched_one() {
        // Three groups: a pair for the 512-bit kernels and an odd one.
        let rows = 24;
        for (dtype, extreme) in crate::kernels::quant::FORMATS
            .into_iter()
            .flat_map(|d| [(d, false), (d, true)])
        {
            let (bb, be) = (dtype.block_bytes(), dtype.block_elems());
            let cols = if be == 32 { 96 } else { 512 };
            let rb = cols / be * bb;
            // Extreme: every quant byte at its largest magnitude (nibbles 15, bytes −128, six-bit
            // values 63 with scales −128 and 127) against activations ±127, the bound of the 16-bit
            // partial sums.
            let fill = |i: usize| match (extreme, dtype) {
                (false, _) => (i * 73 % 251) as u8,
                (true, DType::Q8_0) => 0x80,
                (true, _) => 0xFF,
            };
            let mut src: Vec<u8> = (0..rows * rb).map(fill).collect();
            for blk in src.chunks_exact_mut(bb) {
                if dtype == DType::Q6K {
                    if extreme {
                        // Scales −128 and 127 by turns: every digit of the AMX kernel's at its
                        // bound.
                        for (i, sc) in blk[192..208].iter_mut().enumerate() {
                            *sc = [0x80, 0x7F][i % 2];
                        }
                    }
                    blk[208..210].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                    continue;
                }
                blk[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                if matches!(dtype, DType::Q4_1 | DType::Q4K | DType::Q5K) {
                    blk[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
                }
            }
            let w = pack(dtype, &src, rows, rb);
            let mut row = vec![0u8; rb];
            for r in 0..rows {
                unpack_row(dtype, &w[r / 8 * 8 * rb..][..8 * rb], r % 8, &mut row);
                assert_eq!(row, src[r * rb..(r + 1) * rb], "{dtype} row {r}");
            }
            let x: Vec<f32> = (0..16 * cols)
                .map(|i| match extreme {
                    false => ((i * 37 % 101) as f32 - 50.0) / 9.0,
                    true => [1.0, -1.0][i / 7 % 2],
                })
                .collect();
            let mut a = QActs::default();
            a.quantize(&x, cols, be.min(256));
            // Five rows; two (the fewest the batch kernels take); sixteen (the most).
            for n in [5, 2, 16] {
                let xs: Vec<QRow<'_>> = (0..n).map(|r| a.row(r)).collect();
                check_kernels(dtype, &xs, &w, cols, rows);
            }
        }
    }

    /// A kernel's output callback.
    type Emit<'a> = dyn FnMut(usize, usize, [f32; LANES]) + 'a;

    /// The dispatched kernel, the portable one and (where the CPU has them) each x86 kernel
    /// give the same bits for the rows `xs`, and so does one row alone (decode's path).
    fn check_kernels(dtype: DType, xs: &[QRow<'_>], w: &[u8], cols: usize, rows: usize) {
        let n = xs.len();
        let collect = |f: &mut dyn FnMut(&mut Emit<'_>)| {
            let mut out = Vec::new();
            f(&mut |r, o, v| out.push((r, o, v.map(f32::to_bits))));
            out.sort_unstable();
            out
        };
        let fast = collect(&mut |e| span(dtype, xs, w, cols, e));
        let port = collect(&mut |e| span_portable(dtype, xs, w, cols, e));
        assert_eq!(fast.len(), n * rows / 8);
        assert_eq!(fast, port, "{dtype}, {n} rows");
        #[cfg(target_arch = "x86_64")]
        {
            let blocks = cols / dtype.block_elems();
            let groups = rows / 8;
            let simd = crate::kernels::simd::has_avx2_f16c();
            for vnni in [false, true] {
                if !simd || (vnni && !crate::kernels::simd::has_vnni()) {
                    continue;
                }
                // SAFETY: AVX2 (and for `vnni` AVX-512 VNNI) is present; lengths as `span`
                // checks them.
                let got = collect(&mut |e| unsafe {
                    span_x86(dtype, vnni, xs, w.as_ptr(), blocks, groups, &mut &mut *e)
                });
                assert_eq!(got, port, "{dtype}, {n} rows, vnni {vnni}");
            }
            use super::super::packed_amx as amx;
            if amx::takes_format(dtype) && amx::available() {
                let stride = amx::takes(xs).expect("rows of one QActs");
                // SAFETY: AMX is present and granted; lengths as `span` checks them.
                let got = collect(&mut |e| unsafe {
                    amx::span(dtype, xs, stride, w.as_ptr(), blocks, groups, &mut &mut *e)
                });
                assert_eq!(got, port, "{dtype}, {n} rows, AMX");
            }
        }
        // One activation row (decode) takes its own kernel path: the same bits again.
        let one = collect(&mut |e| span(dtype, &xs[..1], w, cols, e));
        let want: Vec<_> = port.iter().filter(|e| e.0 == 0).cloned().collect();
        assert_eq!(one, want, "{dtype}, one row");
    }
}
