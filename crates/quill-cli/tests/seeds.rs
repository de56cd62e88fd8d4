//! The seed systems' own commands on their own files: nanoGPT's `sample.py` flags
//! (`quill sample`), HipGPT's `generate --run-name` (`quill generate`), llm.c `.bin` models and
//! tokenizers, and a Mini-LLM folder. Fixtures: fixtures/seed/ (fixtures/factory/seed_formats.py).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn quill_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quill"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("quill runs")
}

fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", err(&o));
    o
}

fn fails(o: Output, want: &[&str]) -> String {
    assert!(!o.status.success(), "succeeded: {}", out(&o));
    let e = err(&o);
    for w in want {
        assert!(e.contains(w), "missing {w:?} in {e}");
    }
    e
}

const DASHES: &str = "---------------\n";

/// sample.py's output: each sample (prompt included), a newline, 15 dashes.
fn samples(text: &str) -> Vec<String> {
    assert!(text.ends_with(DASHES), "{text:?}");
    text.split_terminator(&format!("\n{DASHES}"))
        .map(String::from)
        .collect()
}

#[test]
fn sample_resume_finds_ckpt_and_meta_like_sample_py() {
    let fx = fixtures();
    let args = [
        "sample",
        "--out_dir=models/nanogpt-bias-f32",
        "--start=ROMEO:",
        "--num_samples=3",
        "--max_new_tokens=25",
        "--seed=5",
        "--device=cpu",
        "--dtype=float32",
    ];
    let o = ok(quill_in(&fx, &args));
    assert!(
        err(&o).contains("Loading meta from data/shakespeare_char/meta.pkl"),
        "{}",
        err(&o)
    );
    assert!(
        !err(&o).contains("device="),
        "cpu/float32 are honoured silently"
    );
    let s = samples(&out(&o));
    assert_eq!(s.len(), 3);
    for x in &s {
        assert!(x.starts_with("ROMEO:"), "{x:?}");
        assert_eq!(x.chars().count(), "ROMEO:".len() + 25, "{x:?}");
    }
    assert_ne!(s[0], s[1]);
    // Sample i is drawn with seed + i.
    let one = ok(quill_in(
        &fx,
        &[
            "sample",
            "--out_dir=models/nanogpt-bias-f32",
            "--start=ROMEO:",
            "--num_samples=1",
            "--max_new_tokens=25",
            "--seed=6",
        ],
    ));
    assert_eq!(samples(&out(&one))[0], s[1]);
    let e = err(&one);
    assert!(
        e.contains("device=cuda") && e.contains("dtype=bfloat16"),
        "{e}"
    );
}

#[test]
fn sample_start_from_file_and_gpt2_fallback_with_endoftext() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, "JULIET:\n").unwrap();
    let start = format!("--start=FILE:{}", prompt.display());
    let o = ok(quill_in(
        &fx,
        &[
            "sample",
            "--out_dir=models/nanogpt-bias-f32",
            &start,
            "--num_samples=1",
            "--max_new_tokens=5",
        ],
    ));
    assert!(out(&o).starts_with("JULIET:\n"), "{}", out(&o));
    // config.dataset = openwebtext has no data/openwebtext/meta.pkl: GPT-2 BPE, as sample.py.
    let o = ok(quill_in(
        &fx,
        &[
            "sample",
            "--out_dir=models/gpt2-bpe-padded",
            "--start=<|endoftext|>",
            "--num_samples=2",
            "--max_new_tokens=6",
            "--temperature=0",
        ],
    ));
    assert!(
        err(&o).contains("No meta.pkl found, assuming GPT-2 encodings"),
        "{}",
        err(&o)
    );
    let s = samples(&out(&o));
    assert_eq!(s.len(), 2);
    assert!(s[0].starts_with("<|endoftext|>"), "{:?}", s[0]);
    assert_eq!(s[0], s[1], "temperature=0 is greedy");
}

