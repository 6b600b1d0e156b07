//! `s3pet merge`: a plain Hugging Face model directory with the run's linear deltas folded in.
use crate::cli::MergeArgs;
use anyhow::Result;

pub fn run(a: MergeArgs) -> Result<()> {
    println!("{}", s3pet::pipeline::merge::merge_run(&a.run, &a.out, a.overwrite)?);
    Ok(())
}
