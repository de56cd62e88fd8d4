//! Writing a loaded model back out: a Hugging Face folder (`config.json` + `model.safetensors`
//! in float32, `tokenizer.json` when the tokenizer is a `tokenizers` one) or a GGUF file
//! (float32 tensors under llama.cpp's names, with the hyper-parameters and, when the source was
//! a GGUF, its `tokenizer.*` metadata). Quantized weights are dequantized on the way out.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Family, Positions, RopeStyle};
use crate::error::{Error, Result};
use crate::formats::gguf::writer::{write_gguf, TensorOut};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::kernels::Matrix;
use crate::load::LoadedModel;
use crate::tensor::DType;

/// Named float32 tensors with shapes, in quill's canonical orientation `[out, in]`.
type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

fn mat(m: &Matrix) -> Vec<f32> {
    m.to_f32().as_slice().to_vec()
}

/// Rows `[a, b)` of a `[rows, cols]` f32 matrix.
fn rows(v: &[f32], cols: usize, a: usize, b: usize) -> Vec<f32> {
    v[a * cols..b * cols].to_vec()
}

/// Reorders each head's rows between interleaved pairs and half-split (`rotate_half`) order.
fn interleaved_to_half(v: &[f32], n_head: usize, hd: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * (hd / 2) + i;
                out[dst * cols..][..cols].copy_from_slice(&v[src * cols..][..cols]);
            }
        }
    }
    out
}

