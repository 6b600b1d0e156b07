//! The pipeline as a library: config -> backbone + site factory -> search -> structure.json -> retrain ->
//! eval -> report. `src/cmd/` only parses arguments, calls one function here and prints.
pub mod data_export;
pub mod durations;
pub mod finished;
pub mod gpus;
pub mod import;
pub mod load;
pub mod merge;
pub mod merge_lm;
pub mod plan;
pub mod predict;
pub mod report;
pub mod schedule;
pub mod search;
pub mod sweep;
pub mod train;

pub use finished::{evaluate_run, RunModel};
pub use load::{load, resume_config, Loaded, RunOpts};
pub use search::{random_structure_file, search_only, search_then_retrain};
pub use train::{train_run, train_structure};
