//! Declarative task specs: one TOML table says where a task's rows are (files in a data directory,
//! a dataset repo on the Hugging Face Hub, or both), how to turn a row into texts and a target,
//! which metrics to report and which split protocol applies. The builtin specs live in
//! `src/data/tasks/*.toml`; a user adds a task by writing such a file, with no code change.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hub_spec::HubSpec;
use super::template::Templates;
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
    /// Instruction data for decoder LLMs: a conversation whose last turn (the assistant's reply) is
    /// the target, read by `reader = "chat"`; evaluated by generation (exact match) and by the
    /// response's log-likelihood.
    Generation,
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
    /// Instruction data (JSONL, `kind = "generation"`): each line holds `messages` (a list of
    /// `{"role", "content"}` ending with the assistant's reply) or `prompt` and `response`
    /// (`data::instruct`); text_a, text_b and label are not read.
    Chat,
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
/// header), a 0-based column index (`{3}`), or a dotted JSON path (`{target.span2_text}`; hub rows
/// too, e.g. `{idx.paragraph}`). The rows come from files (`format`, `train`, `dev`) in a data
/// directory, from a `[hub]` dataset repo, or from either (the builtin tasks have both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    /// Format of the files (needed with `train` / `dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// TSV only: the first non-empty line names the columns. Default true.
    #[serde(default = "default_true")]
    pub header: bool,
    #[serde(default)]
    pub reader: Reader,
    /// Paths relative to the data dir (an absolute path is used as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// The official dev set (halved for small tasks, the test set for large ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<PathBuf>,
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
    /// Hub rows: an integer label is the class index itself (the Hub's ClassLabel convention).
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
    /// The task's dataset repo on the Hugging Face Hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubSpec>,
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
            TaskKind::Regression | TaskKind::MultipleChoice | TaskKind::Generation => 1,
        }
    }

    /// Checks what serde cannot: templates, labels against the kind, metric names.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(format!("{}.{key}", self.name), msg));
        if self.name.trim().is_empty() {
            return Err(Error::config("name", "task name is empty"));
        }
        Templates::parse(&self.name, &self.text_a, self.text_b.as_deref(), &self.choices)?;
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
            TaskKind::Generation if !self.labels.is_empty() => {
                return bad("labels", "generation takes no label values (the target is the reply)".into());
            }
            TaskKind::Generation if self.has_files() && self.reader != Reader::Chat => {
                return bad("reader", "generation tasks read their files with reader = \"chat\"".into());
            }
            _ => {}
        }
        if self.kind != TaskKind::MultipleChoice && !self.choices.is_empty() {
            return bad("choices", "choices are only for kind = \"multiple_choice\"".into());
        }
        if self.size == Size::Large && self.dev_size == 0 {
            return bad("dev_size", "a large task needs dev_size >= 1".into());
        }
        self.validate_sources()?;
        self.validate_metrics()
    }

    /// Whether the spec names files (`format`, `train`, `dev`) for a data directory.
    pub fn has_files(&self) -> bool {
        self.format.is_some() || self.train.is_some() || self.dev.is_some() || self.test.is_some()
    }

    /// Files: all of `format`, `train`, `dev`; the Hub: a valid `[hub]` table; at least one of both.
    fn validate_sources(&self) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config(format!("{}.{key}", self.name), msg));
        if self.has_files() {
            for (key, given) in [
                ("format", self.format.is_some()),
                ("train", self.train.is_some()),
                ("dev", self.dev.is_some()),
            ] {
                if !given {
                    return bad(key, "task files need `format`, `train` and `dev`");
                }
            }
        } else if self.hub.is_none() {
            return bad("train", "no task data: give files (`format`, `train`, `dev`) or a `[hub]` table");
        }
        if self.reader == Reader::Multirc && self.format != Some(Format::Jsonl) {
            return bad("reader", "the multirc reader reads JSONL files");
        }
        if self.reader == Reader::Chat
            && (self.format != Some(Format::Jsonl) || self.kind != TaskKind::Generation)
        {
            return bad("reader", "the chat reader reads the JSONL files of kind = \"generation\" tasks");
        }
        if self.kind == TaskKind::Generation && self.hub.is_some() {
            return bad("hub", "generation tasks read local JSONL files only");
        }
        self.hub.as_ref().map_or(Ok(()), |h| h.validate(self))
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
            if metrics::is_generation_metric(m) != (self.kind == TaskKind::Generation) {
                return Err(Error::config(key, format!("metric `{m}` does not fit kind {:?}", self.kind)));
            }
            if metrics::is_regression_metric(m) != (self.kind == TaskKind::Regression) {
                return Err(Error::config(key, format!("metric `{m}` does not fit kind {:?}", self.kind)));
            }
            if m == "multirc_em" && self.has_files() && self.reader != Reader::Multirc {
                return Err(Error::config(key, "multirc_em needs reader = \"multirc\" (question groups)"));
            }
            if m == "multirc_em" && self.hub.as_ref().is_some_and(|h| h.group.is_none()) {
                return Err(Error::config(key, "multirc_em needs `group` in [hub] (question groups)"));
            }
        }
        Ok(())
    }
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
