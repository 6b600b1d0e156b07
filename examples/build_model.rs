//! Build a model with deltas from Rust code, without the CLI: LoRA r4 on every query and value, BitFit on
//! every LayerNorm, a fresh two-class head; then a few AdamW steps on two sentence pairs and the
//! predictions before and after.
//!
//!     cargo run --release --example build_model [MODEL_DIR]
//!
//! MODEL_DIR defaults to models/all-MiniLM-L6-v2 (scripts/setup.sh fetches it); any Hugging Face BERT
//! directory works, e.g. tests/fixtures/tiny_bert.
use s3pet::backbone::Placement;
use s3pet::batch::Batch;
use s3pet::data::Target;
use s3pet::delta::{Ctx, DeltaKind, ModuleSpec};
use s3pet::model::{HeadInit, Model, ModelDir};
use s3pet::optim::{AdamW, AdamWConfig};
use s3pet::tokenize::{Encoded, TextEncoder};
use std::path::PathBuf;

fn main() -> s3pet::Result<()> {
    let dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    let md = ModelDir::open(&dir)?;
    let weights = md.load_weights(tch::Device::Cpu)?;

    // where the deltas go: sites are the checkpoint's own module paths
    let mut placements = Vec::new();
    for (site, _shape) in md.cfg.sites() {
        let spec = if site.ends_with("attention.self.query") || site.ends_with("attention.self.value") {
            ModuleSpec { rank: Some(4), alpha: Some(8.0), ..ModuleSpec::new(&site, DeltaKind::Lora) }
        } else if site.ends_with("LayerNorm") {
            ModuleSpec::new(&site, DeltaKind::Bitfit)
        } else {
            continue;
        };
        placements.push(Placement { spec, gate: None });
    }
    let model = Model::build(&md.cfg, &weights, &placements, false, HeadInit::Fresh { num_labels: 2 }, 7)?;
    println!(
        "{} delta modules, {} delta parameters, {} head parameters; backbone {} (frozen)",
        placements.len(),
        model.delta_params,
        model.head_params,
        model.backbone_params()
    );

    // two labelled pairs (1: paraphrase, 0: not)
    let enc = TextEncoder::load(&md.tokenizer_path(), 64)?;
    let pairs = [
        ("The cat sat on the mat.", "A cat was sitting on the mat.", 1),
        ("The cat sat on the mat.", "Stock prices fell sharply on Monday.", 0),
    ];
    let mut data = Vec::new();
    for (a, b, y) in pairs {
        let row = enc.encode_pair(a, Some(b))?;
        data.push(Encoded { rows: vec![row], target: Target::Class(y), group: None });
    }
    let batch = Batch::new(&data.iter().collect::<Vec<_>>(), model.device);

    let mut opt = AdamW::new(&model.store, AdamWConfig::new(1e-2, 0.0));
    println!("before: {:?}", model.predict(&batch, &Ctx::eval())?);
    for step in 0..20 {
        let loss = model.loss(&batch, &Ctx::train());
        let g = model.store.grads(&loss);
        opt.step(&model.store, &g, 1e-2);
        if step % 5 == 0 {
            println!("step {step}: loss {:.4}", loss.double_value(&[]));
        }
    }
    println!("after:  {:?} (want [Class(1), Class(0)])", model.predict(&batch, &Ctx::eval())?);
    Ok(())
}
