//! `quill info`.

use crate::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let loaded = a.model.load()?;
    let c = loaded.model.config();
    let i = &loaded.info;
    let positions = match c.positions {
        quill::config::Positions::Learned => "learned absolute".to_string(),
        quill::config::Positions::Rope { theta, style } => format!("RoPE θ={theta} {style:?}"),
    };
    let rows: Vec<(&str, String)> = vec![
        ("path", i.path.clone()),
        ("format", i.format.clone()),
        ("architecture", c.family.name().to_string()),
        ("parameters", i.parameters.to_string()),
        ("stored dtype", i.stored_dtype.clone()),
        ("run dtype", i.run_dtype.clone()),
        ("memory-mapped", i.memory_mapped.to_string()),
        ("layers", c.n_layer.to_string()),
        ("d_model", c.d_model.to_string()),
        ("heads", format!("{} (kv {})", c.n_head, c.n_kv_head)),
        ("d_ff", c.d_ff.to_string()),
        ("context", c.context_length.to_string()),
        ("vocab (model)", c.vocab_size.to_string()),
        ("norm", format!("{:?} eps={}", c.norm, c.norm_eps)),
        ("activation", format!("{:?}", c.activation)),
        ("positions", positions),
        ("tied head", c.tied_head.to_string()),
        (
            "biases",
            format!("linear {}, norm {}", c.linear_bias, c.norm_bias),
        ),
        ("tokenizer", i.tokenizer.clone()),
    ];
    if a.json {
        let map: serde_json::Map<String, serde_json::Value> = rows
            .into_iter()
            .map(|(k, v)| (k.replace(' ', "_"), serde_json::Value::String(v)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&map)?);
    } else {
        for (k, v) in rows {
            println!("{k:>14}: {v}");
        }
    }
    Ok(())
}
