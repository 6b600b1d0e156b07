//! `s3pet data export`: the split and cut examples of a task as a run sees them.
use super::given::ArgSources;
use crate::cli::DataExportArgs;
use anyhow::Result;
use s3pet::config::{resolve, Command, Method};
use s3pet::data::TaskSpec;

pub fn export(a: DataExportArgs, src: &ArgSources) -> Result<()> {
    let given = src.given(&a.task, &a.common, None, &[]);
    let cfg = resolve(Command::Train, Method::Structure, &TaskSpec::resolve(&a.task)?, &given)?;
    println!("{}", s3pet::pipeline::data_export::export_examples(&cfg, &a.out)?);
    Ok(())
}
