//! `s3pet eval`: rebuild a finished run's model from its files and evaluate a split.
use crate::cli::EvalArgs;
use anyhow::Result;
use s3pet::config::DeviceSpec;

pub fn run(a: EvalArgs) -> Result<()> {
    let device = a.device.as_deref().map(DeviceSpec::parse).transpose()?;
    println!("{}", s3pet::pipeline::evaluate_run(&a.run, &a.split, a.data_dir, device)?);
    Ok(())
}
