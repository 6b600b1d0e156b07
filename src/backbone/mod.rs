//! Pre-trained backbones: one struct per Hugging Face submodule, `load(weights, cfg)` + forward.
mod arch;
mod bert;
mod config;
mod exec;
mod heads;
pub mod loader;
mod sites;
mod t5;
mod t5_config;
mod weights;

pub use arch::{Arch, ModelConfig, WalkCache};
pub use bert::Bert;
pub use config::BertConfig;
pub use heads::Head;
pub use sites::{LinearGroup, LinearSite, NormSite, Placement, RmsNormSite, SiteFactory};
pub use t5::T5;
pub use t5_config::T5Config;
pub use weights::Weights;
