//! `s3pet predict`: a finished run's predictions for new text, one JSON object per input line.
use super::finished::RunModel;
use crate::batch::Batch;
use crate::data::{Example, Target, TaskKind};
use crate::delta::Ctx;
use crate::error::{Error, Result};
use crate::model::check_finite;
use crate::tokenize::{Encoded, TextEncoder};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::Path;

/// Input formats of `predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// No header, one or two tab-separated text columns.
    Tsv,
    /// `text_a` and optional `text_b` per line.
    Jsonl,
}

impl InputFormat {
    /// `--input-format` if given, else by the input's extension (tsv by default).
    pub fn choose(given: Option<&str>, input: &str) -> Result<Self> {
        match given {
            Some("tsv") => Ok(InputFormat::Tsv),
            Some("jsonl") => Ok(InputFormat::Jsonl),
            Some(f) => Err(Error::config("--input-format", format!("unknown format `{f}` (tsv, jsonl)"))),
            None if input.ends_with(".jsonl") || input.ends_with(".json") => Ok(InputFormat::Jsonl),
            None => Ok(InputFormat::Tsv),
        }
    }
}

/// One input line as (text_a, text_b); `path:line` names it in errors.
fn parse_line(line: &str, format: InputFormat, at: &str) -> Result<(String, Option<String>)> {
    match format {
        InputFormat::Jsonl => {
            let v: Value =
                serde_json::from_str(line).map_err(|e| Error::Msg(format!("{at}: invalid JSON: {e}")))?;
            let a = v["text_a"].as_str().ok_or_else(|| Error::Msg(format!("{at}: no string `text_a`")))?;
            Ok((a.to_string(), v["text_b"].as_str().map(str::to_string)))
        }
        InputFormat::Tsv => {
            let cols: Vec<&str> = line.split('\t').collect();
            match cols.as_slice() {
                [a] => Ok((a.to_string(), None)),
                [a, b] => Ok((a.to_string(), Some(b.to_string()))),
                _ => Err(Error::Msg(format!(
                    "{at}: expected 1 or 2 tab-separated columns, found {}",
                    cols.len()
                ))),
            }
        }
    }
}

/// Reads (text_a, text_b) pairs from `path` (`-`: standard input); empty lines are skipped.
pub fn read_inputs(path: &str, format: InputFormat) -> Result<Vec<(String, Option<String>)>> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("{path}:{}", i + 1), e))?;
        if !line.trim().is_empty() {
            out.push(parse_line(&line, format, &format!("{path}:{}", i + 1))?);
        }
    }
    Ok(out)
}

/// Writes one JSON object per input to `out`: the label and logits (classification), the score
/// (regression), or for a text-to-text run the label and the generated text.
pub fn predict(
    run: &Path,
    inputs: &[(String, Option<String>)],
    device: Option<crate::config::DeviceSpec>,
    out: &mut impl Write,
) -> Result<()> {
    let rm = RunModel::open(run, device)?;
    if let Some((llama, p)) = rm.model.causal().filter(|_| rm.spec.kind != TaskKind::MultipleChoice) {
        for chunk in inputs.chunks(rm.cfg.eval_batch_size.max(1)) {
            for v in crate::causal::predict_lines(llama, p, &rm.spec, chunk, rm.cfg.max_length)? {
                writeln!(out, "{v}").map_err(|e| Error::io("<stdout>", e))?;
            }
        }
        return Ok(());
    }
    if rm.spec.kind == TaskKind::MultipleChoice {
        return Err(Error::Msg(format!(
            "predict handles classification and regression tasks; `{}` is multiple choice",
            rm.spec.name
        )));
    }
    let enc = TextEncoder::load(&rm.md.tokenizer_path(), rm.md.max_length(rm.cfg.max_length, false))?;
    for chunk in inputs.chunks(rm.cfg.eval_batch_size.max(1)) {
        let lines = if rm.model.words().is_some() {
            text2text(&rm, &enc, chunk)?
        } else {
            classify(&rm, &enc, chunk)?
        };
        for v in lines {
            writeln!(out, "{v}").map_err(|e| Error::io("<stdout>", e))?;
        }
    }
    Ok(())
}

fn encode(enc: &TextEncoder, a: &str, b: Option<&str>) -> Result<Encoded> {
    Ok(Encoded { rows: vec![enc.encode_pair(a, b)?], target: Target::Class(0), group: None })
}

fn classify(rm: &RunModel, enc: &TextEncoder, chunk: &[(String, Option<String>)]) -> Result<Vec<Value>> {
    let items: Vec<Encoded> =
        chunk.iter().map(|(a, b)| encode(enc, a, b.as_deref())).collect::<Result<_>>()?;
    let batch = Batch::new(&items.iter().collect::<Vec<_>>(), rm.model.device);
    let logits = tch::no_grad(|| rm.model.logits(&batch, &Ctx::eval())).to_device(tch::Device::Cpu);
    check_finite(&logits, "logits")?;
    let rows = Vec::<Vec<f32>>::try_from(&logits)
        .map_err(|e| Error::Tensor { key: "logits".into(), msg: format!("cannot read back: {e}") })?;
    Ok(rows
        .into_iter()
        .map(|row| {
            if rm.spec.kind == TaskKind::Regression {
                json!({"score": row.first().copied()})
            } else {
                let best = row.iter().enumerate().fold(0, |b, (i, x)| if *x > row[b] { i } else { b });
                json!({"label": rm.spec.labels.get(best).cloned().unwrap_or_else(|| best.to_string()), "logits": row})
            }
        })
        .collect())
}

/// Each input becomes the task's source string; the greedy decode is mapped back to a label (`null`
/// when it is none) and printed with the generated text.
fn text2text(rm: &RunModel, enc: &TextEncoder, chunk: &[(String, Option<String>)]) -> Result<Vec<Value>> {
    let words = rm.model.words().ok_or_else(|| Error::Msg("not a text-to-text model".into()))?;
    let items: Vec<Encoded> = chunk
        .iter()
        .map(|(a, b)| {
            let ex = Example {
                texts: vec![(a.clone(), b.clone())],
                target: Target::Class(0),
                group: None,
                source: "input".into(),
            };
            encode(enc, &crate::text2text::source(&rm.spec, &ex), None)
        })
        .collect::<Result<_>>()?;
    let batch = Batch::new(&items.iter().collect::<Vec<_>>(), rm.model.device);
    let ids = rm
        .model
        .generate(&batch, &Ctx::eval())
        .ok_or_else(|| Error::Msg("not a text-to-text model".into()))?;
    let rows = Vec::<Vec<i64>>::try_from(&ids)
        .map_err(|e| Error::Tensor { key: "generated ids".into(), msg: format!("cannot read back: {e}") })?;
    Ok(rows
        .iter()
        .map(|row| {
            let text = words.text(row);
            match words.decode(row) {
                Target::Score(s) => json!({"score": s, "text": text}),
                Target::Class(c) => json!({"label": words.words.get(c), "text": text}),
            }
        })
        .collect())
}
