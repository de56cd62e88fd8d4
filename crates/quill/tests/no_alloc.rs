//! A decode step allocates nothing once its buffers have grown: the forward pass into a reused
//! logits buffer, for float, interleaved-quantized and batched models alike, with f32 and f16
//! KV caches. Counted by a global allocator wrapper over every thread (the kernels' pool
//! included). The binary runs without the libtest harness (`harness = false`), whose own
//! threads would allocate while it counts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fixtures;
use quill::load::LoadOptions;
use quill::model::{BatchInput, Scratch};
use quill::{KvDtype, Logits, ModelSource, WeightDtype};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    decode_steps_allocate_nothing();
    println!("no_alloc: decode_steps_allocate_nothing ... ok");
}

fn decode_steps_allocate_nothing() {
    let cases = [
        ("models/gpt2-bias-tanh/hf-safetensors", None, KvDtype::F32),
        (
            "models/gpt2-bias-tanh/hf-safetensors",
            Some(WeightDtype::Q4_0),
            KvDtype::F16,
        ),
        (
            "models/llama-gqa-tied/hf-safetensors",
            Some(WeightDtype::Q8_0),
            KvDtype::F32,
        ),
    ];
    for (rel, dtype, kv) in cases {
        let opts = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        let m = quill::load(&ModelSource::Path(fixtures().join(rel)), &opts)
            .unwrap()
            .model;
        // Two sequences, batched, then one alone. Capacity 32: the caches take 17 positions at
        // the prompt, grow to 32 (doubling, capped) at the first decode step and stay there
        // (sequence 0 ends at 17 + 2 + 4·2 = 27 positions).
        let mut caches = [m.new_cache_with(32, kv), m.new_cache_with(32, kv)];
        let mut scratch = Scratch::default();
        let mut logits = Vec::new();
        let prompt: Vec<u32> = (0..17).map(|i| (i * 7) % 50).collect();
        let step = |caches: &mut [quill::model::KvCache; 2],
                    scratch: &mut Scratch,
                    logits: &mut Vec<f32>,
                    n: usize,
                    toks: [&[u32]; 2]| {
            let [a, b] = caches;
            let mut inputs = [
                BatchInput {
                    tokens: toks[0],
                    cache: a,
                },
                BatchInput {
                    tokens: toks[1],
                    cache: b,
                },
            ];
            m.forward_into(&mut inputs[..n], scratch, Logits::Last, logits)
                .unwrap();
        };
        step(
            &mut caches,
            &mut scratch,
            &mut logits,
            2,
            [&prompt, &prompt[1..]],
        );
        step(&mut caches, &mut scratch, &mut logits, 2, [&[1], &[2]]);
        step(&mut caches, &mut scratch, &mut logits, 1, [&[3], &[]]);
        // A pool thread's first work (its first steal, its own activation buffers) allocates
        // once; that can land in any window when the machine is busy, but never in every one.
        // An allocation per step would.
        let windows: Vec<usize> = (0..4u32)
            .map(|w| {
                let before = ALLOCS.load(Ordering::Relaxed);
                step(&mut caches, &mut scratch, &mut logits, 2, [&[w], &[w + 2]]);
                step(&mut caches, &mut scratch, &mut logits, 1, [&[w + 3], &[]]);
                ALLOCS.load(Ordering::Relaxed) - before
            })
            .collect();
        assert_eq!(
            windows.iter().min(),
            Some(&0),
            "{rel} {dtype:?}, {kv} cache: allocations in each window of two passes: {windows:?}"
        );
        assert_eq!(logits.len(), m.config().vocab_size);
    }
}