#[test]
fn sample_errors_name_what_was_expected() {
    let fx = fixtures();
    fails(
        quill_in(&fx, &["sample", "--out_dir=no-such-out"]),
        &["out_dir=no-such-out", "no-such-out/ckpt.pt"],
    );
    fails(
        quill_in(&fx, &["sample", "--out_dir=data"]),
        &["no checkpoint at data/ckpt.pt"],
    );
    fails(
        quill_in(&fx, &["sample", "--max_tokens=5"]),
        &["unknown config key: max_tokens", "max_new_tokens"],
    );
    fails(quill_in(&fx, &["sample", "--top_k=-3"]), &["top_k"]);
    let dir = tempfile::tempdir().unwrap();
    let md = format!("--models_dir={}", dir.path().display());
    fails(
        quill_in(&fx, &["sample", "--init_from=gpt2-medium", &md]),
        &[
            "init_from=gpt2-medium",
            &dir.path().join("gpt2-medium").display().to_string(),
        ],
    );
    let o = ok(quill_in(&fx, &["sample", "--help"]));
    assert!(out(&o).contains("--num_samples=10"), "{}", out(&o));
}

#[cfg(unix)]
#[test]
fn sample_init_from_gpt2_loads_from_the_models_dir() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(fx.join("models/gpt2-bpe-padded"), dir.path().join("gpt2")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_quill"))
        .current_dir(&fx)
        .env("QUILL_MODELS_DIR", dir.path())
        .args([
            "sample",
            "--init_from=gpt2",
            "--start=Hello",
            "--num_samples=1",
            "--max_new_tokens=4",
        ])
        .output()
        .unwrap();
    let o = ok(o);
    assert!(out(&o).starts_with("Hello"), "{}", out(&o));
    assert_eq!(samples(&out(&o)).len(), 1);
}

fn hip_dir() -> PathBuf {
    fixtures().join("seed/hipgpt")
}

#[test]
fn hipgpt_run_name_resolves_latest_and_steps_with_hipgpt_output() {
    let d = hip_dir();
    let greedy = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--run-name",
            "tiny",
            "--prompt",
            "First Citizen:",
            "--temp",
            "0",
        ];
        a.extend_from_slice(extra);
        ok(quill_in(&d, &a))
    };
    let latest = greedy(&[]);
    let text = out(&latest);
    assert!(
        text.starts_with("Prompt: First Citizen:\nGenerated: "),
        "{text:?}"
    );
    assert!(
        err(&latest).contains("100 tokens"),
        "HipGPT default --num_tokens 100: {}",
        err(&latest)
    );
    assert_eq!(out(&greedy(&["--step", "200"])), text, "latest is step 200");
    assert_ne!(out(&greedy(&["--step", "100"])), text);
    // --checkpoints-dir from anywhere.
    let cp = d.join("checkpoints").display().to_string();
    let o = ok(quill_in(
        &fixtures(),
        &[
            "generate",
            "--run-name",
            "tiny",
            "--checkpoints-dir",
            &cp,
            "-p",
            "First Citizen:",
            "--temp",
            "0",
        ],
    ));
    assert_eq!(out(&o), text);
}

#[test]
fn hipgpt_stops_at_eos_id() {
    let d = hip_dir();
    let base = [
        "generate",
        "--run-name",
        "tiny",
        "-p",
        "First Citizen:",
        "--temp",
        "0",
        "--num_tokens",
        "8",
    ];
    let o = ok(quill_in(&d, &[&base[..], &["--logprobs", "0"]].concat()));
    let ids: Vec<u64> = out(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 8);
    let eos = ids[3].to_string();
    let o = ok(quill_in(&d, &[&base[..], &["--eos_id", &eos]].concat()));
    let e = err(&o);
    let first = ids.iter().position(|&i| i == ids[3]).unwrap() + 1;
    assert!(
        e.contains("finish: eos") && e.contains(&format!("{first} tokens")),
        "{e}"
    );
    fails(
        quill_in(&d, &[&base[..], &["--eos_id", "-2"]].concat()),
        &["--eos_id -2"],
    );
}

