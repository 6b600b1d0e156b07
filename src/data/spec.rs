//! Declarative task specs: one TOML table says where a task's files are, how to turn a row into
//! texts and a target, which metrics to report and which split protocol applies. The builtin specs
//! live in `src/data/tasks/*.toml`; a user adds a task by writing such a file, with no code change.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics;

/// What the head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Classification,
    Regression,
    /// One score per (text_a, choice) pair, softmax over the choices.
    MultipleChoice,
}

/// File format of the task's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tab-separated, no quote processing, one example per line.
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

/// How a parsed line becomes examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reader {
    /// One line = one example.
    #[default]
    Flat,
    /// SuperGLUE MultiRC: one line = one passage; one example per answer. Templates see the fields
    /// `passage.*`, `question.*`, `answer.*` (any other path is looked up in the line's object);
    /// the group is `<passage idx>-<question idx>`; a passage is one split unit.
    Multirc,
}

/// Which split protocol applies (S3PET.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// Official dev shuffled and halved into dev and test.
    #[default]
    Small,
    /// `dev_size` shuffled train examples become dev; the official dev set is test.
    Large,
}

/// A task, as written in TOML. Templates (`text_a`, `text_b`, `choices`) hold literal text and
/// `{field}` references; `{{` and `}}` are literal braces. A field is a TSV column name (files with a
/// header), a 0-based column index (`{3}`), or a dotted JSON path (`{target.span2_text}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    pub format: Format,
    /// TSV only: the first non-empty line names the columns. Default true.
    #[serde(default = "default_true")]
    pub header: bool,
    #[serde(default)]
    pub reader: Reader,
    /// Paths relative to the data dir (an absolute path is used as is).
    pub train: PathBuf,
    /// The official dev set (halved for small tasks, the test set for large ones).
    pub dev: PathBuf,
    /// A labelled test file. When set, the protocol is bypassed: train, official dev and this file
    /// are used as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    pub text_a: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_b: Option<String>,
    /// Multiple choice only: one template per choice; each becomes the text_b of its own pair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The field holding the gold label (a field name as in templates, without braces).
    pub label: String,
    /// Label values as strings, in class-index order (JSON true/false/ints in their string form).
    /// Multiple choice: one value per choice. Regression: empty (the field is parsed as a number).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Metric names (see `metrics::NAMES`); the first one selects checkpoints.
    pub metrics: Vec<String>,
    #[serde(default)]
    pub size: Size,
    /// Large tasks: how many train examples become dev. Default 2000.
    #[serde(default = "default_dev_size")]
    pub dev_size: usize,
    /// Reference max sequence length (a default for the trainer's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// Reference epochs for search and retrain (a default for the trainer's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Reference batch size (a default for the trainer's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Reference search epochs when they differ from `epochs` (a default for `search` and `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_epochs: Option<usize>,
    /// Evaluate dev every K steps (a default; runs always evaluate at each epoch's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
}

fn default_true() -> bool {
    true
}

fn default_dev_size() -> usize {
    2000
}

const BUILTIN: &[(&str, &str)] = &[
    ("cola", include_str!("tasks/cola.toml")),
    ("sst2", include_str!("tasks/sst2.toml")),
    ("mrpc", include_str!("tasks/mrpc.toml")),
    ("stsb", include_str!("tasks/stsb.toml")),
    ("qqp", include_str!("tasks/qqp.toml")),
    ("mnli", include_str!("tasks/mnli.toml")),
    ("mnli-mm", include_str!("tasks/mnli-mm.toml")),
    ("qnli", include_str!("tasks/qnli.toml")),
    ("rte", include_str!("tasks/rte.toml")),
    ("wnli", include_str!("tasks/wnli.toml")),
    ("cb", include_str!("tasks/cb.toml")),
    ("copa", include_str!("tasks/copa.toml")),
    ("boolq", include_str!("tasks/boolq.toml")),
    ("multirc", include_str!("tasks/multirc.toml")),
    ("wic", include_str!("tasks/wic.toml")),
    ("wsc", include_str!("tasks/wsc.toml")),
];

