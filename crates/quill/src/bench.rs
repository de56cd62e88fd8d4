//! Measurements for `quill bench`: the machine's memory read bandwidth, a model's decode and
//! prefill speed, and how close decode comes to the bandwidth roofline (batch-1 decode streams
//! every weight once per token, so tokens/s can be at most bandwidth / weight bytes).

use std::time::{Duration, Instant};

use crate::config::{Activation, Family, ModelConfig, NormKind, Positions, RopeStyle};
use crate::error::{Error, Result};
use crate::generate::Batch;
use crate::kernels::Matrix;
use crate::model::weights::{Block, Linear, Norm, Weights};
use crate::model::{KvDtype, Logits, Model, Scratch};
use crate::{GenerateParams, SamplerConfig};

/// Reads a buffer of `bytes` (spread over the thread pool) `reps` times; returns the best read
/// bandwidth in bytes per second.
///
/// The reduction is integer adds into 16 independent lanes: one-cycle latency, so the loop
/// waits on memory, not on its own arithmetic (a float sum in 8 lanes waits out the adder's
/// 4-cycle latency per 32 bytes, about 8 bytes per cycle per core: near what a large cache
/// delivers).
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    use rayon::prelude::*;
    let n = bytes / 8;
    // Memory like the weights' panels (an anonymous map advised to use huge pages: on 4 KiB
    // pages the hardware prefetchers stop at every page boundary, and the probe would
    // under-report what a decode step streams).
    let mut draft = crate::kernels::panel::Draft::new(n * 8);
    let bytes = draft.bytes();
    // SAFETY: the buffer is 64-byte aligned and at least `n * 8` bytes; any bits are a `u64`.
    let buf: &mut [u64] = unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), n) };
    for (i, v) in buf.iter_mut().enumerate() {
        *v = i as u64 % 7;
    }
    let buf: &[u64] = buf;
    let mut best = f64::MAX;
    let mut sink = 0u64;
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 15)
            .map(|c| {
                let mut acc = [0u64; 16];
                for ch in c.chunks_exact(16) {
                    for k in 0..16 {
                        acc[k] = acc[k].wrapping_add(ch[k]);
                    }
                }
                acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
            })
            .reduce(|| 0, u64::wrapping_add);
        best = best.min(t0.elapsed().as_secs_f64());
        sink = sink.wrapping_add(s);
    }
    std::hint::black_box(sink);
    (n * 8) as f64 / best
}

/// Bytes of weights streamed by one batch-1 decode step (every matrix once, plus the head).
pub fn decode_weight_bytes(model: &Model) -> usize {
    let w = model.weights();
    let mut n = 0;
    for b in &w.blocks {
        n += b.qkv.w.weight_bytes() + b.attn_out.w.weight_bytes();
        n += b.up.w.weight_bytes() + b.down.w.weight_bytes();
    }
    n + w.head.as_ref().map_or(&w.tok_emb, |h| &h.w).weight_bytes()
}

/// Named shapes for synthetic benchmark models.
pub fn synthetic_config(name: &str) -> Result<ModelConfig> {
    let gpt2 = |n_layer, n_head, d_model| ModelConfig::gpt2(50257, n_layer, n_head, d_model, 1024);
    match name {
        "gpt2" | "gpt2-124m" => Ok(gpt2(12, 12, 768)),
        "gpt2-medium" => Ok(gpt2(24, 16, 1024)),
        "smollm2-135m" => Ok(ModelConfig {
            family: Family::Llama,
            vocab_size: 49152,
            n_layer: 30,
            n_head: 9,
            n_kv_head: 3,
            d_model: 576,
            d_ff: 1536,
            context_length: 8192,
            norm: NormKind::RmsNorm,
            norm_eps: 1e-5,
            norm_bias: false,
            linear_bias: false,
            activation: Activation::SwiGlu,
            positions: Positions::Rope {
                theta: 100000.0,
                style: RopeStyle::Interleaved,
            },
            tied_head: true,
            final_norm: true,
        }),
        other => Err(Error::config(
            "synthetic model",
            format!("`{other}` (known: gpt2-124m, gpt2-medium, smollm2-135m)"),
        )),
    }
}

