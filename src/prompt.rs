//! Tasks for decoder-only LLMs. A classification (or regression, or multiple-choice) example becomes a
//! prompt: its texts under names, a question and the answer words (`Premise: ...\nHypothesis: ...\nDoes
//! the premise entail the hypothesis? Answer yes or no.`), rendered as the user's turn of the model's
//! chat template (tokenizer_config.json `chat_template`; a model without one gets the plain prompt
//! `<body>\nAnswer:`). Its label is one answer word per class, scored by the LM logit of the word's first
//! token at the prompt's last position (regression: the digits 0..5, the prediction their expected
//! value). An instruction example (a conversation ending with the assistant's reply) becomes the prompt
//! tokens followed by the reply's tokens (token type 1: the loss is on them only).
use crate::chat::{ChatTemplate, Message};
use crate::data::{Example, Target, TaskKind, TaskSpec};
use crate::error::{Error, Result};
use crate::tokenize::Encoded;
use std::path::Path;
use tokenizers::Tokenizer;

/// How a builtin task is asked: the names of its two texts, the question, one answer word per label.
struct Ask {
    names: (&'static str, &'static str),
    question: &'static str,
    words: &'static [&'static str],
}

const YES_NO: &[&str] = &["yes", "no"];
const NO_YES: &[&str] = &["no", "yes"];
const ENTAIL: &str = "Does the premise entail the hypothesis? Answer yes or no.";

fn ask(task: &str) -> Option<Ask> {
    let a = |names, question, words| Some(Ask { names, question, words });
    match task {
        "cola" => a(("Sentence", ""), "Is this sentence grammatically acceptable? Answer yes or no.", NO_YES),
        "sst2" => a(("Review", ""), "Is this review positive or negative?", &["negative", "positive"]),
        "mrpc" => a(("Sentence 1", "Sentence 2"), "Do the two sentences mean the same? Answer yes or no.", NO_YES),
        "qqp" => a(("Question 1", "Question 2"), "Do the two questions ask the same? Answer yes or no.", NO_YES),
        "stsb" => a(
            ("Sentence 1", "Sentence 2"),
            "How similar are the two sentences, from 0 (unrelated) to 5 (the same meaning)? Answer with one digit.",
            &["0", "1", "2", "3", "4", "5"],
        ),
        "mnli" | "mnli-mm" => a(
            ("Premise", "Hypothesis"),
            "Does the premise entail the hypothesis? Answer yes, maybe or no.",
            &["yes", "maybe", "no"],
        ),
        "cb" => a(
            ("Premise", "Hypothesis"),
            "Does the premise entail the hypothesis? Answer yes, no or maybe.",
            &["yes", "no", "maybe"],
        ),
        "rte" => a(("Premise", "Hypothesis"), ENTAIL, YES_NO),
        "wnli" => a(("Premise", "Hypothesis"), ENTAIL, NO_YES),
        "qnli" => a(("Question", "Sentence"), "Does the sentence answer the question? Answer yes or no.", YES_NO),
        "boolq" => a(("Question", "Passage"), "Is the answer to the question yes or no?", NO_YES),
        "multirc" => a(
            ("Paragraph", "Question and answer"),
            "Is the answer to the question correct? Answer yes or no.",
            NO_YES,
        ),
        "wic" => a(
            ("Word: sentence 1", "Sentence 2"),
            "Is the word used with the same meaning in both sentences? Answer yes or no.",
            NO_YES,
        ),
        "wsc" => a(("Text", "Claim"), "Is the claim about the pronoun right? Answer yes or no.", NO_YES),
        "copa" => a(("Premise", "Option"), "Which option is more plausible? Answer 1 or 2.", &["1", "2"]),
        _ => None,
    }
}

/// The user's message of an example: its texts under their names, then the question.
pub fn body(spec: &TaskSpec, ex: &Example) -> String {
    let fallback = format!("Answer with one of: {}.", spec.labels.join(", "));
    let (names, question) = match ask(&spec.name) {
        Some(a) => (a.names, a.question.to_string()),
        None => (("Text", "Second text"), fallback),
    };
    let mut s = String::new();
    let Some((a, b)) = ex.texts.first() else { return question };
    s += &format!("{}: {}\n", names.0, a.trim());
    if spec.kind == TaskKind::MultipleChoice {
        for (i, (_, choice)) in ex.texts.iter().enumerate() {
            s += &format!("{} {}: {}\n", names.1, i + 1, choice.as_deref().unwrap_or("").trim());
        }
    } else if let Some(b) = b {
        s += &format!("{}: {}\n", names.1, b.trim());
    }
    s + &question
}

