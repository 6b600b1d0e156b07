//! A decoder-only LLM on a task (crate::prompt): answer-word logits, the losses, predictions, greedy
//! generation from a batch's prompts, and the evaluation of generation tasks.
use crate::backbone::Llama;
use crate::batch::{batches, Batch};
use crate::data::{Target, TaskKind};
use crate::delta::Ctx;
use crate::error::{Error, Result};
use crate::prompt::Prompter;
use crate::tokenize::Encoded;
use crate::train::Metrics;
use tch::{Device, Kind, Tensor};

/// Each row's real length (b) of a right-padded batch.
fn lengths(batch: &Batch) -> Tensor {
    batch.mask.sum_dim_intlist(1, false, Kind::Int64)
}

/// The LM logits (b, words) of the answer words' first tokens at each row's last prompt token.
pub fn word_logits(llama: &Llama, p: &Prompter, batch: &Batch, ctx: &Ctx) -> Tensor {
    let h = llama.hidden(&batch.ids, &batch.mask, ctx); // (b, t, d)
    let last = (lengths(batch) - 1).clamp_min(0).view([-1, 1, 1]).expand([-1, 1, h.size()[2]], false);
    let h_last = h.gather(1, &last, false).squeeze_dim(1); // (b, d)
    let ids = Tensor::from_slice(&p.word_ids).to_device(h.device());
    llama.lm_logits(&h_last).index_select(1, &ids)
}

/// Positions (b, t-1) whose next token is a response token (token type 1).
fn response_positions(batch: &Batch) -> Tensor {
    let t = batch.types.size()[1];
    batch.types.narrow(1, 1, t - 1).eq(1)
}

/// The response tokens a generation batch's loss averages over (0-d float).
pub fn response_tokens(batch: &Batch) -> Tensor {
    response_positions(batch).sum(Kind::Float)
}

/// The LM logits (n, vocab) that predict the n response tokens of a generation batch, and those tokens.
pub fn response_logits(llama: &Llama, batch: &Batch, ctx: &Ctx) -> (Tensor, Tensor) {
    let t = batch.ids.size()[1];
    let h = llama.hidden(&batch.ids, &batch.mask, ctx); // (b, t, d)
    let at = response_positions(batch); // (b, t-1)
    let d = h.size()[2];
    let sel = h.narrow(1, 0, t - 1).masked_select(&at.unsqueeze(-1)).view([-1, d]); // (n, d)
    let targets = batch.ids.narrow(1, 1, t - 1).masked_select(&at); // (n)
    (llama.lm_logits(&sel), targets)
}

/// The task's logits for a batch: answer-word logits (b, words), or the response logits (n, vocab).
pub fn logits(llama: &Llama, p: &Prompter, batch: &Batch, ctx: &Ctx) -> Tensor {
    if p.kind == TaskKind::Generation {
        response_logits(llama, batch, ctx).0
    } else {
        word_logits(llama, p, batch, ctx)
    }
}

/// Mean loss: cross-entropy over the answer words (regression: against the two digits around the
/// score, weighted by closeness); generation: cross-entropy of the response tokens.
pub fn loss_from_logits(p: &Prompter, logits: &Tensor, batch: &Batch) -> Tensor {
    match p.kind {
        TaskKind::Generation => {
            let t = batch.ids.size()[1];
            let targets = batch.ids.narrow(1, 1, t - 1).masked_select(&response_positions(batch));
            logits.cross_entropy_for_logits(&targets)
        }
        TaskKind::Regression => {
            let n = logits.size()[1];
            let s = batch.labels.to_kind(Kind::Float).clamp(0.0, (n - 1) as f64); // (b)
            let lo = s.floor().clamp_max((n - 2) as f64);
            let w_hi = (&s - &lo).unsqueeze(1); // (b, 1)
            let lo = lo.to_kind(Kind::Int64).unsqueeze(1);
            let soft = logits.zeros_like().scatter(1, &lo, &(w_hi.ones_like() - &w_hi)).scatter(
                1,
                &(&lo + 1),
                &w_hi,
            ); // (b, n): two-hot
            -(soft * logits.log_softmax(-1, Kind::Float))
                .sum_dim_intlist(1, false, Kind::Float)
                .mean(Kind::Float)
        }
        _ => logits.cross_entropy_for_logits(&batch.labels),
    }
}