/// A model of `cfg`'s shape with small pseudo-random f32 weights (for speed measurements only).
pub fn synthetic_model(cfg: ModelConfig) -> Result<Model> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let (c, ff) = (cfg.d_model, cfg.d_ff);
    let up_rows = if cfg.activation == Activation::SwiGlu {
        2 * ff
    } else {
        ff
    };
    let mut mat = |r: usize, k: usize| Matrix::from_vec(r, k, rand(r * k, 0.04));
    let norm = |c: usize| Norm {
        weight: vec![1.0; c],
        bias: cfg.norm_bias.then(|| vec![0.0; c]),
    };
    let bias = |n: usize| cfg.linear_bias.then(|| vec![0.0; n]);
    let blocks = (0..cfg.n_layer)
        .map(|_| Block {
            attn_norm: norm(c),
            qkv: Linear {
                w: mat(cfg.qkv_dim(), c),
                b: bias(cfg.qkv_dim()),
            },
            attn_out: Linear {
                w: mat(c, c),
                b: bias(c),
            },
            mlp_norm: norm(c),
            up: Linear {
                w: mat(up_rows, c),
                b: bias(up_rows),
            },
            down: Linear {
                w: mat(c, ff),
                b: bias(c),
            },
        })
        .collect();
    let weights = Weights {
        tok_emb: mat(cfg.vocab_size, c),
        pos_emb: (cfg.positions == Positions::Learned).then(|| mat(cfg.context_length, c)),
        blocks,
        final_norm: Some(norm(c)),
        head: None,
    };
    Model::new(cfg, weights)
}

/// Speed of one model on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub prefill_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens: usize,
    pub decode_tokens_per_s: f64,
}

/// Prefills `prompt_len` tokens in one forward call (passes of at most
/// [`crate::model::PASS_ROWS`] rows), then decodes `gen` tokens one at a time (greedy
/// over fixed ids, so the measurement is the model alone), with a KV cache of `kv`. Best of
/// `reps`.
pub fn measure(
    model: &Model,
    prompt_len: usize,
    gen: usize,
    reps: usize,
    kv: KvDtype,
) -> Result<Measurement> {
    let v = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 7919) % v).collect();
    let (mut best_p, mut best_d) = (Duration::MAX, Duration::MAX);
    let mut scratch = Scratch::default();
    for _ in 0..reps.max(1) {
        let positions = prompt_len + gen + 1;
        let mut cache = model.new_cache_with(positions, kv);
        cache.reserve(positions);
        let t0 = Instant::now();
        model.forward(&prompt, &mut cache, &mut scratch, Logits::Last, None)?;
        best_p = best_p.min(t0.elapsed());
        let t1 = Instant::now();
        for i in 0..gen {
            model.forward(
                &[(i as u32 * 31) % v],
                &mut cache,
                &mut scratch,
                Logits::Last,
                None,
            )?;
        }
        best_d = best_d.min(t1.elapsed());
    }
    Ok(Measurement {
        prefill_tokens: prompt_len,
        prefill_tokens_per_s: prompt_len as f64 / best_p.as_secs_f64(),
        decode_tokens: gen,
        decode_tokens_per_s: gen as f64 / best_d.as_secs_f64(),
    })
}

/// Bytes of KV cache held by `batch` sequences of `positions` positions each (keys and values
/// of `kv` for every layer).
pub fn kv_cache_bytes(model: &Model, positions: usize, batch: usize, kv: KvDtype) -> usize {
    let c = model.config();
    2 * c.n_layer * c.n_kv_head * c.head_dim() * kv.bytes() * positions * batch
}

/// Total decode tokens/s with `batch` sequences generating together (one batched forward per
/// step), each from a 1-token prompt, with KV caches of `kv`.
pub fn measure_batch(model: &Model, batch: usize, gen: usize, kv: KvDtype) -> Result<f64> {
    let mut b = Batch::new(model, None);
    for i in 0..batch {
        let params = GenerateParams {
            max_new_tokens: gen,
            sampler: SamplerConfig {
                seed: i as u64,
                ..SamplerConfig::greedy()
            },
            kv_cache: kv,
            ..GenerateParams::default()
        };
        b.add(
            vec![(i as u32 * 13) % model.config().vocab_size as u32],
            params,
        )?;
    }
    b.step()?; // prefill (one token each)
    let t0 = Instant::now();
    let mut tokens = 0usize;
    while !b.is_done() {
        tokens += b
            .step()?
            .iter()
            .filter(|(_, e)| matches!(e, crate::Event::Token { .. }))
            .count();
    }
    Ok(tokens as f64 / t0.elapsed().as_secs_f64())
}