/// The answer words of a task: the builtin table's, else the spec's label values.
pub fn words(spec: &TaskSpec) -> Vec<String> {
    match ask(&spec.name) {
        Some(a) => a.words.iter().map(|w| w.to_string()).collect(),
        None if spec.kind == TaskKind::Regression => (0..=5).map(|d| d.to_string()).collect(),
        None => spec.labels.clone(),
    }
}

/// A decoder task on one model: its tokenizer and chat template, the answer words' token ids, the end
/// tokens of generation.
#[derive(Clone)]
pub struct Prompter {
    pub kind: TaskKind,
    pub words: Vec<String>,
    /// The first token of each answer word as it follows the prompt.
    pub word_ids: Vec<i64>,
    /// Tokens that end generation (generation_config.json's `eos_token_id`, else config.json's).
    pub eos: Vec<i64>,
    pub pad: i64,
    tok: Tokenizer,
    chat: Option<ChatTemplate>,
}

fn read_eos(dir: &Path, fallback: Vec<i64>) -> Vec<i64> {
    let v: Option<serde_json::Value> = std::fs::read_to_string(dir.join("generation_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let ids: Vec<i64> = match v.as_ref().and_then(|v| v.get("eos_token_id")) {
        Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => Vec::new(),
    };
    if ids.is_empty() {
        fallback
    } else {
        ids
    }
}

impl Prompter {
    /// The prompter of `spec` on the model in `dir` (tokenizer.json, tokenizer_config.json).
    pub fn new(spec: &TaskSpec, dir: &Path, cfg: &crate::backbone::LlamaConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let mut tok =
            Tokenizer::from_file(&path).map_err(|e| Error::file(&path, format!("bad tokenizer: {e}")))?;
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| Error::file(&path, e.to_string()))?;
        let chat = ChatTemplate::from_model_dir(dir)?;
        let eos = read_eos(dir, cfg.eos_ids());
        let pad = cfg.pad_id().or(eos.first().copied()).unwrap_or(0);
        let mut p =
            Prompter { kind: spec.kind, words: Vec::new(), word_ids: Vec::new(), eos, pad, tok, chat };
        if spec.kind != TaskKind::Generation {
            p.words = words(spec);
            let expected = match spec.kind {
                TaskKind::Regression => 6,
                TaskKind::MultipleChoice => spec.choices.len(),
                _ => spec.labels.len(),
            };
            if p.words.len() != expected {
                return Err(Error::config(
                    &spec.name,
                    format!("{} answer words for {expected} labels", p.words.len()),
                ));
            }
            p.word_ids = p.words.iter().map(|w| p.word_id(w)).collect::<Result<_>>()?;
            for (i, id) in p.word_ids.iter().enumerate() {
                if let Some(j) = p.word_ids[..i].iter().position(|x| x == id) {
                    let (a, b) = (&p.words[j], &p.words[i]);
                    return Err(Error::config(
                        &spec.name,
                        format!(
                            "answer words `{a}` and `{b}` begin with the same token of {}",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Ok(p)
    }

    fn ids(&self, text: &str, special: bool) -> Result<Vec<i64>> {
        let enc =
            self.tok.encode(text, special).map_err(|e| Error::Msg(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// The first token of `word` after a prompt (after the chat template's assistant opener, or after
    /// `Answer:` with a space).
    fn word_id(&self, word: &str) -> Result<i64> {
        let text = if self.chat.is_some() { word.to_string() } else { format!(" {word}") };
        self.ids(&text, false)?
            .first()
            .copied()
            .ok_or_else(|| Error::Msg(format!("answer word {word:?} has no tokens")))
    }

    /// Prompt ids of a user message: the chat template's rendering with the assistant's turn opened, or
    /// the plain `<body>\nAnswer:` (with the tokenizer's own special tokens).
    pub fn prompt_ids(&self, user: &str) -> Result<Vec<i64>> {
        match &self.chat {
            Some(t) => self.ids(&t.render(&[Message::new("user", user)], true)?, false),
            None => self.ids(&format!("{user}\nAnswer:"), true),
        }
    }

    /// Prompt and response ids of a conversation ending with the assistant's reply.
    pub fn conversation_ids(&self, messages: &[Message]) -> Result<(Vec<i64>, Vec<i64>)> {
        match &self.chat {
            Some(t) => {
                let (prompt, response) = t.split(messages)?;
                Ok((self.ids(&prompt, false)?, self.ids(&response, false)?))
            }
            None => {
                let (last, before) =
                    messages.split_last().ok_or_else(|| Error::Msg("an empty conversation".into()))?;
                let text: Vec<String> = before.iter().map(|m| format!("{}: {}", m.role, m.content)).collect();
                let mut response = self.ids(&format!(" {}", last.content), false)?;
                response.extend(self.eos.first());
                Ok((self.ids(&format!("{}\nassistant:", text.join("\n")), true)?, response))
            }
        }
    }

    /// One example as token ids, at most `max_len` of them: a prompt (classification), or prompt +
    /// response with token type 1 on the response (generation). A prompt too long loses the start of its
    /// longest text, then (if still too long) its first tokens.
    pub fn encode(&self, spec: &TaskSpec, ex: &Example, max_len: usize) -> Result<Encoded> {
        let at = |e: Error| Error::Msg(format!("{}: {e}", ex.source));
        let (mut prompt, mut response) = if spec.kind == TaskKind::Generation {
            let json = ex.texts.first().map(|t| t.0.as_str()).unwrap_or("[]");
            let messages: Vec<Message> = serde_json::from_str(json)
                .map_err(|e| Error::Msg(format!("{}: messages: {e}", ex.source)))?;
            self.conversation_ids(&messages).map_err(at)?
        } else {
            (self.fit(spec, ex, max_len).map_err(at)?, Vec::new())
        };
        response.truncate(max_len.saturating_sub(1).max(1));
        let keep = max_len.saturating_sub(response.len()).max(1);
        if prompt.len() > keep {
            prompt.drain(..prompt.len() - keep);
        }
        let types =
            std::iter::repeat_n(0, prompt.len()).chain(std::iter::repeat_n(1, response.len())).collect();
        prompt.extend(response);
        Ok(Encoded { rows: vec![(prompt, types)], target: ex.target, group: ex.group.clone() })
    }

    /// The prompt of a classification example within `max_len`, shortening its longest text.
    fn fit(&self, spec: &TaskSpec, ex: &Example, max_len: usize) -> Result<Vec<i64>> {
        let mut ex = ex.clone();
        for _ in 0..4 {
            let ids = self.prompt_ids(&body(spec, &ex))?;
            if ids.len() <= max_len {
                return Ok(ids);
            }
            let over = ids.len() - max_len;
            // the longest text of the example loses its tail
            let texts: Vec<&mut String> =
                ex.texts.iter_mut().flat_map(|(a, b)| std::iter::once(a).chain(b.as_mut())).collect();
            let Some(longest) = texts.into_iter().max_by_key(|t| t.len()) else { return Ok(ids) };
            let t_ids = self.ids(longest, false)?;
            let keep: Vec<u32> =
                t_ids.iter().take(t_ids.len().saturating_sub(over + 2)).map(|&i| i as u32).collect();
            *longest = self.tok.decode(&keep, false).map_err(|e| Error::Msg(e.to_string()))?;
        }
        self.prompt_ids(&body(spec, &ex))
    }

    /// Text of generated ids up to the first end token, special tokens dropped, trimmed.
    pub fn text(&self, ids: &[i64]) -> String {
        let body: Vec<u32> =
            ids.iter().take_while(|i| !self.eos.contains(i)).map(|&i| i.max(0) as u32).collect();
        self.tok.decode(&body, true).unwrap_or_default().trim().to_string()
    }

    /// The gold class of a target as a word index (a score: the nearest of 0..5).
    pub fn target_index(&self, t: &Target) -> usize {
        match t {
            Target::Class(c) => *c,
            Target::Score(s) => (s.round().max(0.0) as usize).min(self.words.len().saturating_sub(1)),
        }
    }
}

/// A task's splits tokenised for a decoder-only model.
pub fn prepare(
    cfg: &crate::config::RunConfig,
    md: &crate::model::ModelDir,
) -> Result<crate::train::Prepared> {
    let crate::backbone::ModelConfig::Llama(lc) = &md.cfg else {
        return Err(Error::Msg("prompts are for decoder-only models".into()));
    };
    let (crate::data::TaskData { spec, train, dev, test }, provenance) = crate::train::load_examples(cfg)?;
    let p = Prompter::new(&spec, &md.dir, lc)?;
    let enc =
        |v: Vec<Example>| v.iter().map(|e| p.encode(&spec, e, cfg.max_length)).collect::<Result<Vec<_>>>();
    let (train, dev, test) = (enc(train)?, enc(dev)?, enc(test)?);
    Ok(crate::train::Prepared { spec, train, dev, test, provenance })
}
