//! Each processor on tiny hand-made inputs with exact expected outputs; the selector's edge
//! cases; statistical checks that seeded draws follow the filtered distribution.

use super::*;

const NO_HISTORY: History<'static> = History {
    prompt: &[],
    generated: &[],
};

fn cands(logits: &[f32]) -> Candidates {
    let mut c = Candidates::default();
    c.reset_from(logits);
    c
}

/// (id, logit) pairs left, in id order.
fn left(c: &Candidates) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = c.items().iter().map(|x| (x.id, x.logit)).collect();
    v.sort_by_key(|x| x.0);
    v
}

fn ids(c: &Candidates) -> Vec<u32> {
    left(c).into_iter().map(|x| x.0).collect()
}

#[test]
fn repetition_penalty_divides_positive_multiplies_negative_once_per_token() {
    let mut c = cands(&[2.0, -1.0, 4.0, 1.0]);
    let h = History {
        prompt: &[0, 0, 1],
        generated: &[1, 0],
    };
    RepetitionPenalty::new(2.0, None).apply(&mut c, &h);
    assert_eq!(left(&c), vec![(0, 1.0), (1, -2.0), (2, 4.0), (3, 1.0)]);
    // A look-back window of 1 sees only the last token (0).
    let mut c = cands(&[2.0, -1.0, 4.0, 1.0]);
    RepetitionPenalty::new(2.0, Some(1)).apply(&mut c, &h);
    assert_eq!(left(&c), vec![(0, 1.0), (1, -1.0), (2, 4.0), (3, 1.0)]);
}

#[test]
fn presence_and_frequency_count_accepted_tokens() {
    let mut p = PresenceFrequency::new(0.5, 0.25);
    for t in [2, 2, 3] {
        p.accept(t);
    }
    let mut c = cands(&[1.0, 1.0, 1.0, 1.0]);
    p.apply(&mut c, &NO_HISTORY);
    assert_eq!(left(&c), vec![(0, 1.0), (1, 1.0), (2, 0.0), (3, 0.25)]);
    p.reset();
    let mut c = cands(&[1.0, 1.0, 1.0, 1.0]);
    p.apply(&mut c, &NO_HISTORY);
    assert_eq!(left(&c), vec![(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
}

#[test]
fn no_repeat_ngram_bans_completions_of_seen_ngrams() {
    // Sequence 5 6 7 5 6: the 3-gram (5 6 7) exists, so after "5 6" token 7 is banned.
    let h = History {
        prompt: &[5, 6, 7],
        generated: &[5, 6],
    };
    let mut c = cands(&[0.0; 8]);
    NoRepeatNgram::new(3).apply(&mut c, &h);
    let banned: Vec<u32> = left(&c)
        .into_iter()
        .filter(|x| x.1 == f32::NEG_INFINITY)
        .map(|x| x.0)
        .collect();
    assert_eq!(banned, vec![7]);
    // n = 1 bans every token already present.
    let mut c = cands(&[0.0; 8]);
    NoRepeatNgram::new(1).apply(&mut c, &h);
    assert_eq!(
        left(&c).iter().filter(|x| x.1 == f32::NEG_INFINITY).count(),
        3
    );
}

#[test]
fn logit_bias_adds_and_bans() {
    let mut c = cands(&[1.0, 2.0, 3.0]);
    LogitBias {
        bias: vec![(0, 5.0), (9, 1.0)],
        banned: vec![2],
    }
    .apply(&mut c, &NO_HISTORY);
    assert_eq!(left(&c), vec![(0, 6.0), (1, 2.0), (2, f32::NEG_INFINITY)]);
}

#[test]
fn temperature_scales() {
    let mut c = cands(&[1.0, -2.0]);
    Temperature(0.5).apply(&mut c, &NO_HISTORY);
    assert_eq!(left(&c), vec![(0, 2.0), (1, -4.0)]);
}

#[test]
fn top_k_keeps_ties_at_the_kth_value() {
    let mut c = cands(&[1.0, 3.0, 2.0, 3.0, 2.0, 0.0]);
    TopK(2).apply(&mut c, &NO_HISTORY);
    assert_eq!(ids(&c), vec![1, 3]);
    let mut c = cands(&[1.0, 3.0, 2.0, 3.0, 2.0, 0.0]);
    TopK(3).apply(&mut c, &NO_HISTORY);
    assert_eq!(ids(&c), vec![1, 2, 3, 4], "both 2.0s tie with the 3rd");
    let mut c = cands(&[1.0, 2.0]);
    TopK(5).apply(&mut c, &NO_HISTORY);
    assert_eq!(ids(&c), vec![0, 1]);
}

/// The one-pass selection on a vocabulary-sized set in the orders that make a heap work
/// hardest (ascending: every candidate enters it) or least, and at random.
#[test]
fn top_k_selection_on_a_large_vocabulary_in_any_order() {
    let n = 50_257usize;
    let mut state = 99u64;
    let random: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 20.0 - 10.0
        })
        .collect();
    let ascending: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
    let descending: Vec<f32> = ascending.iter().rev().copied().collect();
    for (name, logits) in [
        ("random", random),
        ("ascending", ascending),
        ("descending", descending),
    ] {
        for k in [1usize, 40, 200, n - 1] {
            let mut fast = cands(&logits);
            fast.keep_top(k);
            let mut slow = cands(&logits);
            slow.truncate_sorted(k);
            assert_eq!(fast.items(), slow.items(), "{name}, k = {k}");
        }
    }
}

#[test]
fn top_k_selection_equals_sorting_everything() {
    // Many ties (logits on a coarse grid), -inf and -0.0/0.0 among them; every k.
    let mut state = 12345u64;
    let logits: Vec<f32> = (0..300)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match i % 37 {
                0 => f32::NEG_INFINITY,
                1 => -0.0,
                _ => ((state >> 40) % 23) as f32 - 11.0,
            }
        })
        .collect();
    for k in [1, 2, 5, 17, 100, 299, 300, 301] {
        let mut fast = cands(&logits);
        fast.keep_top(k);
        let mut slow = cands(&logits);
        slow.sort();
        if k < slow.len() {
            let kth = slow.items()[k - 1].logit;
            slow.retain_sorted(|i, c| i < k || c.logit >= kth);
        }
        let ordered = |c: &Candidates| -> Vec<(u32, u32)> {
            c.items()
                .iter()
                .map(|x| (x.id, x.logit.to_bits()))
                .collect()
        };
        if k < logits.len() {
            assert_eq!(ordered(&fast), ordered(&slow), "k = {k}");
            assert!(fast.is_sorted());
        } else {
            assert_eq!(ids(&fast), ids(&slow), "k = {k}");
        }
    }
}

