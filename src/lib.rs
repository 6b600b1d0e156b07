//! s3pet: parameter-efficient tuning of pre-trained transformers with an automatic, budgeted search of
//! which delta module goes where (S3PET, "Sparse Structure Search for Delta Tuning", NeurIPS 2022).
pub mod artifact;
pub mod backbone;
pub mod batch;
pub mod bench;
pub mod causal;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod cuda_graph;
pub mod data;
pub mod delta;
pub mod dist;
pub mod error;
pub mod font;
pub mod gpu_mem;
pub mod guard;
pub mod hub;
pub mod lora_targets;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod params;
pub mod peft;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod prompt;
pub mod results;
pub mod rundir;
pub mod search;
pub mod space;
pub mod structure;
pub mod text2text;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};