impl TaskSpec {
    /// Names of the builtin tasks.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// A builtin spec by name (`None` for an unknown name).
    pub fn builtin(name: &str) -> Option<TaskSpec> {
        Self::builtin_result(name).and_then(|r| r.ok())
    }

    fn builtin_result(name: &str) -> Option<Result<TaskSpec>> {
        BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, src)| Self::from_toml_str(src, &format!("builtin {n}")))
    }

    /// Parses and validates a spec; `origin` names it in errors.
    pub fn from_toml_str(src: &str, origin: &str) -> Result<TaskSpec> {
        let spec: TaskSpec =
            toml::from_str(src).map_err(|e| Error::config(origin, format!("invalid task spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and validates a user's TOML spec; errors name the file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<TaskSpec> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec: TaskSpec =
            toml::from_str(&src).map_err(|e| Error::file(path, format!("invalid task spec: {e}")))?;
        spec.validate().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(spec)
    }

    /// A builtin name, else a path to a `.toml` spec.
    pub fn resolve(name_or_path: &str) -> Result<TaskSpec> {
        if let Some(r) = Self::builtin_result(name_or_path) {
            return r;
        }
        let path = Path::new(name_or_path);
        if path.is_file() || name_or_path.ends_with(".toml") {
            return Self::from_toml_file(path);
        }
        Err(Error::config(
            "task",
            format!(
                "unknown task `{name_or_path}`: not a builtin ({}) and not a .toml spec file",
                Self::builtin_names().join(", ")
            ),
        ))
    }

    /// Outputs of the head: the class count; 1 for regression and for multiple choice (one score
    /// per choice).
    pub fn num_labels(&self) -> usize {
        match self.kind {
            TaskKind::Classification => self.labels.len(),
            TaskKind::Regression | TaskKind::MultipleChoice => 1,
        }
    }

    /// Checks what serde cannot: templates, labels against the kind, metric names.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(format!("{}.{key}", self.name), msg));
        if self.name.trim().is_empty() {
            return Err(Error::config("name", "task name is empty"));
        }
        parse_template(&self.text_a).map_err(|m| Error::config(format!("{}.text_a", self.name), m))?;
        if let Some(b) = &self.text_b {
            parse_template(b).map_err(|m| Error::config(format!("{}.text_b", self.name), m))?;
        }
        for c in &self.choices {
            parse_template(c).map_err(|m| Error::config(format!("{}.choices", self.name), m))?;
        }
        if self.label.trim().is_empty() {
            return bad("label", "no label field given".into());
        }
        for (i, l) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(l) {
                return bad("labels", format!("label `{l}` is listed twice"));
            }
        }
        match self.kind {
            TaskKind::Classification if self.labels.len() < 2 => {
                return bad("labels", "classification needs at least 2 label values".into());
            }
            TaskKind::Regression if !self.labels.is_empty() => {
                return bad("labels", "regression takes no label values (the field is a number)".into());
            }
            TaskKind::MultipleChoice if self.choices.len() < 2 => {
                return bad("choices", "multiple choice needs at least 2 choice templates".into());
            }
            TaskKind::MultipleChoice if self.labels.len() != self.choices.len() => {
                return bad("labels", "multiple choice needs one label value per choice".into());
            }
            TaskKind::MultipleChoice if self.text_b.is_some() => {
                return bad("text_b", "multiple choice takes no text_b (each choice is the text_b)".into());
            }
            _ => {}
        }
        if self.kind != TaskKind::MultipleChoice && !self.choices.is_empty() {
            return bad("choices", "choices are only for kind = \"multiple_choice\"".into());
        }
        if self.reader == Reader::Multirc && self.format != Format::Jsonl {
            return bad("reader", "the multirc reader reads JSONL".into());
        }
        if self.size == Size::Large && self.dev_size == 0 {
            return bad("dev_size", "a large task needs dev_size >= 1".into());
        }
        self.validate_metrics()
    }

    fn validate_metrics(&self) -> Result<()> {
        let key = format!("{}.metrics", self.name);
        if self.metrics.is_empty() {
            return Err(Error::config(key, "no metrics given (the first one selects)"));
        }
        for m in &self.metrics {
            if !metrics::NAMES.contains(&m.as_str()) {
                let known = metrics::NAMES.join(", ");
                return Err(Error::config(key, format!("unknown metric `{m}` (known: {known})")));
            }
            if metrics::is_regression_metric(m) != (self.kind == TaskKind::Regression) {
                return Err(Error::config(key, format!("metric `{m}` does not fit kind {:?}", self.kind)));
            }
            if m == "multirc_em" && self.reader != Reader::Multirc {
                return Err(Error::config(key, "multirc_em needs reader = \"multirc\" (question groups)"));
            }
        }
        Ok(())
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(String),
    Field(String),
}

/// Parses `literal {field} literal`; `{{`/`}}` are literal braces.
pub(crate) fn parse_template(s: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => return Err(format!("unclosed `{{` in template `{s}`")),
                        Some(ch) => field.push(ch),
                    }
                }
                if field.is_empty() {
                    return Err(format!("empty `{{}}` in template `{s}`"));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Field(field));
            }
            '}' => return Err(format!("unmatched `}}` in template `{s}` (write `}}}}` for a brace)")),
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_validates() {
        for name in TaskSpec::builtin_names() {
            let spec = TaskSpec::builtin_result(name).unwrap().unwrap();
            assert_eq!(spec.name, name);
        }
        assert_eq!(TaskSpec::builtin_names().len(), 16);
    }

    #[test]
    fn num_labels_by_kind() {
        assert_eq!(TaskSpec::builtin("mnli").unwrap().num_labels(), 3);
        assert_eq!(TaskSpec::builtin("stsb").unwrap().num_labels(), 1);
        assert_eq!(TaskSpec::builtin("copa").unwrap().num_labels(), 1);
        assert_eq!(TaskSpec::builtin("rte").unwrap().num_labels(), 2);
    }

    #[test]
    fn templates_parse() {
        let p = parse_template("{premise} What was the {question}?").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Field("premise".into()),
                Piece::Lit(" What was the ".into()),
                Piece::Field("question".into()),
                Piece::Lit("?".into())
            ]
        );
        assert_eq!(parse_template("{{x}} {#1 String}").unwrap().len(), 2);
        assert!(parse_template("{open").is_err());
        assert!(parse_template("close}").is_err());
        assert!(parse_template("{}").is_err());
    }

    #[test]
    fn resolve_builtin_file_and_unknown() {
        assert_eq!(TaskSpec::resolve("rte").unwrap().name, "rte");
        let err = TaskSpec::resolve("nope").unwrap_err().to_string();
        assert!(err.contains("cola") && err.contains("multirc"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.toml");
        let src = include_str!("tasks/rte.toml").replace("name = \"rte\"", "name = \"mine\"");
        std::fs::write(&path, src).unwrap();
        assert_eq!(TaskSpec::resolve(path.to_str().unwrap()).unwrap().name, "mine");
        let missing = dir.path().join("missing.toml");
        assert!(TaskSpec::resolve(missing.to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("missing.toml"));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let rte = include_str!("tasks/rte.toml");
        let unknown_field = format!("{rte}\nlabelz = 3\n");
        assert!(TaskSpec::from_toml_str(&unknown_field, "t").unwrap_err().to_string().contains("labelz"));
        let bad_metric = rte.replace("[\"accuracy\"]", "[\"pearson\"]");
        assert!(TaskSpec::from_toml_str(&bad_metric, "t").is_err());
        let unknown_metric = rte.replace("[\"accuracy\"]", "[\"bleu\"]");
        assert!(TaskSpec::from_toml_str(&unknown_metric, "t").unwrap_err().to_string().contains("bleu"));
        let one_label = rte.replace("labels = [\"entailment\", \"not_entailment\"]", "labels = [\"x\"]");
        assert!(TaskSpec::from_toml_str(&one_label, "t").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let spec = TaskSpec::builtin("copa").unwrap();
        let text = toml::to_string(&spec).unwrap();
        assert_eq!(TaskSpec::from_toml_str(&text, "rt").unwrap(), spec);
    }
}
