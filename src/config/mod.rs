//! Run configuration: the enums a config is made of, the allowed range of every option, the resolved
//! [`RunConfig`] saved in each run directory, and its layering.
pub mod layers;
pub mod limits;
mod run;
pub mod types;

pub use layers::{resolve, Command, Given, Source};
pub use run::{RunConfig, SearchSettings};
pub use types::{DeviceSpec, Dtype, Method, Precision, Strategy};
