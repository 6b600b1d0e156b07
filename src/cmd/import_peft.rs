//! `s3pet import-peft`: a PEFT LoRA / LN_TUNING adapter directory becomes an s3pet run directory.
use super::given::ArgSources;
use crate::cli::ImportPeftArgs;
use anyhow::Result;
use s3pet::config::{resolve, Command, Method};
use s3pet::data::TaskSpec;
use s3pet::pipeline::import::{adapter_task, import_peft};

pub fn run(a: ImportPeftArgs, src: &ArgSources) -> Result<()> {
    let task = adapter_task(&a.dir, a.task.as_deref())?;
    let given = src.given(&task, &a.common, None, &[]);
    let cfg = resolve(Command::Train, Method::Structure, &TaskSpec::resolve(&task)?, &given)?;
    println!("{}", import_peft(&a.dir, &a.out, &cfg, a.common.overwrite)?);
    Ok(())
}
