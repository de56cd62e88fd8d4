//! quill: a fast, correct text-generation engine for GPT-style language models.
//!
//! The modules follow the data flow:
//! text → [`tokenizer`] → token ids → [`model`] (forward with a per-sequence [`model::KvCache`])
//! → logits → [`sampling`] → token → [`tokenizer::TextStream`] (UTF-8-safe text).
//! [`load`] turns a path (any supported checkpoint format, sniffed by content) into a model and its
//! tokenizer; [`generate`] drives the loop and reports progress as events. [`eval`] scores text
//! (perplexity), e.g. to weigh a lower `--dtype` ([`load::WeightDtype`]) against its quality cost.

pub mod bench;
pub mod chat;
pub mod config;
pub mod error;
pub mod eval;
pub mod export;
pub mod formats;
pub mod generate;
pub mod kernels;
pub mod load;
pub mod model;
pub mod sampling;
pub mod tensor;
pub mod tokenizer;

pub use config::ModelConfig;
pub use error::{Error, Result};
pub use eval::{perplexity, perplexity_with, PerplexityReport};
pub use generate::{Event, FinishReason, GenerateParams, Generation};
pub use load::{load, LoadedModel, ModelSource, WeightDtype};
pub use model::{KvCache, KvDtype, Logits, Model};
pub use sampling::SamplerConfig;
pub use tokenizer::Tokenizer;