#[test]
fn top_p_keeps_the_token_that_crosses_the_boundary() {
    let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
    for (p, want) in [
        (0.4, vec![0]),
        (0.5, vec![0]),
        (0.6, vec![0, 1]),
        (0.85, vec![0, 1, 2]),
        (1.0, vec![0, 1, 2]),
    ] {
        let mut c = cands(&l);
        TopP::new(p).apply(&mut c, &NO_HISTORY);
        assert_eq!(ids(&c), want, "p = {p}");
    }
    // A tiny p still keeps the most likely token.
    let mut c = cands(&l);
    TopP::new(1e-9).apply(&mut c, &NO_HISTORY);
    assert_eq!(ids(&c), vec![0]);
}

#[test]
fn min_p_drops_tokens_below_the_scaled_top_probability() {
    // probs 0.5, 0.3, 0.15, 0.05: min_p 0.4 → threshold 0.2.
    let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
    let mut c = cands(&l);
    MinP::new(0.4).apply(&mut c, &NO_HISTORY);
    assert_eq!(ids(&c), vec![0, 1]);
}

#[test]
fn typical_p_keeps_tokens_closest_to_the_entropy() {
    // probs 0.4, 0.3, 0.2, 0.1: entropy ≈ 1.2799; |surprisal − H| ≈ 0.364, 0.076, 0.330, 1.023.
    // Typical order: 1, 2, 0, 3; cumulative 0.3, 0.5, 0.9, 1.0.
    let l = [0.4f32.ln(), 0.3f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
    for (mass, want) in [(0.2, vec![1]), (0.4, vec![1, 2]), (0.6, vec![0, 1, 2])] {
        let mut c = cands(&l);
        TypicalP::new(mass).apply(&mut c, &NO_HISTORY);
        assert_eq!(ids(&c), want, "mass = {mass}");
    }
}

fn cfg(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> SamplerConfig {
    SamplerConfig {
        temperature,
        top_k,
        top_p,
        seed: 7,
        ..SamplerConfig::default()
    }
}

#[test]
fn temperature_zero_is_greedy_lowest_id_on_ties_and_uses_no_randomness() {
    let mut s = Sampler::new(cfg(0.0, None, None)).unwrap();
    assert_eq!(s.sample(&[1.0, 3.0, 3.0, -1.0], 4, &NO_HISTORY).unwrap(), 1);
    // Greedy still honours penalties: token 1 repeated is divided by 4 → token 2 wins.
    let mut s = Sampler::new(SamplerConfig {
        repetition_penalty: Some(4.0),
        ..SamplerConfig::greedy()
    })
    .unwrap();
    let h = History {
        prompt: &[1],
        generated: &[],
    };
    assert_eq!(s.sample(&[0.0, 4.0, 2.0], 3, &h).unwrap(), 2);
}

#[test]
fn padded_ids_are_never_sampled() {
    let mut s = Sampler::new(cfg(0.0, None, None)).unwrap();
    assert_eq!(s.sample(&[1.0, 2.0, 9.0], 2, &NO_HISTORY).unwrap(), 1);
    let mut s = Sampler::new(cfg(1.0, None, None)).unwrap();
    for _ in 0..200 {
        assert!(s.sample(&[0.0, 0.0, 50.0], 2, &NO_HISTORY).unwrap() < 2);
    }
}

#[test]
fn all_masked_is_an_error_not_a_guess() {
    let mut s = Sampler::new(SamplerConfig {
        banned: vec![0, 1, 2],
        ..cfg(1.0, None, None)
    })
    .unwrap();
    let e = s.sample(&[1.0, 2.0, 3.0], 3, &NO_HISTORY).unwrap_err();
    assert!(e.to_string().contains("masked every token"), "{e}");
    let mut g = Sampler::new(SamplerConfig::greedy()).unwrap();
    assert!(g.sample(&[f32::NAN, f32::NAN], 2, &NO_HISTORY).is_err());
}

#[test]
fn seeded_draws_are_repeatable_and_reset_restarts_them() {
    let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut s = Sampler::new(cfg(1.0, Some(20), Some(0.9))).unwrap();
    let a: Vec<u32> = (0..30)
        .map(|_| s.sample(&l, 50, &NO_HISTORY).unwrap())
        .collect();
    s.reset();
    let b: Vec<u32> = (0..30)
        .map(|_| s.sample(&l, 50, &NO_HISTORY).unwrap())
        .collect();
    assert_eq!(a, b);
    let mut other = Sampler::new(SamplerConfig {
        seed: 8,
        ..cfg(1.0, Some(20), Some(0.9))
    })
    .unwrap();
    let c: Vec<u32> = (0..30)
        .map(|_| other.sample(&l, 50, &NO_HISTORY).unwrap())
        .collect();
    assert_ne!(a, c);
}

/// Pearson chi-square statistic of observed counts against expected probabilities.
fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .zip(probs)
        .map(|(&o, &p)| {
            let e = p * n as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn draws_follow_the_filtered_distribution() {
    // probs 0.4 0.3 0.2 0.1 at temperature 1; top-p 0.8 keeps 0.4 0.3 0.2 → renormalised.
    let l = [0.4f32.ln(), 0.3f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
    let mut s = Sampler::new(cfg(1.0, None, Some(0.8))).unwrap();
    let n = 20_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&l, 4, &NO_HISTORY).unwrap() as usize] += 1;
    }
    assert_eq!(counts[3], 0);
    let want = [4.0 / 9.0, 3.0 / 9.0, 2.0 / 9.0];
    // 2 degrees of freedom: P(χ² > 13.8) ≈ 0.001. The seed is fixed, so this cannot flake.
    let chi = chi_square(&counts[..3], &want);
    assert!(chi < 13.8, "χ² = {chi}, counts {counts:?}");
    // Temperature 2 flattens: p ∝ sqrt(p).
    let mut s = Sampler::new(cfg(2.0, None, None)).unwrap();
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&l, 4, &NO_HISTORY).unwrap() as usize] += 1;
    }
    let r: Vec<f64> = [0.4f64, 0.3, 0.2, 0.1].iter().map(|p| p.sqrt()).collect();
    let z: f64 = r.iter().sum();
    let want: Vec<f64> = r.iter().map(|x| x / z).collect();
    let chi = chi_square(&counts, &want);
    assert!(
        chi < 16.3,
        "χ² = {chi} (3 dof, p = 0.001), counts {counts:?}"
    );
}