/// Predictions of a classification or regression batch: the best answer word, or the expected digit.
pub fn predict(llama: &Llama, p: &Prompter, batch: &Batch, ctx: &Ctx) -> Result<Vec<Target>> {
    let logits = tch::no_grad(|| word_logits(llama, p, batch, ctx)).to_device(Device::Cpu);
    crate::model::check_finite(&logits, "logits")?;
    let read =
        |e: tch::TchError| Error::Tensor { key: "predictions".into(), msg: format!("cannot read back: {e}") };
    if p.kind == TaskKind::Regression {
        let digits = Tensor::arange(logits.size()[1], (Kind::Float, Device::Cpu));
        let e = (logits.softmax(-1, Kind::Float) * digits).sum_dim_intlist(1, false, Kind::Float);
        return Ok(Vec::<f32>::try_from(&e).map_err(read)?.into_iter().map(Target::Score).collect());
    }
    let best = Vec::<i64>::try_from(&logits.argmax(-1, false)).map_err(read)?;
    Ok(best.into_iter().map(|c| Target::Class(c as usize)).collect())
}

/// The prompts of a batch (the tokens of type 0 of each row), LEFT-padded with `pad`: (ids, mask).
pub fn left_padded_prompts(items: &[&Encoded], pad: i64, device: Device) -> (Tensor, Tensor) {
    let prompts: Vec<Vec<i64>> = items
        .iter()
        .map(|e| {
            let (ids, types) = &e.rows[0];
            ids.iter().zip(types).take_while(|(_, t)| **t == 0).map(|(i, _)| *i).collect()
        })
        .collect();
    let t = prompts.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for p in &prompts {
        ids.extend(std::iter::repeat_n(pad, t - p.len()).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, t - p.len()).chain(std::iter::repeat_n(1, p.len())));
    }
    let mk = |v: Vec<i64>| Tensor::from_slice(&v).view([prompts.len() as i64, t as i64]).to_device(device);
    (mk(ids), mk(mask))
}

/// Greedy continuations (one id list per row, up to the end token) of a batch's prompts.
pub fn generate(
    llama: &Llama,
    p: &Prompter,
    items: &[&Encoded],
    max_new: i64,
    ctx: &Ctx,
) -> Result<Vec<Vec<i64>>> {
    let (ids, mask) = left_padded_prompts(items, p.pad, llama.device());
    let out = llama.generate(&ids, &mask, max_new, &p.eos, p.pad, ctx).to_device(Device::Cpu);
    let rows = Vec::<Vec<i64>>::try_from(&out)
        .map_err(|e| Error::Tensor { key: "generated ids".into(), msg: format!("cannot read back: {e}") })?;
    Ok(rows.into_iter().map(|r| r.into_iter().take_while(|i| !p.eos.contains(i)).collect()).collect())
}

