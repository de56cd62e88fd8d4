//! The model's parameters in quill's canonical layout, and the mapping from each checkpoint
//! family's tensor names and orientations into it.
//!
//! Canonical layout (all matrices `[out, in]`):
//! - `tok_emb` [vocab, C]; `pos_emb` [context, C] for learned positions;
//! - per block: `attn_norm`, `qkv` [(H + 2·KV)·hd, C] (Q rows, then K, then V), `attn_out` [C, C],
//!   `mlp_norm`, `up` [F, C] or, for SwiGLU, [2F, C] (gate rows then up rows), `down` [C, F];
//! - `final_norm`, and `head` [vocab, C] unless tied to `tok_emb`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::config::{Activation, ModelConfig, NormKind};
use crate::error::{Error, Result};
use crate::kernels::quant::{QuantMatrix, QuantPart};
use crate::kernels::{Matrix, Panels, WKind, WeightData, PANEL};
use crate::tensor::{DType, RawTensor, TensorStore};

/// A normalisation layer's parameters.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// A linear layer: `y = x·Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: Matrix,
    pub b: Option<Vec<f32>>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: Norm,
    pub qkv: Linear,
    pub attn_out: Linear,
    pub mlp_norm: Norm,
    pub up: Linear,
    pub down: Linear,
}

/// All parameters of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    pub tok_emb: Matrix,
    pub pos_emb: Option<Matrix>,
    pub blocks: Vec<Block>,
    pub final_norm: Option<Norm>,
    /// `None` when the head is tied to `tok_emb`.
    pub head: Option<Linear>,
}

impl Weights {
    /// Number of parameters (a tied head counted once).
    pub fn param_count(&self) -> usize {
        let lin = |l: &Linear| l.w.rows * l.w.cols + l.b.as_ref().map_or(0, Vec::len);
        let norm = |n: &Norm| n.weight.len() + n.bias.as_ref().map_or(0, Vec::len);
        let mut n = self.tok_emb.rows * self.tok_emb.cols;
        n += self.pos_emb.as_ref().map_or(0, |m| m.rows * m.cols);
        for b in &self.blocks {
            n += norm(&b.attn_norm) + lin(&b.qkv) + lin(&b.attn_out);
            n += norm(&b.mlp_norm) + lin(&b.up) + lin(&b.down);
        }
        n += self.final_norm.as_ref().map_or(0, norm);
        n += self.head.as_ref().map_or(0, lin);
        n
    }

    /// Interleaves every Q8_0 / Q4_0 / Q4_1 matrix for the integer kernels
    /// ([`crate::kernels::quant::packed`]): one repacked copy, the file pages released.
    pub fn interleave(&mut self) {
        let take = |m: &mut Matrix| {
            *m = std::mem::replace(m, Matrix::from_vec(0, 0, Vec::new())).interleaved()
        };
        take(&mut self.tok_emb);
        if let Some(h) = &mut self.head {
            take(&mut h.w);
        }
        for b in &mut self.blocks {
            for l in [&mut b.qkv, &mut b.attn_out, &mut b.up, &mut b.down] {
                take(&mut l.w);
            }
        }
    }

    /// Whether any matrix is borrowed straight from a memory-mapped file.
    pub fn any_mapped(&self) -> bool {
        std::iter::once(&self.tok_emb)
            .chain(self.blocks.iter().map(|b| &b.qkv.w))
            .any(|m| m.data.is_mapped())
    }
}

/// How a checkpoint names and orients its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// nanoGPT `model.py` names, nn.Linear orientation `[out, in]`.
    NanoGpt,
    /// Hugging Face `GPT2LMHeadModel` names (with or without `transformer.`), Conv1D `[in, out]`.
    HfGpt2,
    /// Hugging Face `LlamaForCausalLM` names, nn.Linear orientation, half-split RoPE.
    HfLlama,
    /// Meta / Mini-LLM Llama names, nn.Linear orientation, interleaved RoPE.
    MetaLlama,
    /// llama.cpp GGUF `llama` names (`blk.N.attn_q`, ...), `[out, in]`, interleaved RoPE;
    /// block-quantized matrices stay quantized.
    GgufLlama,
    /// llama.cpp GGUF `gpt2` names (`blk.N.attn_qkv`, `position_embd`, ...), `[out, in]`.
    GgufGpt2,
    /// HipGPT: GPT-2 names as its loader assigns them, every matrix `[in, out]` (the untied
    /// `lm_head.weight` too), no final norm when the config says so.
    HipGpt,
}

/// Orientation of a stored matrix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Orient {
    /// Stored `[out, in]`.
    OutIn,
    /// Stored `[in, out]` (GPT-2 Conv1D).
    InOut,
}

