//! `s3pet report results/`: RESULTS.md and its plots from runs.jsonl (src/pipeline/report).
use crate::cli::ReportArgs;
use anyhow::Result;

pub fn run(a: ReportArgs) -> Result<()> {
    println!("{}", s3pet::pipeline::report::write(&a.dir)?.display());
    Ok(())
}
