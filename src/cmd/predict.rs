//! `s3pet predict`: a finished run's predictions for new text, one JSON object per input line.
use super::eval::{load_run_model, RunModel};
use crate::cli::PredictArgs;
use anyhow::{bail, Context, Result};
use s3pet::batch::Batch;
use s3pet::data::{Target, TaskKind};
use s3pet::delta::Ctx;
use s3pet::tokenize::{Encoded, TextEncoder};
use serde_json::{json, Value};
use std::io::{BufRead, Write};

/// Reads (text_a, text_b) pairs: TSV without a header (one or two columns) or JSONL with
/// `text_a` / `text_b`. Errors name the input and line.
fn read_inputs(path: &str, format: &str) -> Result<Vec<(String, Option<String>)>> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("{path}: cannot open"))?,
        ))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{path}:{}: cannot read", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let pair = if format == "jsonl" {
            let v: Value =
                serde_json::from_str(&line).with_context(|| format!("{path}:{}: invalid JSON", i + 1))?;
            let a = v["text_a"].as_str().with_context(|| format!("{path}:{}: no string `text_a`", i + 1))?;
            (a.to_string(), v["text_b"].as_str().map(str::to_string))
        } else {
            let cols: Vec<&str> = line.split('\t').collect();
            match cols.as_slice() {
                [a] => (a.to_string(), None),
                [a, b] => (a.to_string(), Some(b.to_string())),
                _ => bail!("{path}:{}: expected 1 or 2 tab-separated columns, found {}", i + 1, cols.len()),
            }
        };
        out.push(pair);
    }
    Ok(out)
}

pub fn run(a: PredictArgs) -> Result<()> {
    let RunModel { cfg, md, spec, model } = load_run_model(&a.run, a.device.clone())?;
    if spec.kind == TaskKind::MultipleChoice {
        bail!("predict handles classification and regression tasks; `{}` is multiple choice", spec.name);
    }
    let format = match a.input_format.as_deref() {
        Some(f @ ("tsv" | "jsonl")) => f.to_string(),
        Some(f) => bail!("unknown --input-format `{f}` (tsv, jsonl)"),
        None if a.input.ends_with(".jsonl") || a.input.ends_with(".json") => "jsonl".into(),
        None => "tsv".into(),
    };
    let inputs = read_inputs(&a.input, &format)?;
    let enc = TextEncoder::load(&md.tokenizer_path(), md.max_length(cfg.max_length))?;
    let mut out = std::io::stdout().lock();
    if model.words().is_some() {
        return predict_text2text(&model, &spec, &enc, &inputs, cfg.eval_batch_size, &mut out);
    }
    for chunk in inputs.chunks(cfg.eval_batch_size.max(1)) {
        let items: Vec<Encoded> = chunk
            .iter()
            .map(|(a, b)| {
                let row = enc.encode_pair(a, b.as_deref())?;
                Ok(Encoded { rows: vec![row], target: Target::Class(0), group: None })
            })
            .collect::<s3pet::Result<_>>()?;
        let refs: Vec<&Encoded> = items.iter().collect();
        let batch = Batch::new(&refs, model.device);
        let logits = tch::no_grad(|| model.logits(&batch, &Ctx::eval())).to_device(tch::Device::Cpu);
        let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&logits).context("reading logits")?;
        for row in rows {
            let v = if spec.kind == TaskKind::Regression {
                json!({"score": row.first().copied().unwrap_or(f32::NAN)})
            } else {
                let best = row.iter().enumerate().fold(0, |b, (i, x)| if *x > row[b] { i } else { b });
                json!({"label": spec.labels.get(best).cloned().unwrap_or_else(|| best.to_string()), "logits": row})
            };
            writeln!(out, "{v}")?;
        }
    }
    Ok(())
}

/// A text-to-text run: each input becomes the task's source string; the greedy decode is mapped back
/// to a label (`null` when it is none) and printed with the generated text.
fn predict_text2text(
    model: &s3pet::model::Model,
    spec: &s3pet::data::TaskSpec,
    enc: &TextEncoder,
    inputs: &[(String, Option<String>)],
    batch_size: usize,
    out: &mut impl Write,
) -> Result<()> {
    let words = model.words().context("not a text-to-text model")?;
    for chunk in inputs.chunks(batch_size.max(1)) {
        let items: Vec<Encoded> = chunk
            .iter()
            .map(|(a, b)| {
                let ex = s3pet::data::Example {
                    texts: vec![(a.clone(), b.clone())],
                    target: Target::Class(0),
                    group: None,
                    source: "input".into(),
                };
                let row = enc.encode_pair(&s3pet::text2text::source(spec, &ex), None)?;
                Ok(Encoded { rows: vec![row], target: Target::Class(0), group: None })
            })
            .collect::<s3pet::Result<_>>()?;
        let refs: Vec<&Encoded> = items.iter().collect();
        let batch = Batch::new(&refs, model.device);
        let ids = model.generate(&batch, &Ctx::eval()).context("not a text-to-text model")?;
        for row in Vec::<Vec<i64>>::try_from(&ids).context("reading generated ids")? {
            let text = words.text(&row);
            let v = match words.decode(&row) {
                Target::Score(s) => json!({"score": s, "text": text}),
                Target::Class(c) => json!({"label": words.words.get(c), "text": text}),
            };
            writeln!(out, "{v}")?;
        }
    }
    Ok(())
}
