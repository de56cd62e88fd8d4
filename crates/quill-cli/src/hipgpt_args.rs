//! HipGPT's `generate` flags on `quill generate`.
//!
//! `quill generate --prompt "To be" --run-name shakespeare_v1 [--step 1500]` resolves
//! `checkpoints/<run>/latest_config.json` (or `<run>_step<N>_config.json`), loads the weights and
//! the HipGPT tokenizer it names, and accepts HipGPT's spellings: `--num_tokens`,
//! `--max_seq_len`, `--temp`, `--top_k`, `--top_p`, `--rep-penalty`, `--eos_id`. With
//! `--run-name`, HipGPT's defaults apply to every setting not given (100 tokens, window 256,
//! top-k 50, temperature 0.8, top-p 0.9, repetition penalty 1.1, no EOS id); the output is
//! HipGPT's `Prompt: ...` / `Generated: ...`, streamed token by token, and generation stops at
//! `--eos_id` (both as HipGPT's docs promise; its code printed after the loop and ran past EOS).
//! The window slides one token at a time as HipGPT's does (`--context-policy crop`).

use std::path::PathBuf;

use anyhow::bail;
use quill::{LoadedModel, Model};

use crate::sampling_args::{Policy, SamplingArgs};
use crate::ModelArgs;

/// HipGPT's defaults (its `generate` source; the older README table lists 50 / 32 / 5 / 1.0).
pub const NUM_TOKENS: usize = 100;
pub const MAX_SEQ_LEN: usize = 256;
pub const TOP_K: i64 = 50;
pub const TEMP: f32 = 0.8;
pub const TOP_P: f32 = 0.9;
pub const REP_PENALTY: f32 = 1.1;

#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "HipGPT compatibility")]
pub struct HipGptArgs {
    /// Generate from the HipGPT training run CHECKPOINTS_DIR/NAME/ (its latest_config.json, or
    /// NAME_stepN_config.json with --step); HipGPT's defaults then apply.
    #[arg(long = "run-name", value_name = "NAME", conflicts_with = "model")]
    pub run_name: Option<String>,
    /// With --run-name: the training step to load. [default: latest]
    #[arg(long, value_name = "N", requires = "run_name")]
    pub step: Option<u64>,
    /// With --run-name: the folder holding the runs. [default: checkpoints]
    #[arg(long, value_name = "DIR", requires = "run_name")]
    pub checkpoints_dir: Option<PathBuf>,
    /// HipGPT spelling of --max-new-tokens. [default with --run-name: 100]
    #[arg(
        id = "hip_num_tokens",
        long = "num_tokens",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub num_tokens: Option<i64>,
    /// Context window for generation; at most the model's max_seq_len. [default with
    /// --run-name: 256, or the model's max_seq_len if smaller]
    #[arg(
        id = "hip_max_seq_len",
        long = "max_seq_len",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub max_seq_len: Option<i64>,
    /// HipGPT spelling of --temperature. [default with --run-name: 0.8]
    #[arg(
        id = "hip_temp",
        long = "temp",
        value_name = "T",
        allow_negative_numbers = true
    )]
    pub temp: Option<f32>,
    /// HipGPT spelling of --top-k (0 disables). [default with --run-name: 50]
    #[arg(
        id = "hip_top_k",
        long = "top_k",
        value_name = "K",
        allow_negative_numbers = true
    )]
    pub top_k: Option<i64>,
    /// HipGPT spelling of --top-p. [default with --run-name: 0.9]
    #[arg(
        id = "hip_top_p",
        long = "top_p",
        value_name = "P",
        allow_negative_numbers = true
    )]
    pub top_p: Option<f32>,
    /// HipGPT spelling of --repetition-penalty. [default with --run-name: 1.1]
    #[arg(
        id = "hip_rep_penalty",
        long = "rep-penalty",
        value_name = "R",
        allow_negative_numbers = true
    )]
    pub rep_penalty: Option<f32>,
    /// HipGPT spelling of --eos-id; -1 disables. [default: -1]
    #[arg(
        id = "hip_eos_id",
        long = "eos_id",
        value_name = "ID",
        allow_negative_numbers = true
    )]
    pub eos_id: Option<i64>,
}