/// Metrics of a generation task: `exact_match` (greedy output, up to the end token, equal to the
/// reference reply as text, x100) and `response_loglik` (mean log-likelihood per reply token).
pub fn evaluate_generation(llama: &Llama, p: &Prompter, data: &[Encoded], bs: usize) -> Result<Metrics> {
    let order: Vec<usize> = (0..data.len()).collect();
    let (mut hits, mut loglik, mut tokens) = (0usize, 0.0f64, 0i64);
    let ctx = Ctx::eval();
    for items in batches(data, &order, bs) {
        let b = Batch::new(&items, llama.device());
        let nll = tch::no_grad(|| {
            let (lg, targets) = response_logits(llama, &b, &ctx);
            lg.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Sum, -100, 0.0)
        });
        let n = b.types.sum(Kind::Int64).int64_value(&[]);
        let nll = nll.double_value(&[]);
        if !nll.is_finite() {
            return Err(Error::Train(
                "non-finite response log-likelihood: the model's output holds NaN or infinity".into(),
            ));
        }
        (loglik, tokens) = (loglik - nll, tokens + n);
        let gold: Vec<Vec<i64>> = items
            .iter()
            .map(|e| {
                e.rows[0].0.iter().zip(&e.rows[0].1).filter(|(_, t)| **t == 1).map(|(i, _)| *i).collect()
            })
            .collect();
        let max_new = gold.iter().map(Vec::len).max().unwrap_or(1) as i64;
        let out = generate(llama, p, &items, max_new.max(1), &ctx)?;
        hits += out.iter().zip(&gold).filter(|(o, g)| p.text(o) == p.text(g)).count();
    }
    let mut m = Metrics::new();
    m.insert("exact_match".into(), 100.0 * hits as f64 / data.len().max(1) as f64);
    m.insert("response_loglik".into(), loglik / tokens.max(1) as f64);
    Ok(m)
}

/// New tokens `predict` generates after a classification prompt, and after an instruction.
pub const PREDICT_NEW_TOKENS: (i64, i64) = (16, 128);

/// `predict` on a decoder run: per input (text_a, text_b) its prompt's answer (the best answer word
/// and the word logits, or the expected digit) and the greedy continuation as text; for a generation
/// task the input is the user's message and the output the reply.
pub fn predict_lines(
    llama: &Llama,
    p: &Prompter,
    spec: &crate::data::TaskSpec,
    inputs: &[(String, Option<String>)],
    max_len: usize,
) -> Result<Vec<serde_json::Value>> {
    let examples: Vec<crate::data::Example> = inputs
        .iter()
        .map(|(a, b)| {
            let texts = if p.kind == TaskKind::Generation {
                let m = [crate::chat::Message::new("user", a), crate::chat::Message::new("assistant", "")];
                vec![(serde_json::to_string(&m).unwrap_or_default(), None)]
            } else {
                vec![(a.clone(), b.clone())]
            };
            crate::data::Example { texts, target: Target::Class(0), group: None, source: "input".into() }
        })
        .collect();
    let items: Vec<Encoded> = examples.iter().map(|e| p.encode(spec, e, max_len)).collect::<Result<_>>()?;
    let refs: Vec<&Encoded> = items.iter().collect();
    let new = if p.kind == TaskKind::Generation { PREDICT_NEW_TOKENS.1 } else { PREDICT_NEW_TOKENS.0 };
    let texts: Vec<String> =
        generate(llama, p, &refs, new, &Ctx::eval())?.iter().map(|g| p.text(g)).collect();
    if p.kind == TaskKind::Generation {
        return Ok(texts.into_iter().map(|t| serde_json::json!({ "text": t })).collect());
    }
    let batch = Batch::new(&refs, llama.device());
    let logits = tch::no_grad(|| word_logits(llama, p, &batch, &Ctx::eval())).to_device(Device::Cpu);
    crate::model::check_finite(&logits, "logits")?;
    let rows = Vec::<Vec<f32>>::try_from(&logits)
        .map_err(|e| Error::Tensor { key: "logits".into(), msg: format!("cannot read back: {e}") })?;
    let preds = predict(llama, p, &batch, &Ctx::eval())?;
    Ok(rows
        .into_iter()
        .zip(preds)
        .zip(texts)
        .map(|((row, pred), text)| match pred {
            Target::Score(s) => serde_json::json!({ "score": s, "text": text }),
            Target::Class(c) => serde_json::json!({
                "label": spec.labels.get(c).cloned().unwrap_or_else(|| c.to_string()),
                "word": p.words.get(c), "logits": row, "text": text,
            }),
        })
        .collect())
}
