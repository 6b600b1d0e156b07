//! Tasks as text-to-text, for encoder-decoders (T5): each example becomes one source string
//! `"<task> <name_a>: <text_a> <name_b>: <text_b>"` (multiple choice: `"<task> <name_a>: <text_a>
//! <choice name>: <choice> ..."`), and its target the label word (the task spec's label value; STS-B the
//! score rounded to 0.2 as a number string, "3.8"). Predictions are greedy decodes mapped back to labels;
//! an output that is no label counts as wrong.
use crate::data::template::{parse_template, Piece};
use crate::data::{Example, Target, TaskKind, TaskSpec};
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// The name a template's text goes by in the source: its first plain field (`{sentence1}` ->
/// `sentence1`, `{passage.text}` -> `passage`), else `fallback` (column indices, `{#1 String}`).
fn field_name(template: &str, fallback: &str) -> String {
    let plain = |f: &str| {
        let head = f.split('.').next().unwrap_or("");
        let ok = !head.is_empty()
            && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !head.chars().all(|c| c.is_ascii_digit());
        ok.then(|| head.to_string())
    };
    parse_template(template)
        .unwrap_or_default()
        .iter()
        .find_map(|p| match p {
            Piece::Field(f) => plain(f),
            Piece::Lit(_) => None,
        })
        .unwrap_or_else(|| fallback.to_string())
}

/// The source string of an example.
pub fn source(spec: &TaskSpec, ex: &Example) -> String {
    let mut s = spec.name.clone();
    let (a_fallback, b_fallback) =
        if spec.text_b.is_some() { ("sentence1", "sentence2") } else { ("sentence", "") };
    let mut push = |name: &str, text: &str| {
        s.push(' ');
        s.push_str(name);
        s.push_str(": ");
        s.push_str(text.trim());
    };
    let Some((a, b)) = ex.texts.first() else { return s };
    push(&field_name(&spec.text_a, a_fallback), a);
    if spec.kind == TaskKind::MultipleChoice {
        for (i, (_, choice)) in ex.texts.iter().enumerate() {
            let fallback = format!("choice{}", i + 1);
            let name = spec.choices.get(i).map_or(fallback.clone(), |t| field_name(t, &fallback));
            push(&name, choice.as_deref().unwrap_or(""));
        }
    } else if let Some(b) = b {
        push(&field_name(spec.text_b.as_deref().unwrap_or(""), b_fallback), b);
    }
    s
}

/// Examples with their texts replaced by one source string (targets unchanged).
pub fn to_sources(spec: &TaskSpec, examples: Vec<Example>) -> Vec<Example> {
    examples.into_iter().map(|ex| Example { texts: vec![(source(spec, &ex), None)], ..ex }).collect()
}

/// STS-B style targets: scores 0.0 .. 5.0 in steps of 0.2.
const SCORE_STEPS: usize = 25;

/// The task's target words, tokenised: the label values, or the score grid for regression.
#[derive(Clone)]
pub struct Verbalizer {
    pub words: Vec<String>,
    /// Token ids of each word, end-of-sequence token included.
    pub ids: Vec<Vec<i64>>,
    pub regression: bool,
    tok: Tokenizer,
    eos: i64,
}

impl Verbalizer {
    pub fn new(spec: &TaskSpec, tokenizer: &Path, eos: i64) -> Result<Self> {
        let tok = Tokenizer::from_file(tokenizer)
            .map_err(|e| Error::file(tokenizer, format!("bad tokenizer: {e}")))?;
        let regression = spec.kind == TaskKind::Regression;
        let words: Vec<String> = if regression {
            (0..=SCORE_STEPS).map(|i| format!("{:.1}", i as f64 * 0.2)).collect()
        } else {
            spec.labels.clone()
        };
        let mut ids = Vec::new();
        for w in &words {
            let enc =
                tok.encode(w.as_str(), true).map_err(|e| Error::Msg(format!("tokenizing {w:?}: {e}")))?;
            let mut v: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
            if v.last() != Some(&eos) {
                v.push(eos);
            }
            ids.push(v);
        }
        if words.is_empty() {
            return Err(Error::config(&spec.name, "a text-to-text task needs label values"));
        }
        Ok(Verbalizer { words, ids, regression, tok, eos })
    }

    /// The word index of a gold target (a score goes to the nearest step of 0.2).
    pub fn index(&self, t: &Target) -> usize {
        match t {
            Target::Class(c) => (*c).min(self.words.len() - 1),
            Target::Score(s) => ((f64::from(*s) * 5.0).round().max(0.0) as usize).min(SCORE_STEPS),
        }
    }

    pub fn target_ids(&self, t: &Target) -> &[i64] {
        &self.ids[self.index(t)]
    }

    /// The longest target in tokens (end-of-sequence included): how far greedy decoding needs to go.
    pub fn max_len(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// The text of generated ids (start token first), up to the end-of-sequence token.
    pub fn text(&self, generated: &[i64]) -> String {
        let body: Vec<u32> =
            generated.iter().skip(1).take_while(|&&i| i != self.eos).map(|&i| i.max(0) as u32).collect();
        self.tok.decode(&body, true).unwrap_or_default().trim().to_string()
    }

    /// Generated ids mapped back to a label: the word whose ids they are, else the word their text
    /// spells; a number for regression (-1 when none, as T5's evaluation does). A class index
    /// past the labels means "no label" (always wrong).
    pub fn decode(&self, generated: &[i64]) -> Target {
        let body: Vec<i64> = generated.iter().skip(1).copied().collect();
        let hit = self.ids.iter().position(|w| body.len() >= w.len() && body[..w.len()] == w[..]);
        let text = self.text(generated);
        if self.regression {
            let word = hit.map_or(text.as_str(), |i| self.words[i].as_str());
            return Target::Score(word.parse::<f32>().unwrap_or(-1.0));
        }
        let i = hit.or_else(|| self.words.iter().position(|w| *w == text)).unwrap_or(self.words.len());
        Target::Class(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(texts: &[(&str, Option<&str>)]) -> Example {
        Example {
            texts: texts.iter().map(|(a, b)| (a.to_string(), b.map(str::to_string))).collect(),
            target: Target::Class(0),
            group: None,
            source: "t:1".into(),
        }
    }

    #[test]
    fn sources_name_their_fields() {
        let rte = TaskSpec::builtin("rte").unwrap();
        assert_eq!(source(&rte, &ex(&[("A b.", Some("C."))])), "rte sentence1: A b. sentence2: C.");
        let cola = TaskSpec::builtin("cola").unwrap();
        assert_eq!(source(&cola, &ex(&[("It is.", None)])), "cola sentence: It is.");
        let mrpc = TaskSpec::builtin("mrpc").unwrap();
        assert_eq!(source(&mrpc, &ex(&[("a", Some("b"))])), "mrpc sentence1: a sentence2: b");
        let cb = TaskSpec::builtin("cb").unwrap();
        assert_eq!(source(&cb, &ex(&[("p", Some("h"))])), "cb premise: p hypothesis: h");
        let copa = TaskSpec::builtin("copa").unwrap();
        assert_eq!(
            source(
                &copa,
                &ex(&[
                    ("It fell. What was the cause?", Some("x")),
                    ("It fell. What was the cause?", Some("y"))
                ])
            ),
            "copa premise: It fell. What was the cause? choice1: x choice2: y"
        );
        let multirc = TaskSpec::builtin("multirc").unwrap();
        assert_eq!(source(&multirc, &ex(&[("P.", Some("Q? A"))])), "multirc passage: P. question: Q? A");
    }
}
