//! The `[hub]` table of a task spec: the task's dataset repo on the Hugging Face Hub.
use serde::{Deserialize, Serialize};

use super::spec::{TaskKind, TaskSpec};
use super::template::{parse_template, Templates};
use crate::error::{Error, Result};

/// Where a task's rows are on the Hugging Face Hub (the `[hub]` table): a dataset repo, a config
/// (subset) and split names instead of files. The files of split `S` are the `.parquet`, `.jsonl`
/// and `.csv` files in the folder `dir` (default: the config's name, else the repo root, then `data/`) that are
/// named `S.<ext>` or `S-*` (the Hub's `S-00000-of-00001.parquet`), or that lie in a folder `S/`.
/// Templates and label given here replace the top-level ones for rows from the Hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpec {
    /// Dataset repository `org/name`.
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Folder of the files in the repo (default: `config`, else the repo root, then `data/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Branch, tag or commit (default `main`; `data fetch --revision` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default = "default_train_split")]
    pub train: String,
    /// The split used as the official dev set.
    #[serde(default = "default_dev_split")]
    pub dev: String,
    /// A labelled test split (bypasses the protocol, as `test` does for files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_a: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_b: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Template of the group metrics average over (MultiRC's question), e.g. `{idx.paragraph}-{idx.question}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Template of the split unit: consecutive rows with the same value stay together when dev is
    /// halved or carved (MultiRC's passage, `{idx.paragraph}`). Default: every row is its own unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

fn default_train_split() -> String {
    "train".into()
}

fn default_dev_split() -> String {
    "validation".into()
}

impl HubSpec {
    pub fn text_a<'a>(&'a self, spec: &'a TaskSpec) -> &'a str {
        self.text_a.as_deref().unwrap_or(&spec.text_a)
    }
    pub fn text_b<'a>(&'a self, spec: &'a TaskSpec) -> Option<&'a str> {
        self.text_b.as_deref().or(spec.text_b.as_deref())
    }
    pub fn choices<'a>(&'a self, spec: &'a TaskSpec) -> &'a [String] {
        if self.choices.is_empty() {
            &spec.choices
        } else {
            &self.choices
        }
    }
    pub fn label<'a>(&'a self, spec: &'a TaskSpec) -> &'a str {
        self.label.as_deref().unwrap_or(&spec.label)
    }
    /// The split names in protocol order: train, dev and the optional test split.
    pub fn splits(&self) -> Vec<(&'static str, &str)> {
        let mut s = vec![("train", self.train.as_str()), ("dev", self.dev.as_str())];
        s.extend(self.test.as_deref().map(|t| ("test", t)));
        s
    }

    pub(crate) fn validate(&self, spec: &TaskSpec) -> Result<()> {
        let key = |k: &str| format!("{}.hub.{k}", spec.name);
        let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !matches!(self.repo.split_once('/'), Some((org, name)) if ok(org) && ok(name)) {
            return Err(Error::config(key("repo"), format!("`{}` is not a repo id `org/name`", self.repo)));
        }
        for (role, split) in self.splits() {
            if split.trim().is_empty() || split.contains('/') {
                return Err(Error::config(key(role), format!("`{split}` is not a split name")));
            }
        }
        let choices = self.choices(spec);
        Templates::parse(&format!("{}.hub", spec.name), self.text_a(spec), self.text_b(spec), choices)?;
        for (k, t) in [("group", &self.group), ("unit", &self.unit)] {
            if let Some(t) = t {
                parse_template(t).map_err(|m| Error::config(key(k), m))?;
            }
        }
        if spec.kind == TaskKind::MultipleChoice && choices.len() != spec.labels.len() {
            return Err(Error::config(key("choices"), "multiple choice needs one label value per choice"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB_ONLY: &str = "name = \"imdb\"\nkind = \"classification\"\ntext_a = \"{text}\"\nlabel = \"label\"\n\
                            labels = [\"neg\", \"pos\"]\nmetrics = [\"accuracy\"]\n[hub]\nrepo = \"stanfordnlp/imdb\"\n\
                            config = \"plain_text\"\ndev = \"test\"\n";

    #[test]
    fn a_hub_only_spec_has_defaults_and_round_trips() {
        let spec = TaskSpec::from_toml_str(HUB_ONLY, "t").unwrap();
        assert!(!spec.has_files());
        let hub = spec.hub.as_ref().unwrap();
        assert_eq!(hub.splits(), vec![("train", "train"), ("dev", "test")]);
        assert_eq!((hub.text_a(&spec), hub.label(&spec)), ("{text}", "label"));
        let text = toml::to_string(&spec).unwrap();
        assert_eq!(TaskSpec::from_toml_str(&text, "rt").unwrap(), spec);
        let mnli = TaskSpec::builtin("mnli-mm").unwrap();
        let hub = mnli.hub.as_ref().unwrap();
        assert_eq!((hub.config.as_deref(), hub.dev.as_str()), (Some("mnli"), "validation_mismatched"));
        assert_eq!(hub.text_a(&mnli), "{premise}");
    }

    #[test]
    fn bad_hub_tables_name_the_key() {
        let cases = [
            (HUB_ONLY.replace("stanfordnlp/imdb", "imdb"), "imdb.hub.repo"),
            (HUB_ONLY.replace("dev = \"test\"", "dev = \"a/b\""), "imdb.hub.dev"),
            (HUB_ONLY.replace("dev = \"test\"", "text_a = \"{open\""), "imdb.hub.text_a"),
            (HUB_ONLY.replace("dev = \"test\"", "unit = \"}\""), "imdb.hub.unit"),
            (HUB_ONLY.replace("dev = \"test\"", "splitz = 1"), "splitz"),
            (
                HUB_ONLY.replace(
                    "[hub]\nrepo = \"stanfordnlp/imdb\"\nconfig = \"plain_text\"\ndev = \"test\"\n",
                    "",
                ),
                "no task data",
            ),
            (HUB_ONLY.replace("[hub]", "train = \"t.tsv\"\n[hub]"), "imdb.format"),
            (HUB_ONLY.replace("[\"accuracy\"]", "[\"multirc_em\"]"), "group"),
        ];
        for (src, needle) in cases {
            let err = TaskSpec::from_toml_str(&src, "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
