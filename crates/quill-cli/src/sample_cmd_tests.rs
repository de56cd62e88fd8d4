//! Unit tests of `quill sample`'s settings parser.

use super::*;

fn parse(args: &[&str]) -> anyhow::Result<SampleConfig> {
    let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    SampleConfig::parse(&v, None)
}

#[test]
fn defaults_are_sample_py_defaults() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.init_from, InitFrom::Resume);
    assert_eq!(c.out_dir, PathBuf::from("out"));
    assert_eq!(c.start, "\n");
    assert_eq!((c.num_samples, c.max_new_tokens), (10, 500));
    assert_eq!((c.temperature, c.top_k, c.seed), (0.8, Some(200), 1337));
    assert_eq!(
        (c.device.as_str(), c.dtype.as_str(), c.compile),
        ("cuda", "bfloat16", false)
    );
    assert!(c.notes.iter().any(|n| n.contains("device=cuda")));
}

#[test]
fn key_value_flags_parse_like_the_configurator() {
    let c = parse(&[
        "--init_from=gpt2-xl",
        "--start='a\\nb'",
        "--num_samples=2",
        "--temperature=1",
        "--top_k=None",
        "--compile=True",
        "--device=cpu",
        "--dtype=float32",
        "--seed=7",
    ])
    .unwrap();
    assert_eq!(c.init_from, InitFrom::Gpt2("gpt2-xl".into()));
    assert_eq!(c.start, "a\nb");
    assert_eq!(
        (c.num_samples, c.temperature, c.top_k, c.seed),
        (2, 1.0, None, 7)
    );
    assert!(c.compile);
    // Unquoted text is kept as written (literal_eval fails, the string is used).
    assert_eq!(parse(&["--start=\\n"]).unwrap().start, "\\n");
    assert_eq!(parse(&["--start=FILE:p.txt"]).unwrap().start, "FILE:p.txt");
}

#[test]
fn bad_keys_and_values_are_errors() {
    for (args, want) in [
        (&["--topk=5"][..], "unknown config key: topk"),
        (&["--top_k"][..], "expected --key=value"),
        (&["--top_k=-1"][..], "non-negative"),
        (&["--temperature=hot"][..], "a number"),
        (&["--num_samples=0"][..], "at least 1"),
        (&["--compile=yes"][..], "True or False"),
        (&["--init_from=gpt3"][..], "init_from"),
        (&["--device=tpu"][..], "invalid device"),
        (&["--dtype=int8"][..], "invalid dtype"),
        (&["missing_config.py"][..], "missing_config.py"),
    ] {
        let e = format!("{:#}", parse(args).unwrap_err());
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let e = format!("{:#}", parse(&["--x=1"]).unwrap_err());
    assert!(e.contains("init_from, out_dir, start"), "{e}");
}

#[test]
fn config_files_set_known_keys_and_note_the_rest() {
    let dir = std::env::temp_dir().join(format!("quill-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cfg.py");
    std::fs::write(
        &p,
        "# comment\nout_dir = 'out-x'\nnum_samples = 3 # three\nbatch_size = 8\n",
    )
    .unwrap();
    let c = parse(&[p.to_str().unwrap(), "--num_samples=4"]).unwrap();
    assert_eq!((c.out_dir, c.num_samples), (PathBuf::from("out-x"), 4));
    assert!(c.notes.iter().any(|n| n.contains("ignoring `batch_size`")));
    std::fs::write(&p, "import os\n").unwrap();
    let e = format!("{:#}", parse(&[p.to_str().unwrap()]).unwrap_err());
    assert!(e.contains("cfg.py:1"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