/// What a HipGPT run needs after loading.
pub struct HipRun {
    /// An explicit --max_seq_len.
    max_seq_len: Option<usize>,
}

/// Sets `slot` from the HipGPT spelling, refusing both spellings at once.
fn merge<T>(
    hip: Option<T>,
    slot: &mut Option<T>,
    names: (&str, &str),
    default: Option<T>,
) -> anyhow::Result<()> {
    match (hip, slot.is_some()) {
        (Some(_), true) => bail!(
            "--{} and --{} are the same setting: give one",
            names.0,
            names.1
        ),
        (Some(v), false) => *slot = Some(v),
        (None, false) => {
            if let Some(d) = default {
                *slot = Some(d);
            }
        }
        (None, true) => {}
    }
    Ok(())
}

impl HipGptArgs {
    /// Folds the HipGPT flags into the model and sampling arguments. Returns `Some` for a
    /// `--run-name` run.
    pub fn apply(
        &self,
        model: &mut ModelArgs,
        s: &mut SamplingArgs,
    ) -> anyhow::Result<Option<HipRun>> {
        let run = self.run_name.is_some();
        let num_tokens = match self.num_tokens {
            None => None,
            Some(n) if n >= 0 => Some(n as usize),
            Some(n) => bail!("invalid --num_tokens {n}: must be >= 0"),
        };
        merge(
            num_tokens,
            &mut s.max_new_tokens,
            ("num_tokens", "max-new-tokens"),
            run.then_some(NUM_TOKENS),
        )?;
        merge(
            self.temp,
            &mut s.temperature,
            ("temp", "temperature"),
            run.then_some(TEMP),
        )?;
        merge(
            self.top_k,
            &mut s.top_k,
            ("top_k", "top-k"),
            run.then_some(TOP_K),
        )?;
        merge(
            self.top_p,
            &mut s.top_p,
            ("top_p", "top-p"),
            run.then_some(TOP_P),
        )?;
        merge(
            self.rep_penalty,
            &mut s.repetition_penalty,
            ("rep-penalty", "repetition-penalty"),
            run.then_some(REP_PENALTY),
        )?;
        match self.eos_id {
            None | Some(-1) => {}
            Some(id) if id >= 0 && id <= i64::from(u32::MAX) => s.eos_id.push(id as u32),
            Some(id) => bail!("invalid --eos_id {id}: a token id, or -1 to disable"),
        }
        let max_seq_len = match self.max_seq_len {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => bail!("invalid --max_seq_len {n}: must be >= 1"),
        };
        let Some(name) = &self.run_name else {
            if max_seq_len.is_some() {
                bail!("--max_seq_len needs --run-name (quill's window is the model's context)");
            }
            return Ok(None);
        };
        let dir = self
            .checkpoints_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoints"));
        model.model = Some(quill::load::hipgpt_run_config(&dir, name, self.step)?);
        // HipGPT feeds the last max_seq_len tokens every step and trims long prompts.
        s.context_policy = Policy::Crop;
        s.truncate_prompt = true;
        Ok(Some(HipRun { max_seq_len }))
    }
}

impl HipRun {
    /// Narrows the model's window to --max_seq_len (HipGPT's host-side window). A window larger
    /// than the model's is an error when asked for, the model's own when it is the default.
    pub fn fit_window(&self, loaded: &mut LoadedModel) -> anyhow::Result<()> {
        let ctx = loaded.model.config().context_length;
        let window = match self.max_seq_len {
            Some(w) if w > ctx => bail!(
                "invalid --max_seq_len {w}: the model's max_seq_len is {ctx} (its position table \
                 has no rows beyond it)"
            ),
            Some(w) => w,
            None => MAX_SEQ_LEN.min(ctx),
        };
        if window < ctx {
            let mut cfg = loaded.model.config().clone();
            cfg.context_length = window;
            loaded.model = Model::new(cfg, loaded.model.weights().clone())?;
        }
        Ok(())
    }
}
