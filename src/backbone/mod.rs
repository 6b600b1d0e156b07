//! Pre-trained backbones: one file per family (BERT / RoBERTa, MPNet, DeBERTa-v2, DistilBERT, T5), one
//! struct per Hugging Face submodule, `load(weights, cfg)` + forward; [`Encoder`] holds any encoder.
mod arch;
mod bert;
mod config;
mod deberta;
mod deberta_config;
mod distilbert;
mod encoder;
mod exec;
mod heads;
mod llama;
mod llama_config;
pub mod loader;
mod mpnet;
mod sites;
mod t5;
mod t5_config;
mod weights;

pub use arch::{Arch, Family, ModelConfig, WalkCache, MODEL_TYPES};
pub use bert::Bert;
pub use config::BertConfig;
pub use deberta::{Deberta, DebertaConfig};
pub use distilbert::{DistilBert, DistilBertConfig};
pub use encoder::{Encoder, EncoderBackbone};
pub use heads::{Head, HeadLayout};
pub use llama::{KvCache, Llama};
pub use llama_config::{LlamaConfig, Rope, RopeScaling};
pub use mpnet::{Mpnet, MpnetConfig};
pub use sites::{LinearGroup, LinearSite, NormSite, Placement, RmsNormSite, SiteFactory};
pub use t5::T5;
pub use t5_config::T5Config;
pub use weights::Weights;