/// Tensors under Hugging Face (`hf = true`) or GGUF names.
fn tensors(lm: &LoadedModel, hf: bool) -> Named {
    let cfg = lm.model.config();
    let w = lm.model.weights();
    let (c, hd) = (cfg.d_model, cfg.head_dim());
    let (qd, kvd, ff) = (cfg.n_head * hd, cfg.n_kv_head * hd, cfg.d_ff);
    let interleaved = matches!(
        cfg.positions,
        Positions::Rope {
            style: RopeStyle::Interleaved,
            ..
        }
    );
    let mut t: Named = Vec::new();
    let mut push = |n: String, s: Vec<usize>, v: Vec<f32>| t.push((n, s, v));
    let llama = cfg.family == Family::Llama;
    let emb = if !hf {
        "token_embd.weight"
    } else if llama {
        "model.embed_tokens.weight"
    } else {
        "transformer.wte.weight"
    };
    push(emb.into(), vec![cfg.vocab_size, c], mat(&w.tok_emb));
    if let Some(p) = &w.pos_emb {
        let n = if hf {
            "transformer.wpe.weight"
        } else {
            "position_embd.weight"
        };
        push(n.into(), vec![p.rows, c], mat(p));
    }
    for (l, b) in w.blocks.iter().enumerate() {
        let name = |hf_llama: &str, hf_gpt2: &str, gguf: &str| {
            if !hf {
                format!("blk.{l}.{gguf}")
            } else if llama {
                format!("model.layers.{l}.{hf_llama}")
            } else {
                format!("transformer.h.{l}.{hf_gpt2}")
            }
        };
        let norm = |nm: String, n: &crate::model::weights::Norm, t: &mut Named| {
            t.push((format!("{nm}.weight"), vec![c], n.weight.clone()));
            if let Some(bias) = &n.bias {
                t.push((format!("{nm}.bias"), vec![c], bias.clone()));
            }
        };
        norm(
            name("input_layernorm", "ln_1", "attn_norm"),
            &b.attn_norm,
            &mut t,
        );
        norm(
            name("post_attention_layernorm", "ln_2", "ffn_norm"),
            &b.mlp_norm,
            &mut t,
        );
        let qkv = mat(&b.qkv.w);
        let down = mat(&b.down.w);
        let up = mat(&b.up.w);
        if llama {
            let (mut q, mut k) = (rows(&qkv, c, 0, qd), rows(&qkv, c, qd, qd + kvd));
            if hf && interleaved {
                q = interleaved_to_half(&q, cfg.n_head, hd, c);
                k = interleaved_to_half(&k, cfg.n_kv_head, hd, c);
            }
            let v = rows(&qkv, c, qd + kvd, qd + 2 * kvd);
            t.push((
                name("self_attn.q_proj.weight", "", "attn_q.weight"),
                vec![qd, c],
                q,
            ));
            t.push((
                name("self_attn.k_proj.weight", "", "attn_k.weight"),
                vec![kvd, c],
                k,
            ));
            t.push((
                name("self_attn.v_proj.weight", "", "attn_v.weight"),
                vec![kvd, c],
                v,
            ));
            t.push((
                name("self_attn.o_proj.weight", "", "attn_output.weight"),
                vec![c, qd],
                mat(&b.attn_out.w),
            ));
            t.push((
                name("mlp.gate_proj.weight", "", "ffn_gate.weight"),
                vec![ff, c],
                rows(&up, c, 0, ff),
            ));
            t.push((
                name("mlp.up_proj.weight", "", "ffn_up.weight"),
                vec![ff, c],
                rows(&up, c, ff, 2 * ff),
            ));
            t.push((
                name("mlp.down_proj.weight", "", "ffn_down.weight"),
                vec![c, ff],
                down,
            ));
        } else {
            // Hugging Face GPT-2 stores Conv1D weights [in, out].
            let lin = |t: &mut Named,
                       n: String,
                       v: Vec<f32>,
                       out: usize,
                       inp: usize,
                       bias: &Option<Vec<f32>>| {
                let (shape, data) = if hf {
                    (
                        vec![inp, out],
                        crate::model::weights::transpose(&v, out, inp),
                    )
                } else {
                    (vec![out, inp], v)
                };
                t.push((format!("{n}.weight"), shape, data));
                if let Some(bb) = bias {
                    t.push((format!("{n}.bias"), vec![out], bb.clone()));
                }
            };
            lin(
                &mut t,
                name("", "attn.c_attn", "attn_qkv"),
                qkv,
                3 * c,
                c,
                &b.qkv.b,
            );
            lin(
                &mut t,
                name("", "attn.c_proj", "attn_output"),
                mat(&b.attn_out.w),
                c,
                c,
                &b.attn_out.b,
            );
            lin(&mut t, name("", "mlp.c_fc", "ffn_up"), up, ff, c, &b.up.b);
            lin(
                &mut t,
                name("", "mlp.c_proj", "ffn_down"),
                down,
                c,
                ff,
                &b.down.b,
            );
        }
    }
    if let Some(n) = &w.final_norm {
        let nm = if !hf {
            "output_norm"
        } else if llama {
            "model.norm"
        } else {
            "transformer.ln_f"
        };
        t.push((format!("{nm}.weight"), vec![c], n.weight.clone()));
        if let Some(b) = &n.bias {
            t.push((format!("{nm}.bias"), vec![c], b.clone()));
        }
    }
    if let Some(h) = &w.head {
        let nm = if hf {
            "lm_head.weight"
        } else {
            "output.weight"
        };
        t.push((nm.into(), vec![cfg.vocab_size, c], mat(&h.w)));
    }
    t
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a Hugging Face folder `dir` (created if needed) that quill and `transformers` load.
pub fn to_hf_folder(lm: &LoadedModel, dir: &Path) -> Result<()> {
    let cfg = lm.model.config();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let named = tensors(lm, true);
    let bytes: Vec<Vec<u8>> = named.iter().map(|t| le_bytes(&t.2)).collect();
    let views = named
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.1.clone(), b)
                .map(|v| (t.0.clone(), v))
                .map_err(|e| Error::tensor(dir, &t.0, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let st = dir.join("model.safetensors");
    safetensors::tensor::serialize_to_file(views, &None, &st)
        .map_err(|e| Error::format(&st, "safetensors", e.to_string()))?;
    let json = match cfg.family {
        Family::Llama => {
            let theta = match cfg.positions {
                Positions::Rope { theta, .. } => theta,
                Positions::Learned => 10000.0,
            };
            serde_json::json!({
                "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
                "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layer,
                "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
                "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps,
                "rope_theta": theta, "tie_word_embeddings": cfg.tied_head, "hidden_act": "silu",
                "torch_dtype": "float32"
            })
        }
        Family::Gpt2 => serde_json::json!({
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": cfg.vocab_size, "n_embd": cfg.d_model, "n_inner": cfg.d_ff,
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_positions": cfg.context_length,
            "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tied_head,
            "activation_function": match cfg.activation {
                crate::config::Activation::GeluExact => "gelu",
                crate::config::Activation::Relu => "relu",
                _ => "gelu_new",
            },
            "torch_dtype": "float32"
        }),
    };
    let cp = dir.join("config.json");
    std::fs::write(&cp, serde_json::to_string_pretty(&json).unwrap_or_default())
        .map_err(|e| Error::io(&cp, e))?;
    let tp = dir.join("tokenizer.json");
    let saved = match &lm.tokenizer {
        Some(crate::Tokenizer::Hf(t)) => t.save(&tp, false),
        Some(crate::Tokenizer::Bpe(t)) => t.save(&tp, false),
        _ => Ok(()),
    };
    saved.map_err(|e| Error::Tokenizer(format!("writing {}: {e}", tp.display())))?;
    Ok(())
}

/// Writes a GGUF v3 file with float32 tensors. `source` is the file the model came from: when it
/// is a GGUF, its `tokenizer.*` and `general.*` metadata are carried over.
pub fn to_gguf(lm: &LoadedModel, source: Option<&Path>, out: &Path) -> Result<()> {
    let cfg = lm.model.config();
    let arch = cfg.family.name();
    let mut md: BTreeMap<String, GgufValue> = BTreeMap::new();
    if let Some(src) = source.filter(|p| p.is_file()) {
        if crate::formats::sniff::sniff_file(src)? == crate::formats::sniff::FileKind::Gguf {
            let g = GgufFile::open(src)?;
            for (k, v) in g.metadata {
                if k.starts_with("tokenizer.")
                    || (k.starts_with("general.") && k != "general.file_type")
                {
                    md.insert(k, v);
                }
            }
        }
    }
    let u = |x: usize| GgufValue::U32(x as u32);
    md.insert("general.architecture".into(), GgufValue::Str(arch.into()));
    for (k, v) in [
        ("context_length", u(cfg.context_length)),
        ("embedding_length", u(cfg.d_model)),
        ("feed_forward_length", u(cfg.d_ff)),
        ("block_count", u(cfg.n_layer)),
        ("attention.head_count", u(cfg.n_head)),
        ("attention.head_count_kv", u(cfg.n_kv_head)),
    ] {
        md.insert(format!("{arch}.{k}"), v);
    }
    match cfg.positions {
        Positions::Rope { theta, .. } => {
            md.insert(format!("{arch}.rope.freq_base"), GgufValue::F32(theta));
            md.insert(
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                GgufValue::F32(cfg.norm_eps),
            );
        }
        Positions::Learned => {
            md.insert(
                format!("{arch}.attention.layer_norm_epsilon"),
                GgufValue::F32(cfg.norm_eps),
            );
        }
    }
    let mut named = tensors(lm, false);
    if matches!(
        cfg.positions,
        Positions::Rope {
            style: RopeStyle::HalfSplit,
            ..
        }
    ) {
        return Err(Error::Unsupported {
            path: out.into(),
            detail: "GGUF export of half-split RoPE checkpoints (Hugging Face Llama) is not \
                     implemented; export to safetensors instead"
                .into(),
        });
    }
    let bytes: Vec<Vec<u8>> = named.iter_mut().map(|t| le_bytes(&t.2)).collect();
    let outs: Vec<TensorOut> = named
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorOut {
            name: t.0.clone(),
            dtype: DType::F32,
            shape: t.1.clone(),
            data: b,
        })
        .collect();
    let f = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let mut w = std::io::BufWriter::new(f);
    write_gguf(&mut w, &md, &outs).map_err(|e| Error::io(out, e))?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(out, e))
}
