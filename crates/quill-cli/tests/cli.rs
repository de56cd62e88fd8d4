//! The `quill` binary end to end: flags, prompt sources, streaming output, errors, pipes.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn quill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quill"))
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

fn run(args: &[&str]) -> Output {
    quill().args(args).output().expect("quill runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CHAR_MODEL: &str = "models/nanogpt-bias-f32/ckpt.pt";

fn char_model() -> String {
    fixture(CHAR_MODEL).display().to_string()
}

#[test]
fn info_describes_a_nanogpt_checkpoint() {
    let o = run(&["info", "--model", &char_model()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    for want in [
        "nanoGPT ckpt.pt",
        "gpt2",
        "character-level (65 characters)",
        "f32",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    let o = run(&["info", "--json", "--model", &char_model()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["format"], "nanoGPT ckpt.pt");
}

#[test]
fn greedy_generation_is_repeatable_and_echoes_the_prompt() {
    let args = [
        "generate",
        "--model",
        &char_model(),
        "--prompt",
        "ROMEO:",
        "-n",
        "40",
        "-t",
        "0",
    ];
    let a = run(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let text = stdout(&a);
    assert!(text.starts_with("ROMEO:"), "{text:?}");
    assert_eq!(text.chars().count(), "ROMEO:".len() + 40 + 1, "{text:?}"); // + final newline
    assert!(stderr(&a).contains("40 tokens"), "{}", stderr(&a));
    assert_eq!(stdout(&run(&args)), text);
}

#[test]
fn same_seed_same_text_and_the_seed_is_reported_when_chosen() {
    let base = [
        "generate",
        "--model",
        &char_model(),
        "--prompt",
        "A",
        "-n",
        "30",
    ];
    let with_seed = |s: &str| {
        let mut v = base.to_vec();
        v.extend(["--seed", s]);
        stdout(&run(&v))
    };
    assert_eq!(with_seed("42"), with_seed("42"));
    assert_ne!(with_seed("42"), with_seed("43"));
    let o = run(&base);
    assert!(
        stderr(&o).contains("(chosen; pass --seed to repeat)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn prompt_from_stdin_file_and_leading_dash() {
    let mut child = quill()
        .args([
            "generate",
            "--model",
            &char_model(),
            "-p",
            "-",
            "-n",
            "5",
            "-t",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"KING:").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(stdout(&o).starts_with("KING:"), "{}", stdout(&o));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("prompt.txt");
    std::fs::write(&f, "QUEEN:").unwrap();
    let at = format!("@{}", f.display());
    let o = run(&[
        "generate",
        "--model",
        &char_model(),
        "-p",
        &at,
        "-n",
        "5",
        "-t",
        "0",
    ]);
    assert!(stdout(&o).starts_with("QUEEN:"), "{}", stdout(&o));

    let o = run(&[
        "generate",
        "--model",
        &char_model(),
        "--prompt",
        "-- so",
        "-n",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("-- so"));
}

#[test]
fn invalid_values_are_rejected_with_a_message() {
    for (flag, val, want) in [
        ("--temperature", "-1", "temperature"),
        ("--temperature", "nan", "temperature"),
        ("--top-k", "-3", "top-k"),
        ("--top-p", "1.5", "top_p"),
        ("--max-new-tokens", "-2", "max-new-tokens"),
    ] {
        let o = run(&["generate", "--model", &char_model(), "-p", "A", flag, val]);
        assert!(!o.status.success(), "{flag} {val} accepted");
        assert!(stderr(&o).contains(want), "{flag} {val}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "nothing generated for {flag} {val}");
    }
}

#[test]
fn bad_model_paths_and_prompts_fail_cleanly() {
    let o = run(&["generate", "--model", "/nope/ckpt.pt", "-p", "A"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nope/ckpt.pt"), "{}", stderr(&o));
    let o = run(&["generate", "--model", &char_model(), "-p", "日本"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("'日'"), "{}", stderr(&o));
    let o = run(&["generate", "--model", &char_model(), "-p", ""]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let mut child = quill()
        .args([
            "generate",
            "--model",
            &char_model(),
            "-p",
            "A",
            "-n",
            "100000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 16];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn stop_strings_logprobs_beams_and_multiple_sequences() {
    let m = char_model();
    let greedy = |extra: &[&str]| {
        let mut v = vec!["generate", "--model", &m, "-p", "ROMEO:", "-t", "0"];
        v.extend_from_slice(extra);
        run(&v)
    };
    let full = stdout(&greedy(&["-n", "40"]));
    let stop: String = full.chars().skip(15).take(3).collect();
    let o = greedy(&["-n", "40", "--stop", &stop]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cut = full.find(&stop).unwrap();
    assert_eq!(stdout(&o), format!("{}\n", &full[..cut]));
    assert!(stderr(&o).contains("finish: stop"), "{}", stderr(&o));

    let o = greedy(&["--logprobs", "2", "-n", "3"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "3 tokens and a summary");
    assert_eq!(lines[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert!(lines[0]["logprob"].as_f64().unwrap() <= 0.0);
    assert_eq!(lines[3]["finish_reason"], "length");

    let o = greedy(&["--num-beams", "3", "--num-return-sequences", "2", "-n", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("---------------").count(), 2);
    assert!(stderr(&o).contains("beam 1"));

    // Sequence i of a multi-sequence run is the single run with seed + i.
    let sample = |extra: &[&str]| {
        let mut v = vec![
            "generate",
            "--model",
            &m,
            "-p",
            "A",
            "-n",
            "20",
            "--no-echo",
        ];
        v.extend_from_slice(extra);
        stdout(&run(&v))
    };
    let both = sample(&["--seed", "5", "--num-return-sequences", "2"]);
    let second = sample(&["--seed", "6"]);
    assert!(
        both.ends_with(&format!("{second}---------------\n")),
        "{both:?} / {second:?}"
    );
}

#[test]
fn invalid_sampling_flags_are_rejected() {
    let m = char_model();
    for (args, want) in [
        (vec!["--min-p", "2"], "min_p"),
        (vec!["--typical-p", "0"], "typical_p"),
        (vec!["--repetition-penalty", "-1"], "repetition_penalty"),
        (vec!["--sampler-order", "top-k,bogus"], "bogus"),
        (vec!["--logit-bias", "12"], "ID=BIAS"),
        (vec!["--max-time", "-3"], "max-time"),
        (vec!["--no-repeat-ngram-size", "0"], "no-repeat-ngram-size"),
        (vec!["--min-new-tokens", "9", "-n", "3"], "min_new_tokens"),
    ] {
        let mut v = vec!["generate", "--model", &m, "-p", "A"];
        v.extend_from_slice(&args);
        let o = run(&v);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn the_embedded_model_generates_from_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let o = quill()
        .current_dir(dir.path())
        .args(["generate", "--prompt", "ROMEO:", "-n", "200", "--seed", "7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("ROMEO:"), "{text:?}");
    assert_eq!(text.chars().count(), "ROMEO:".len() + 200 + 1);
    // Shakespeare-like: mostly letters and spaces, several lines.
    let letters = text
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .count();
    assert!(letters * 10 > text.len() * 7, "{text}");
    assert!(text.lines().count() >= 3, "{text}");
    let info = quill()
        .current_dir(dir.path())
        .arg("info")
        .output()
        .unwrap();
    assert!(stdout(&info).contains("embedded"), "{}", stdout(&info));
}

#[test]
fn prompts_file_batches_equal_individual_runs() {
    let m = char_model();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("prompts.jsonl");
    std::fs::write(
        &f,
        "{\"prompt\": \"ROMEO:\", \"seed\": 3}\n{\"prompt\": \"K\", \"num_samples\": 2, \"seed\": 9, \"max_new_tokens\": 12}\n",
    )
    .unwrap();
    let o = run(&[
        "generate",
        "--model",
        &m,
        "--prompts-file",
        f.to_str().unwrap(),
        "-n",
        "25",
        "--batch-size",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (row, (prompt, seed, n)) in
        rows.iter()
            .zip([("ROMEO:", "3", "25"), ("K", "9", "12"), ("K", "10", "12")])
    {
        let alone = run(&[
            "generate",
            "--model",
            &m,
            "-p",
            prompt,
            "--seed",
            seed,
            "-n",
            n,
            "--no-echo",
        ]);
        assert_eq!(
            format!("{}\n", row["text"].as_str().unwrap()),
            stdout(&alone),
            "{row}"
        );
        assert_eq!(row["prompt"], prompt);
    }
    std::fs::write(&f, "{\"prompt\": 1}\n").unwrap();
    let o = run(&[
        "generate",
        "--model",
        &m,
        "--prompts-file",
        f.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("line 1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn thread_count_does_not_change_the_text() {
    // A 50304-token head is large enough for the matmul to split across threads.
    let m = fixture("models/gpt2-bpe-padded/ckpt.pt")
        .display()
        .to_string();
    let with_threads = |n: &str| {
        let o = run(&[
            "--threads",
            n,
            "generate",
            "--model",
            &m,
            "-p",
            "Hello",
            "-n",
            "60",
            "--seed",
            "11",
            "-t",
            "1.0",
            "--top-k",
            "0",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    let one = with_threads("1");
    assert_eq!(one, with_threads("2"));
    assert_eq!(one, with_threads("3"));
    let o = run(&["--threads", "0", "info"]);
    assert!(!o.status.success() && stderr(&o).contains("--threads"));
}

/// Romeo and Juliet II.ii (in tiny Shakespeare, the embedded model's training text).
const PASSAGE: &str = "ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.
Arise, fair sun, and kill the envious moon,
Who is already sick and pale with grief,
That thou her maid art far more fair than she:
Be not her maid, since she is envious;
";

/// A temporary folder holding `name` with `text`, and the file's path.
fn text_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p.display().to_string())
}

#[test]
fn perplexity_scores_a_file_as_text_and_json() {
    let (_dir, f) = text_file("passage.txt", PASSAGE);
    let n = PASSAGE.chars().count() - 1;
    let o = run(&["perplexity", "--file", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.starts_with("perplexity: "), "{s}");
    assert!(s.contains(&format!("over {n} tokens")), "{s}");
    // The embedded file is bf16; its GPT-2 Conv1D matrices go into the kernels' panels as
    // they are stored (transposed, still bf16).
    assert!(
        s.contains("stride 64") && s.contains("weights bf16, KV cache f32)"),
        "{s}"
    );
    let ppl: f64 = s["perplexity: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .expect("a number");
    assert!(ppl > 1.0 && ppl < 10.0, "{s}");

    let o = run(&[
        "perplexity",
        "--file",
        &f,
        "--json",
        "--context",
        "64",
        "--stride",
        "16",
        "--dtype",
        "q8_0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["tokens_scored"], n);
    assert_eq!(
        (v["context"].as_u64(), v["stride"].as_u64()),
        (Some(64), Some(16))
    );
    assert_eq!(v["windows"], (n + 1 - 64).div_ceil(16) + 1);
    assert_eq!(
        (v["stored_dtype"].as_str(), v["run_dtype"].as_str()),
        (Some("bf16"), Some("q8_0"))
    );
    let (p, nll) = (
        v["perplexity"].as_f64().unwrap(),
        v["nll_mean"].as_f64().unwrap(),
    );
    assert!(
        (p - nll.exp()).abs() < 1e-9 * p && p > 1.0 && p < 10.0,
        "{v}"
    );
}

#[test]
fn perplexity_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt").display().to_string();
    let (_d1, empty) = text_file("empty.txt", "");
    let (_d2, one) = text_file("one.txt", "A");
    let (_d3, ok) = text_file("ok.txt", PASSAGE);
    let (_d4, alien) = text_file("alien.txt", "naïve € text");
    let cases: [(&[&str], &[&str]); 9] = [
        (&["--file", &missing], &["nope.txt", "cannot read"]),
        (&["--file", &empty], &["empty.txt", "empty"]),
        (&["--file", &one], &["1 token", "at least 2"]),
        (&["--file", &ok, "--context", "0"], &["--context 0", "128"]),
        (&["--file", &ok, "--context", "1"], &["--context 1"]),
        (
            &["--file", &ok, "--context", "129"],
            &["--context 129", "128"],
        ),
        (&["--file", &ok, "--stride", "0"], &["--stride 0", "127"]),
        (
            &["--file", &ok, "--context", "32", "--stride", "32"],
            &["--stride 32", "between 1 and 31"],
        ),
        (&["--file", &alien], &["alien.txt"]),
    ];
    for (args, want) in cases {
        let o = run(&[&["perplexity"], args].concat());
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        for w in want {
            assert!(e.contains(w), "{args:?}: missing {w:?} in {e}");
        }
    }
    let o = run(&["perplexity"]);
    assert!(!o.status.success() && stderr(&o).contains("--file"));
}

#[test]
fn dtype_runs_generation_and_reports_itself() {
    let o = run(&[
        "generate", "--dtype", "q8_0", "-p", "ROMEO:", "-n", "20", "-t", "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ROMEO:"));
    assert_eq!(stdout(&o).chars().count(), "ROMEO:".len() + 20 + 1);
    let o = run(&["info", "--dtype", "Q4_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("run dtype: q4_0"), "{}", stdout(&o));
    let o = run(&["info", "--json", "--model", &char_model(), "--dtype", "f16"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        (v["stored_dtype"].as_str(), v["run_dtype"].as_str()),
        (Some("f32"), Some("f16"))
    );
}

#[test]
fn dtype_rejects_unknown_names_and_unquantizable_shapes() {
    let o = run(&["generate", "--dtype", "q9", "-n", "1"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("'q9'") && e.contains("f32, f16, bf16, q8_0, q4_0, q4_1"),
        "{e}"
    );
    // nanogpt-nobias-f16 is 48 wide: not whole blocks of 32.
    let m = fixture("models/nanogpt-nobias-f16/ckpt.pt")
        .display()
        .to_string();
    let o = run(&["generate", "--model", &m, "--dtype", "q4_0", "-n", "1"]);
    let e = stderr(&o);
    assert!(!o.status.success() && !e.contains("panicked"), "{e}");
    assert!(
        e.contains("tok_emb") && e.contains("[65, 48]") && e.contains("32"),
        "{e}"
    );
}

#[test]
fn kv_cache_flag_runs_generation_perplexity_and_bench() {
    let greedy = |kv: &str| {
        let o = run(&[
            "generate",
            "-p",
            "ROMEO:",
            "-n",
            "20",
            "-t",
            "0",
            "--kv-cache",
            kv,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let half = greedy("f16");
    assert!(half.starts_with("ROMEO:"), "{half}");
    assert_eq!(half.chars().count(), "ROMEO:".len() + 20 + 1);
    let (_dir, f) = text_file("passage.txt", PASSAGE);
    let o = run(&["perplexity", "--file", &f, "--json", "--kv-cache", "f16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["kv_cache"], "f16");
    let o = run(&[
        "bench",
        "--synthetic",
        "gpt2-124m",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "2",
        "--batch",
        "",
        "--reps",
        "1",
        "--json",
        "--kv-cache",
        "f16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["kv_cache"], "f16");
    // 7 positions × 12 layers × 768 × (key + value) × 2 bytes.
    assert_eq!(v["kv_cache_bytes_largest_run"], 7 * 12 * 768 * 2 * 2);
    let o = run(&["generate", "--kv-cache", "q8", "-n", "1"]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("'q8'") && e.contains("f16"),
        "{e}"
    );
}
