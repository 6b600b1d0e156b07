//! `s3pet predict`: a finished run's predictions for new text, one JSON object per input line.
use crate::cli::PredictArgs;
use anyhow::Result;
use s3pet::config::DeviceSpec;
use s3pet::pipeline::predict::{predict, read_inputs, InputFormat};

pub fn run(a: PredictArgs) -> Result<()> {
    let format = InputFormat::choose(a.input_format.as_deref(), &a.input)?;
    let inputs = read_inputs(&a.input, format)?;
    let device = a.device.as_deref().map(DeviceSpec::parse).transpose()?;
    predict(&a.run, &inputs, device, &mut std::io::stdout().lock())?;
    Ok(())
}
