//! S3PET search: gates (shifted global sigmoid, relaxation), bi-level optimisation, discretisation.
pub mod bilevel;
pub mod discretize;
pub mod gates;

pub use bilevel::{search, SearchConfig, SearchOutcome, Supernet};
pub use discretize::{discretize, random_structure};
