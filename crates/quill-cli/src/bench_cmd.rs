//! `quill bench`: decode and prefill speed, a batch sweep, the machine's read bandwidth and the
//! fraction of the decode roofline reached. Timings live here, never in tests.

use anyhow::Context;
use quill::{bench, KvDtype};
use serde_json::json;

use crate::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Benchmark a randomly initialised model of a named shape instead of a file:
    /// gpt2-124m, gpt2-medium or smollm2-135m (f32, or converted by --dtype).
    #[arg(long, conflicts_with = "model")]
    synthetic: Option<String>,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded for the decode measurement.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Comma-separated batch sizes for the batched-decode sweep (empty to skip).
    #[arg(long, default_value = "1,8")]
    batch: String,
    /// Repetitions (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How the KV caches store keys and values (f16: as llama.cpp's default cache).
    #[arg(long, value_name = "TYPE", value_parser = crate::kv_cache_parser(), ignore_case = true, default_value = "f32")]
    kv_cache: KvDtype,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let batches: Vec<usize> = a
        .batch
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("invalid --batch entry {s:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if batches.contains(&0) {
        anyhow::bail!("invalid --batch: sizes must be >= 1");
    }
    let t_load = std::time::Instant::now();
    let (model, name) = match &a.synthetic {
        Some(shape) => {
            let model = bench::synthetic_model(bench::synthetic_config(shape)?)?;
            match a.model.dtype {
                None => (model, format!("synthetic {shape} (f32)")),
                Some(d) => {
                    let mut w = model.weights().clone();
                    let what = format!("synthetic {shape}");
                    quill::load::dtype::convert_weights(&mut w, d, what.as_ref())?;
                    let model = quill::Model::new(model.config().clone(), w)?;
                    (model, format!("{what} ({d})"))
                }
            }
        }
        None => {
            let l = a.model.load()?;
            let i = &l.info;
            let dtype = if i.run_dtype == i.stored_dtype {
                i.stored_dtype.clone()
            } else {
                format!("{}, run as {}", i.stored_dtype, i.run_dtype)
            };
            let name = format!("{} ({}, {dtype})", i.path, i.format);
            (l.model, name)
        }
    };
    let load_s = t_load.elapsed().as_secs_f64();
    let ctx = model.config().context_length;
    if a.prompt_tokens == 0 || a.prompt_tokens + a.gen_tokens + 1 > ctx {
        anyhow::bail!(
            "--prompt-tokens {} + --gen-tokens {} must be positive and fit the context of {ctx}",
            a.prompt_tokens,
            a.gen_tokens
        );
    }
    let wbytes = bench::decode_weight_bytes(&model);
    let kv = a.kv_cache;
    let m = bench::measure(&model, a.prompt_tokens, a.gen_tokens, a.reps, kv)?;
    let mut sweep = Vec::new();
    for &b in &batches {
        sweep.push((b, bench::measure_batch(&model, b, a.gen_tokens, kv)?));
    }
    // Peak memory of the model's own work, read before the bandwidth probe allocates its buffer.
    let rss = peak_rss();
    // The largest set of caches alive at once: the decode run's one sequence over the prompt
    // and the generated tokens, or a batch run's sequences (a 1-token prompt each).
    let kv_bytes = batches
        .iter()
        .map(|&b| bench::kv_cache_bytes(&model, a.gen_tokens + 1, b, kv))
        .chain([bench::kv_cache_bytes(
            &model,
            a.prompt_tokens + a.gen_tokens + 1,
            1,
            kv,
        )])
        .max()
        .unwrap_or(0);
    // A buffer the size of the weights (at least 64 MiB): read from the level of the memory
    // hierarchy a decode step streams them from (on a machine whose last-level cache holds a
    // small model, that cache, not DRAM, sets its roofline).
    let probe = wbytes.max(64 << 20);
    let bw = bench::read_bandwidth(probe, 5);
    let roofline = bw / wbytes as f64;
    let threads = rayon::current_num_threads();
    if a.json {
        let v = json!({
            "model": name,
            "threads": threads,
            "simd": quill::kernels::simd_level(),
            "kv_cache": kv.as_str(),
            "read_bandwidth_gb_s": bw / 1e9,
            "read_bandwidth_probe_bytes": probe,
            "decode_weight_bytes": wbytes,
            "roofline_tokens_per_s": roofline,
            "prefill_tokens": m.prefill_tokens,
            "prefill_tokens_per_s": m.prefill_tokens_per_s,
            "decode_tokens": m.decode_tokens,
            "decode_tokens_per_s": m.decode_tokens_per_s,
            "roofline_fraction": m.decode_tokens_per_s / roofline,
            "batch_sweep": sweep.iter().map(|(b, t)| json!({"batch": b, "tokens_per_s": t})).collect::<Vec<_>>(),
            "load_seconds": load_s,
            "peak_rss_bytes": rss,
            "kv_cache_bytes_largest_run": kv_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model            {name}");
    println!(
        "threads / simd   {threads} / {}",
        quill::kernels::simd_level()
    );
    println!("kv cache         {kv}");
    println!(
        "read bandwidth   {:.1} GB/s (a {:.0} MB buffer: the weights' size, at least 64 MiB)",
        bw / 1e9,
        probe as f64 / 1e6
    );
    println!("weights/token    {:.1} MB", wbytes as f64 / 1e6);
    println!("roofline         {roofline:.1} tokens/s (bandwidth / weight bytes)");
    println!(
        "prefill          {:.1} tokens/s ({} tokens in one forward call, passes of at most {} rows)",
        m.prefill_tokens_per_s,
        m.prefill_tokens,
        quill::model::PASS_ROWS
    );
    println!(
        "decode           {:.1} tokens/s ({:.0}% of roofline)",
        m.decode_tokens_per_s,
        100.0 * m.decode_tokens_per_s / roofline
    );
    for (b, t) in &sweep {
        println!("batch {b:<3}        {t:.1} tokens/s total");
    }
    println!("load time        {:.3} s", load_s);
    if let Some(rss) = rss {
        let budget = (wbytes + kv_bytes) as f64;
        println!(
            "peak RSS         {:.1} MB ({:.2}× weights {:.1} MB + largest KV cache {:.1} MB)",
            rss as f64 / 1e6,
            rss as f64 / budget,
            wbytes as f64 / 1e6,
            kv_bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Peak resident set size from /proc (Linux); None elsewhere.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