#[test]
fn logprobs_from_the_model_or_the_sampled_distribution() {
    let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
    let mut s = Sampler::new(cfg(0.0, None, None)).unwrap();
    let (t, lp) = s
        .sample_with_logprobs(&l, 3, &NO_HISTORY, 2, LogprobSource::Model)
        .unwrap();
    assert_eq!(t, 0);
    assert!((lp.logprob - 0.5f32.ln()).abs() < 1e-6);
    assert_eq!(lp.top.len(), 2);
    assert_eq!(lp.top[1].0, 1);
    assert!((lp.top[1].1 - 0.3f32.ln()).abs() < 1e-6);
    // After top-k 2 the sampled distribution is 0.5/0.8, 0.3/0.8.
    let mut s = Sampler::new(cfg(1.0, Some(2), None)).unwrap();
    let (t, lp) = s
        .sample_with_logprobs(&l, 3, &NO_HISTORY, 5, LogprobSource::Sampled)
        .unwrap();
    let want = if t == 0 { 0.5f32 / 0.8 } else { 0.3 / 0.8 };
    assert!((lp.logprob - want.ln()).abs() < 1e-6, "{lp:?}");
    assert_eq!(lp.top.len(), 2, "only surviving candidates are listed");
}

#[test]
fn invalid_values_are_rejected() {
    let bad = [
        cfg(-1.0, None, None),
        cfg(f32::NAN, None, None),
        cfg(1.0, Some(0), None),
        cfg(1.0, None, Some(0.0)),
        cfg(1.0, None, Some(1.5)),
        SamplerConfig {
            repetition_penalty: Some(0.0),
            ..SamplerConfig::default()
        },
        SamplerConfig {
            min_p: Some(2.0),
            ..SamplerConfig::default()
        },
        SamplerConfig {
            order: vec![Stage::TopK, Stage::TopK],
            ..SamplerConfig::default()
        },
    ];
    for c in bad {
        assert!(Sampler::new(c.clone()).is_err(), "{c:?}");
    }
    assert!(Stage::parse("top-k").is_ok());
    assert!(Stage::parse("top_k").is_err());
}

