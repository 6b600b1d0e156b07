//! Pre-trained backbones: one struct per Hugging Face submodule, `load(weights, cfg)` + forward.
mod bert;
mod config;
mod heads;
mod sites;
mod weights;

pub use bert::{bert_param_count, bert_sites, Bert};
pub use config::BertConfig;
pub use heads::Head;
pub use sites::{LinearSite, NormSite, Placement, SiteFactory};
pub use weights::Weights;
