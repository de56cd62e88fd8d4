//! The architecture of a model, read from its checkpoint. One decoder-only transformer covers the
//! GPT-2 family (learned positions, LayerNorm, GELU) and the Llama family (RoPE, RMSNorm, SwiGLU,
//! grouped-query attention); every difference between them is a value here, not a code path
//! chosen by name.

use crate::error::{Error, Result};

/// Which family the checkpoint declared (for display; the forward pass reads the fields below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Llama,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
        }
    }
}

/// Normalisation layer type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * weight (+ bias)`.
    LayerNorm,
    /// `x / sqrt(mean(x²) + eps) * weight`.
    RmsNorm,
}

/// The feed-forward block's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · Φ(x)` with the exact error function (nanoGPT, PyTorch `nn.GELU()`).
    GeluExact,
    /// The tanh approximation (`gelu_new` in Hugging Face GPT-2, llm.c).
    GeluTanh,
    /// `max(0, x)` (HipGPT).
    Relu,
    /// SwiGLU: `down(silu(gate(x)) * up(x))` (Llama).
    SwiGlu,
}

/// How the two halves of each rotated pair are laid out in a head of Q and K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs are adjacent: (x[2i], x[2i+1]) — Meta's original Llama, Mini-LLM, GGUF `llama`.
    Interleaved,
    /// Pairs are split across halves: (x[i], x[i + d/2]) — Hugging Face `rotate_half`.
    HalfSplit,
}

/// Position information added to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Positions {
    /// A learned absolute position embedding table [context_length, d_model] (GPT-2).
    Learned,
    /// Rotary embeddings applied to Q and K (Llama).
    Rope { theta: f32, style: RopeStyle },
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    /// Rows of the embedding table (may be padded beyond the tokenizer's vocabulary).
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Key/value heads; `n_head % n_kv_head == 0` (grouped-query attention when smaller).
    pub n_kv_head: usize,
    pub d_model: usize,
    /// Hidden size of the feed-forward block.
    pub d_ff: usize,
    /// Longest sequence the model may attend over.
    pub context_length: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    /// Whether LayerNorms carry a bias (GPT-2 `bias=True`).
    pub norm_bias: bool,
    /// Whether the linear layers carry biases.
    pub linear_bias: bool,
    pub activation: Activation,
    pub positions: Positions,
    /// Whether the output head shares the token embedding matrix.
    pub tied_head: bool,
    /// Whether a norm is applied before the head (every family but HipGPT's).
    pub final_norm: bool,
}

impl ModelConfig {
    /// A GPT-2-family shape with GPT-2's conventions: learned positions, LayerNorm (eps 1e-5)
    /// with biases, biased linear layers, tanh GELU, 4× feed-forward, tied head. Loaders change
    /// what their format does differently with struct-update syntax.
    pub fn gpt2(
        vocab_size: usize,
        n_layer: usize,
        n_head: usize,
        d_model: usize,
        context_length: usize,
    ) -> Self {
        ModelConfig {
            family: Family::Gpt2,
            vocab_size,
            n_layer,
            n_head,
            n_kv_head: n_head,
            d_model,
            d_ff: 4 * d_model,
            context_length,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            norm_bias: true,
            linear_bias: true,
            activation: Activation::GeluTanh,
            positions: Positions::Learned,
            tied_head: true,
            final_norm: true,
        }
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    /// Width of the fused Q, K, V projection output.
    pub fn qkv_dim(&self) -> usize {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim()
    }

    /// Checks that the shape is self-consistent; `source` names where the values came from.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("d_model", self.d_model),
            ("d_ff", self.d_ff),
            ("context_length", self.context_length),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::config(field, "must be positive"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return Err(Error::config(
                "n_head",
                format!(
                    "d_model {} is not divisible by n_head {}",
                    self.d_model, self.n_head
                ),
            ));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(Error::config(
                "n_kv_head",
                format!(
                    "n_head {} is not a multiple of n_kv_head {}",
                    self.n_head, self.n_kv_head
                ),
            ));
        }
        if let Positions::Rope { theta, .. } = self.positions {
            if !self.head_dim().is_multiple_of(2) {
                return Err(Error::config("head_dim", "RoPE needs an even head size"));
            }
            if !(theta.is_finite() && theta > 0.0) {
                return Err(Error::config(
                    "rope_theta",
                    format!("{theta} is not positive"),
                ));
            }
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(Error::config(
                "norm_eps",
                format!("{} is not positive", self.norm_eps),
            ));
        }
        Ok(())
    }
}
