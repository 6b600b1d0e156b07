//! S3PET search: gates (shifted global sigmoid, relaxation), bi-level optimisation, discretisation.
pub mod bilevel;
pub mod discretize;
pub mod gates;
mod graphs;
pub mod stepper;
pub mod supernet;

pub use bilevel::{search, SearchConfig, SearchOutcome, Supernet};
pub use discretize::{discretize, random_structure};
pub use graphs::{graphs_wanted, GraphTally};