#[test]
fn hipgpt_errors_name_the_expected_paths() {
    let d = hip_dir();
    fails(
        quill_in(
            &d,
            &["generate", "--run-name", "tiny", "--step", "300", "-p", "x"],
        ),
        &[
            "checkpoints/tiny/tiny_step300_config.json",
            "steps present: 100, 200",
        ],
    );
    fails(
        quill_in(&d, &["generate", "--run-name", "nope", "-p", "x"]),
        &["checkpoints/nope", "runs in checkpoints: tiny"],
    );
    fails(
        quill_in(
            &d,
            &[
                "generate",
                "--run-name",
                "tiny",
                "-p",
                "x",
                "--max_seq_len",
                "17",
            ],
        ),
        &["--max_seq_len 17", "max_seq_len is 16"],
    );
    // A config naming a missing weights file, and weights whose header disagrees.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("checkpoints/tiny");
    std::fs::create_dir_all(&run).unwrap();
    let src = d.join("checkpoints/tiny");
    for f in [
        "tokenizer.json",
        "tiny_step100.bin",
        "tiny_step100_config.json",
    ] {
        std::fs::copy(src.join(f), run.join(f)).unwrap();
    }
    let cfg_path = run.join("tiny_step100_config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("tiny_step100.bin", "tiny_step999.bin"),
    )
    .unwrap();
    let args = [
        "generate",
        "--run-name",
        "tiny",
        "--step",
        "100",
        "-p",
        "First",
    ];
    fails(
        quill_in(tmp.path(), &args),
        &["checkpoint.latest", "tiny_step999.bin", "does not exist"],
    );
    std::fs::write(&cfg_path, &cfg).unwrap();
    let mut w = std::fs::read(run.join("tiny_step100.bin")).unwrap();
    w[0] ^= 1;
    std::fs::write(run.join("tiny_step100.bin"), &w).unwrap();
    fails(
        quill_in(tmp.path(), &args),
        &["tiny_step100.bin", "header `V`", "config says"],
    );
    fails(
        quill_in(
            tmp.path(),
            &["generate", "--run-name", "tiny", "-p", "First"],
        ),
        &["no latest_config.json", "steps present: 100"],
    );
}

#[test]
fn llmc_fp32_and_bf16_models_generate_the_same_text() {
    let d = fixtures().join("seed/llmc");
    let run = |m: &str| {
        ok(quill_in(
            &d,
            &[
                "generate",
                "-m",
                m,
                "-p",
                "Hello world",
                "-n",
                "12",
                "-t",
                "0",
            ],
        ))
    };
    let a = out(&run("gpt2_tiny.bin"));
    assert!(a.starts_with("Hello world"), "{a}");
    assert_eq!(out(&run("gpt2_tiny_bf16.bin")), a);
    let info = out(&ok(quill_in(&d, &["info", "-m", "gpt2_tiny_bf16.bin"])));
    assert!(
        info.contains("llm.c model .bin (version 5)") && info.contains("llm.c tokenizer.bin"),
        "{info}"
    );
    // The tokenizer file on its own.
    let o = ok(quill_in(
        &d,
        &[
            "generate",
            "-m",
            "gpt2_tiny.bin",
            "--tokenizer",
            "gpt2_tokenizer.bin",
            "-p",
            "Hello world",
            "-n",
            "12",
            "-t",
            "0",
        ],
    ));
    assert_eq!(out(&o), a);
}

#[test]
fn llmc_mismatched_headers_are_errors() {
    let d = fixtures().join("seed/llmc");
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(d.join("gpt2_tiny.bin")).unwrap();
    let cases: [(&str, Vec<u8>, &[&str]); 3] = [
        (
            "short.bin",
            good[..good.len() - 4].to_vec(),
            &["short.bin", "expected maxT 4"],
        ),
        (
            "long.bin",
            [&good[..], &[0u8; 4][..]].concat(),
            &["long.bin", "4 bytes follow"],
        ),
        (
            "v4.bin",
            [&good[..4], &4i32.to_le_bytes()[..], &good[8..]].concat(),
            &["version 4"],
        ),
    ];
    for (name, bytes, want) in cases {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
        fails(quill_in(tmp.path(), &["info", "-m", name]), want);
    }
}

#[test]
fn minillm_folder_with_its_tokenizer_generates_text() {
    let d = fixtures().join("seed/minillm");
    let o = ok(quill_in(&d, &["info", "-m", "."]));
    assert!(
        out(&o).contains("Mini-LLM ckpt.pt") && out(&o).contains("Hugging Face tokenizers"),
        "{}",
        out(&o)
    );
    let run = || {
        ok(quill_in(
            &d,
            &[
                "generate",
                "-m",
                "ckpt.pt",
                "-p",
                "Once upon a time",
                "-n",
                "10",
                "-s",
                "3",
            ],
        ))
    };
    let a = out(&run());
    assert!(
        a.starts_with("Once upon a time") && a.len() > "Once upon a time".len() + 1,
        "{a:?}"
    );
    assert_eq!(out(&run()), a);
}