/// Reads tensors out of a store by name, checking shapes, and remembers which were used.
struct Fetch<'a> {
    store: &'a TensorStore,
    path: PathBuf,
    used: BTreeSet<String>,
}

impl<'a> Fetch<'a> {
    fn raw(&mut self, name: &str) -> Result<&'a RawTensor> {
        let t = self.store.get(name).ok_or_else(|| {
            Error::tensor(&self.path, name, "missing (the architecture needs it)")
        })?;
        t.check_bounds(&self.path, name)?;
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
            && !crate::kernels::quant::is_supported(t.dtype)
        {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("has dtype {}, expected a floating-point type", t.dtype),
            ));
        }
        self.used.insert(name.to_string());
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.store.get(name).is_some()
    }

    fn check_shape(&self, name: &str, t: &RawTensor, want: &[usize]) -> Result<()> {
        if t.shape != want {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("has shape {:?}, expected {:?}", t.shape, want),
            ));
        }
        Ok(())
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.raw(name)?;
        self.check_shape(name, t, &[len])?;
        t.to_f32()
    }

    fn opt_vector(&mut self, name: &str, len: usize, present: bool) -> Result<Option<Vec<f32>>> {
        if present {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A `[rows, cols]` = `[out, in]` matrix, transposing if stored `[in, out]`. Contiguous f32
    /// data in the canonical orientation is borrowed from the file rather than copied.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize, orient: Orient) -> Result<Matrix> {
        let t = self.raw(name)?;
        let stored = match orient {
            Orient::OutIn => [rows, cols],
            Orient::InOut => [cols, rows],
        };
        self.check_shape(name, t, &stored)?;
        if t.dtype.is_quantized() {
            // Block-quantized rows are used in place by the quantized kernels.
            return QuantPart::new(t.dtype, rows, cols, &t.bytes, t.offset)
                .filter(|_| orient == Orient::OutIn)
                .map(|p| Matrix::quantized(QuantMatrix::new(cols, vec![p])))
                .ok_or_else(|| {
                    Error::tensor(
                        &self.path,
                        name,
                        format!("{} data must be [out, in] whole-block rows", t.dtype),
                    )
                });
        }
        if orient == Orient::OutIn && t.dtype == DType::F32 && t.is_contiguous() {
            if let Some(data) = WeightData::try_map(&t.bytes, t.offset, rows * cols) {
                return Ok(Matrix { rows, cols, data });
            }
        }
        // f16 / bf16 stay 16-bit (borrowed from the file) and are widened row by row.
        if orient == Orient::OutIn
            && matches!(t.dtype, DType::F16 | DType::BF16)
            && t.is_contiguous()
            && cfg!(target_endian = "little")
        {
            let data = WeightData::Half {
                bytes: t.bytes.clone(),
                offset: t.offset,
                len: rows * cols,
                bf16: t.dtype == DType::BF16,
            };
            return Ok(Matrix { rows, cols, data });
        }
        // Stored [in, out] (Conv1D): straight into the kernels' panels, no transposed copy.
        let float = WKind::of(t.dtype).filter(|_| cfg!(target_endian = "little"));
        if let Some(kind) = float.filter(|_| orient == Orient::InOut && rows >= PANEL) {
            let len = rows * cols * kind.bytes();
            let src = t.bytes.as_slice().get(t.offset..t.offset + len);
            if let Some(src) = src.filter(|_| t.is_contiguous()) {
                let data = WeightData::Panel(Panels::build_transposed(kind, rows, cols, src));
                t.bytes.release(t.offset, len);
                return Ok(Matrix { rows, cols, data });
            }
        }
        let v = t.to_f32()?;
        // The copy replaces the file's bytes: hand a mapped file's pages back, so the resident
        // memory is the copy alone (a Hugging Face GPT-2's Conv1D matrices: 1.25 GB → see
        // BENCHMARKS.md).
        if t.is_contiguous() {
            if let Some(len) = t.dtype.bytes_for(t.numel()) {
                t.bytes.release(t.offset, len);
            }
        }
        let data = match orient {
            Orient::OutIn => v,
            Orient::InOut => transpose(&v, cols, rows),
        };
        Ok(Matrix::from_vec(rows, cols, data))
    }

    /// Several matrices stacked along the output dimension into one.
    fn stacked(&mut self, parts: &[(&str, usize)], cols: usize, orient: Orient) -> Result<Matrix> {
        let rows: usize = parts.iter().map(|p| p.1).sum();
        let mats = parts
            .iter()
            .map(|&(name, r)| self.matrix(name, r, cols, orient))
            .collect::<Result<Vec<_>>>()?;
        // All quantized: stack the parts without copying (their block types may differ).
        let quant: Vec<QuantPart> = mats
            .iter()
            .filter_map(|m| match &m.data {
                WeightData::Quant(q) => Some(q.parts.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        if mats.iter().all(Matrix::is_quantized) {
            return Ok(Matrix::quantized(QuantMatrix::new(cols, quant)));
        }
        let mut data = vec![0.0; rows * cols];
        let mut at = 0;
        for m in &mats {
            for r in 0..m.rows {
                m.row_into(r, &mut data[(at + r) * cols..][..cols]);
            }
            at += m.rows;
            m.release_source();
        }
        Ok(Matrix::from_vec(rows, cols, data))
    }
}

/// `[r, c]` → `[c, r]`.
pub(crate) fn transpose(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}

/// Builds the canonical weights of a model from a checkpoint's tensors.
pub fn build(store: &TensorStore, cfg: &ModelConfig, layout: Layout) -> Result<Weights> {
    let mut f = Fetch {
        store,
        path: store.source.clone(),
        used: BTreeSet::new(),
    };
    let w = match layout {
        Layout::NanoGpt | Layout::HfGpt2 | Layout::HipGpt | Layout::GgufGpt2 => {
            gpt2(&mut f, cfg, layout)?
        }
        Layout::HfLlama | Layout::MetaLlama | Layout::GgufLlama => llama(&mut f, cfg, layout)?,
    };
    Ok(w)
}

/// The tensor names of one GPT-2-family layout.
struct Gpt2Names {
    wte: String,
    wpe: String,
    /// Prefix of block `i`, e.g. `transformer.h.{i}` or `blk.{i}`.
    block: Box<dyn Fn(usize) -> String>,
    ln_1: &'static str,
    c_attn: &'static str,
    c_proj: &'static str,
    ln_2: &'static str,
    c_fc: &'static str,
    mlp_proj: &'static str,
    ln_f: String,
    head: &'static str,
    /// Orientation of the block matrices and of the head.
    orient: Orient,
    head_orient: Orient,
}

impl Gpt2Names {
    fn of(f: &Fetch, layout: Layout) -> Gpt2Names {
        if layout == Layout::GgufGpt2 {
            return Gpt2Names {
                wte: "token_embd.weight".into(),
                wpe: "position_embd.weight".into(),
                block: Box::new(|i| format!("blk.{i}")),
                ln_1: "attn_norm",
                c_attn: "attn_qkv",
                c_proj: "attn_output",
                ln_2: "ffn_norm",
                c_fc: "ffn_up",
                mlp_proj: "ffn_down",
                ln_f: "output_norm".into(),
                head: "output.weight",
                orient: Orient::OutIn,
                head_orient: Orient::OutIn,
            };
        }
        // Hugging Face's original `gpt2` repository stores names without `transformer.`.
        let p = if layout == Layout::HfGpt2
            && !f.has("transformer.wte.weight")
            && f.has("wte.weight")
        {
            ""
        } else {
            "transformer."
        };
        let in_out = matches!(layout, Layout::HfGpt2 | Layout::HipGpt);
        Gpt2Names {
            wte: format!("{p}wte.weight"),
            wpe: format!("{p}wpe.weight"),
            block: Box::new(move |i| format!("{p}h.{i}")),
            ln_1: "ln_1",
            c_attn: "attn.c_attn",
            c_proj: "attn.c_proj",
            ln_2: "ln_2",
            c_fc: "mlp.c_fc",
            mlp_proj: "mlp.c_proj",
            ln_f: format!("{p}ln_f"),
            head: "lm_head.weight",
            orient: if in_out { Orient::InOut } else { Orient::OutIn },
            head_orient: if layout == Layout::HipGpt {
                Orient::InOut
            } else {
                Orient::OutIn
            },
        }
    }
}

fn gpt2(f: &mut Fetch, cfg: &ModelConfig, layout: Layout) -> Result<Weights> {
    let (c, ff, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
    let n = Gpt2Names::of(f, layout);
    let (nb, lb, orient) = (cfg.norm_bias, cfg.linear_bias, n.orient);
    let norm = |f: &mut Fetch, name: &str| -> Result<Norm> {
        Ok(Norm {
            weight: f.vector(&format!("{name}.weight"), c)?,
            bias: f.opt_vector(&format!("{name}.bias"), c, nb)?,
        })
    };
    let linear = |f: &mut Fetch, name: &str, out: usize, inp: usize| -> Result<Linear> {
        Ok(Linear {
            w: f.matrix(&format!("{name}.weight"), out, inp, orient)?,
            b: f.opt_vector(&format!("{name}.bias"), out, lb)?,
        })
    };
    let tok_emb = f.matrix(&n.wte, v, c, Orient::OutIn)?;
    let pos_emb = Some(f.matrix(&n.wpe, cfg.context_length, c, Orient::OutIn)?);
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let b = (n.block)(i);
        blocks.push(Block {
            attn_norm: norm(f, &format!("{b}.{}", n.ln_1))?,
            qkv: linear(f, &format!("{b}.{}", n.c_attn), 3 * c, c)?,
            attn_out: linear(f, &format!("{b}.{}", n.c_proj), c, c)?,
            mlp_norm: norm(f, &format!("{b}.{}", n.ln_2))?,
            up: linear(f, &format!("{b}.{}", n.c_fc), ff, c)?,
            down: linear(f, &format!("{b}.{}", n.mlp_proj), c, ff)?,
        });
    }
    let final_norm = if cfg.final_norm {
        Some(norm(f, &n.ln_f)?)
    } else {
        None
    };
    let head = if cfg.tied_head {
        None
    } else {
        Some(Linear {
            w: f.matrix(n.head, v, c, n.head_orient)?,
            b: None,
        })
    };
    Ok(Weights {
        tok_emb,
        pos_emb,
        blocks,
        final_norm,
        head,
    })
}

fn llama(f: &mut Fetch, cfg: &ModelConfig, layout: Layout) -> Result<Weights> {
    let (c, ff, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
    let hd = cfg.head_dim();
    let (qd, kvd) = (cfg.n_head * hd, cfg.n_kv_head * hd);
    debug_assert_eq!(cfg.activation, Activation::SwiGlu);
    debug_assert_eq!(cfg.norm, NormKind::RmsNorm);
    struct Names {
        emb: &'static str,
        q: &'static str,
        k: &'static str,
        v: &'static str,
        o: &'static str,
        gate: &'static str,
        up: &'static str,
        down: &'static str,
        n1: &'static str,
        n2: &'static str,
        norm: &'static str,
        head: &'static str,
        block: &'static str,
    }
    let n = match layout {
        Layout::HfLlama => Names {
            emb: "model.embed_tokens.weight",
            q: "self_attn.q_proj",
            k: "self_attn.k_proj",
            v: "self_attn.v_proj",
            o: "self_attn.o_proj",
            gate: "mlp.gate_proj",
            up: "mlp.up_proj",
            down: "mlp.down_proj",
            n1: "input_layernorm",
            n2: "post_attention_layernorm",
            norm: "model.norm.weight",
            head: "lm_head.weight",
            block: "model.layers",
        },
        Layout::GgufLlama => Names {
            emb: "token_embd.weight",
            q: "attn_q",
            k: "attn_k",
            v: "attn_v",
            o: "attn_output",
            gate: "ffn_gate",
            up: "ffn_up",
            down: "ffn_down",
            n1: "attn_norm",
            n2: "ffn_norm",
            norm: "output_norm.weight",
            head: "output.weight",
            block: "blk",
        },
        _ => Names {
            emb: "tok_embeddings.weight",
            q: "attention.wq",
            k: "attention.wk",
            v: "attention.wv",
            o: "attention.wo",
            gate: "feed_forward.w1",
            up: "feed_forward.w3",
            down: "feed_forward.w2",
            n1: "attention_norm",
            n2: "ffn_norm",
            norm: "norm.weight",
            head: "output.weight",
            block: "layers",
        },
    };
    let tok_emb = f.matrix(n.emb, v, c, Orient::OutIn)?;
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let b = format!("{}.{i}", n.block);
        let w = |s: &str| format!("{b}.{s}.weight");
        let (q, k, vv) = (w(n.q), w(n.k), w(n.v));
        let (gate, up) = (w(n.gate), w(n.up));
        blocks.push(Block {
            attn_norm: Norm {
                weight: f.vector(&w(n.n1), c)?,
                bias: None,
            },
            qkv: Linear {
                w: f.stacked(&[(&q, qd), (&k, kvd), (&vv, kvd)], c, Orient::OutIn)?,
                b: None,
            },
            attn_out: Linear {
                w: f.matrix(&w(n.o), c, qd, Orient::OutIn)?,
                b: None,
            },
            mlp_norm: Norm {
                weight: f.vector(&w(n.n2), c)?,
                bias: None,
            },
            up: Linear {
                w: f.stacked(&[(&gate, ff), (&up, ff)], c, Orient::OutIn)?,
                b: None,
            },
            down: Linear {
                w: f.matrix(&w(n.down), c, ff, Orient::OutIn)?,
                b: None,
            },
        });
    }
    let final_norm = Some(Norm {
        weight: f.vector(n.norm, c)?,
        bias: None,
    });
    let head = if cfg.tied_head {
        None
    } else {
        Some(Linear {
            w: f.matrix(n.head, v, c, Orient::OutIn)?,
            b: None,
        })
    };
    Ok(Weights {
        tok_emb,
        pos_emb: None,
        blocks,
        final_norm,
        head,
    })
}