/// Greedy with no logit-editing stage takes the arg-max without candidates: the same token as
/// the chain's greedy selection (lowest id on ties, NaN masked, padding excluded), the same
/// error when nothing is left.
#[test]
fn greedy_fast_path_equals_the_chain() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut fast = Sampler::new(SamplerConfig::greedy()).unwrap();
    // A zero logit bias is a logit-editing stage that changes nothing: the full chain.
    let mut chain = Sampler::new(SamplerConfig {
        logit_bias: vec![(0, 0.0)],
        ..SamplerConfig::greedy()
    })
    .unwrap();
    assert_eq!(fast.stages().len() + 1, chain.stages().len());
    for case in 0..300 {
        let n = 1 + case % 40;
        let logits: Vec<f32> = (0..n)
            .map(|_| match rng.gen_range(0..10) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => f32::INFINITY,
                k => (k % 3) as f32, // many ties
            })
            .collect();
        let allowed = 1 + rng.gen_range(0..n);
        let a = fast.sample(&logits, allowed, &NO_HISTORY);
        let b = chain.sample(&logits, allowed, &NO_HISTORY);
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{logits:?} allowed {allowed}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{logits:?}: fast {a:?}, chain {b:?}"),
        }
    }
    assert!(fast.sample(&[], 0, &NO_HISTORY).is_err());
}
