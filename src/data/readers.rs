//! File readers: TSV (no quote processing) and JSONL (flat or MultiRC), turned into examples by a
//! task spec's templates. Errors name `file:line`.
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::{Format, Reader, TaskKind, TaskSpec};
use super::template::{Lookup, Templates};
use crate::error::{Error, Result};

/// The gold (or predicted) answer of one example.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// Class index into `TaskSpec::labels`; multiple choice: index of the right choice.
    Class(usize),
    Score(f32),
}

/// One example: one text pair, or one pair per choice for multiple choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub texts: Vec<(String, Option<String>)>,
    pub target: Target,
    /// MultiRC question id (metrics group by it); `None` elsewhere.
    pub group: Option<String>,
    /// `file:line`, for messages.
    pub source: String,
}

/// The examples of one line (one passage for MultiRC): the split protocol never separates them.
pub(crate) type Unit = Vec<Example>;

/// Reads one task file into examples, in file order.
pub fn read_examples(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    Ok(read_units(spec, path)?.into_iter().flatten().collect())
}

/// Reads one task file into split units, in file order. An empty file is an error.
pub(crate) fn read_units(spec: &TaskSpec, path: &Path) -> Result<Vec<Unit>> {
    if !path.is_file() {
        return Err(Error::file(path, "no such file (set --data-dir or S3PET_DATA to the data directory)"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let templates = Templates::parse(&spec.name, &spec.text_a, spec.text_b.as_deref(), &spec.choices)?;
    let reader = FileReader { spec, path, templates };
    let Some(format) = spec.format else {
        return Err(Error::config(format!("{}.format", spec.name), "no `format` for the task's files"));
    };
    let units = match (format, spec.reader) {
        (Format::Tsv, _) => reader.tsv(text)?,
        (Format::Jsonl, Reader::Flat) => reader.jsonl(text)?,
        (Format::Jsonl, Reader::Multirc) => reader.multirc(text)?,
        (Format::Jsonl, Reader::Chat) => super::instruct::read_chat(path, text)?,
    };
    if units.is_empty() {
        return Err(Error::file(path, "no examples in file"));
    }
    Ok(units)
}

/// Non-empty lines with their 1-based numbers (`\r\n` and a missing final newline are fine).
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty())
}

struct FileReader<'a> {
    spec: &'a TaskSpec,
    path: &'a Path,
    templates: Templates,
}

impl FileReader<'_> {
    fn example(&self, lookup: &Lookup, line: usize, group: Option<String>) -> Result<Example> {
        let texts =
            self.templates.texts(self.spec.kind, lookup).map_err(|m| Error::parse(self.path, line, m))?;
        let value = lookup(&self.spec.label).map_err(|m| Error::parse(self.path, line, m))?;
        let target = self.target(value.trim(), line)?;
        Ok(Example { texts, target, group, source: format!("{}:{line}", self.path.display()) })
    }

    fn target(&self, value: &str, line: usize) -> Result<Target> {
        if self.spec.kind == TaskKind::Regression {
            return match value.parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(Target::Score(x)),
                _ => Err(Error::parse(self.path, line, format!("label `{value}` is not a finite number"))),
            };
        }
        match self.spec.labels.iter().position(|l| l == value) {
            Some(i) => Ok(Target::Class(i)),
            None => Err(Error::parse(
                self.path,
                line,
                format!("unknown label `{value}` (expected one of: {})", self.spec.labels.join(", ")),
            )),
        }
    }

    fn tsv(&self, text: &str) -> Result<Vec<Unit>> {
        let mut rows = lines(text);
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut width = None;
        if self.spec.header {
            let Some((_, header)) = rows.next() else { return Ok(Vec::new()) };
            let cols: Vec<&str> = header.split('\t').collect();
            for (i, c) in cols.iter().enumerate() {
                names.entry(c.trim()).or_insert(i);
            }
            width = Some(cols.len());
        }
        let mut units = Vec::new();
        for (line, row) in rows {
            let cells: Vec<&str> = row.split('\t').collect();
            let expected = *width.get_or_insert(cells.len());
            if cells.len() != expected {
                let what = if self.spec.header { "as in the header" } else { "as in the first row" };
                let msg =
                    format!("expected {expected} tab-separated columns ({what}), found {}", cells.len());
                return Err(Error::parse(self.path, line, msg));
            }
            let lookup = |field: &str| {
                let idx = names.get(field).copied().or_else(|| field.parse::<usize>().ok());
                match idx.and_then(|i| cells.get(i)) {
                    Some(cell) => Ok(cell.to_string()),
                    None => Err(format!("no column `{field}` ({expected} columns)")),
                }
            };
            units.push(vec![self.example(&lookup, line, None)?]);
        }
        Ok(units)
    }

    fn json_line(&self, line: usize, row: &str) -> Result<Value> {
        serde_json::from_str(row).map_err(|e| Error::parse(self.path, line, format!("invalid JSON: {e}")))
    }

    fn jsonl(&self, text: &str) -> Result<Vec<Unit>> {
        let mut units = Vec::new();
        for (line, row) in lines(text) {
            let v = self.json_line(line, row)?;
            let lookup = |field: &str| json_field(&v, field, field);
            units.push(vec![self.example(&lookup, line, None)?]);
        }
        Ok(units)
    }

    /// One unit per passage line, one example per answer, grouped by question.
    fn multirc(&self, text: &str) -> Result<Vec<Unit>> {
        let mut units = Vec::new();
        for (line, row) in lines(text) {
            let v = self.json_line(line, row)?;
            let passage = &v["passage"];
            let Some(questions) = passage["questions"].as_array() else {
                return Err(Error::parse(self.path, line, "no `passage.questions` array (MultiRC format)"));
            };
            let pid = scalar(&v["idx"]).unwrap_or_else(|| line.to_string());
            let mut unit = Vec::new();
            for (qi, q) in questions.iter().enumerate() {
                let Some(answers) = q["answers"].as_array() else {
                    return Err(Error::parse(
                        self.path,
                        line,
                        format!("question {qi} has no `answers` array"),
                    ));
                };
                let group = format!("{pid}-{}", scalar(&q["idx"]).unwrap_or_else(|| qi.to_string()));
                for a in answers {
                    let lookup = |field: &str| match field.split_once('.') {
                        Some(("passage", rest)) => json_field(passage, rest, field),
                        Some(("question", rest)) => json_field(q, rest, field),
                        Some(("answer", rest)) => json_field(a, rest, field),
                        _ => json_field(&v, field, field),
                    };
                    unit.push(self.example(&lookup, line, Some(group.clone()))?);
                }
            }
            units.push(unit);
        }
        Ok(units)
    }
}

/// A JSON value's string form: strings as is, numbers and booleans as JSON writes them.
pub(crate) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value at a dotted path (object keys, array indices); a key that itself holds dots (a CSV
/// column `a.b`) is found as is.
pub(crate) fn json_path<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = root.as_object().and_then(|m| m.get(path)) {
        return Some(v);
    }
    let mut cur = root;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }?;
    }
    Some(cur)
}

/// Follows a dotted path to a scalar's string form; `full` names it in messages.
pub(crate) fn json_field(root: &Value, path: &str, full: &str) -> std::result::Result<String, String> {
    let v = json_path(root, path).ok_or_else(|| format!("missing field `{full}`"))?;
    scalar(v).ok_or_else(|| format!("field `{full}` is not a string, number or boolean"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().write_all(content.as_bytes()).unwrap();
        path
    }

    fn spec(name: &str) -> TaskSpec {
        TaskSpec::builtin(name).unwrap()
    }

    #[test]
    fn tsv_bom_quotes_crlf_no_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let content = "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n\
                       1\t1\t2\tHe said \" hi .\tShe said \"bye\r\n\r\n\
                       0\t3\t4\tA .\tB .";
        let path = write(&dir, "mrpc.tsv", content);
        let ex = read_examples(&spec("mrpc"), &path).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].texts[0], ("He said \" hi .".to_string(), Some("She said \"bye".to_string())));
        assert_eq!(ex[0].target, Target::Class(1));
        assert_eq!(ex[1].target, Target::Class(0));
        assert!(ex[1].source.ends_with("mrpc.tsv:4"), "{}", ex[1].source);
    }

    #[test]
    fn tsv_without_header_uses_indices() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "cola.tsv", "src\t1\t\tGood one .\nsrc\t0\t*\tBad one .\n");
        let ex = read_examples(&spec("cola"), &path).unwrap();
        assert_eq!(ex[1].texts, vec![("Bad one .".to_string(), None)]);
        assert_eq!(ex[1].target, Target::Class(0));
    }

    #[test]
    fn tsv_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let header = "index\tsentence1\tsentence2\tlabel\n";
        let path =
            write(&dir, "cols.tsv", &format!("{header}0\ta\tb\tentailment\n1\ta\tb\textra\tentailment\n"));
        let err = read_examples(&spec("rte"), &path).unwrap_err().to_string();
        assert!(err.contains("cols.tsv:3") && err.contains("columns"), "{err}");
        let path = write(&dir, "label.tsv", &format!("{header}0\ta\tb\tmaybe\n"));
        let err = read_examples(&spec("rte"), &path).unwrap_err().to_string();
        assert!(err.contains("label.tsv:2") && err.contains("`maybe`"), "{err}");
        let path = write(&dir, "score.tsv", "sentence1\tsentence2\tscore\na\tb\thigh\n");
        let err = read_examples(&spec("stsb"), &path).unwrap_err().to_string();
        assert!(err.contains("score.tsv:2") && err.contains("high"), "{err}");
        let path = write(&dir, "nocol.tsv", "sentence1\tlabel\na\tentailment\n");
        let err = read_examples(&spec("rte"), &path).unwrap_err().to_string();
        assert!(err.contains("nocol.tsv:2") && err.contains("sentence2"), "{err}");
    }

    #[test]
    fn missing_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_examples(&spec("rte"), &dir.path().join("nope.tsv")).unwrap_err().to_string();
        assert!(err.contains("nope.tsv"), "{err}");
        let path = write(&dir, "empty.tsv", "index\tsentence1\tsentence2\tlabel\n\n");
        let err = read_examples(&spec("rte"), &path).unwrap_err().to_string();
        assert!(err.contains("empty.tsv") && err.contains("no examples"), "{err}");
    }

    #[test]
    fn jsonl_paths_bools_ints_and_bad_json() {
        let dir = tempfile::tempdir().unwrap();
        let row = r#"{"text": "T", "target": {"span1_text": "A", "span2_text": "it"}, "label": true}"#;
        let path = write(&dir, "wsc.jsonl", &format!("{row}\n\n{{\"text\": oops}}\n"));
        let err = read_examples(&spec("wsc"), &path).unwrap_err().to_string();
        assert!(err.contains("wsc.jsonl:3") && err.contains("JSON"), "{err}");
        let path = write(&dir, "wsc2.jsonl", row);
        let ex = read_examples(&spec("wsc"), &path).unwrap();
        assert_eq!(ex[0].texts[0].1.as_deref(), Some("it refers to A"));
        assert_eq!(ex[0].target, Target::Class(1));
        let copa = r#"{"premise": "P.", "choice1": "X.", "choice2": "Y.", "question": "cause", "label": 1}"#;
        let path = write(&dir, "copa.jsonl", copa);
        let ex = read_examples(&spec("copa"), &path).unwrap();
        let a = "P. What was the cause?".to_string();
        assert_eq!(ex[0].texts, vec![(a.clone(), Some("X.".into())), (a, Some("Y.".into()))]);
        assert_eq!(ex[0].target, Target::Class(1));
        let path = write(&dir, "missing.jsonl", r#"{"premise": "P.", "question": "effect", "label": 0}"#);
        let err = read_examples(&spec("copa"), &path).unwrap_err().to_string();
        assert!(err.contains("missing.jsonl:1") && err.contains("choice1"), "{err}");
    }

    #[test]
    fn multirc_explodes_answers() {
        let dir = tempfile::tempdir().unwrap();
        let row = r#"{"idx": 7, "passage": {"text": "Para.", "questions": [
            {"question": "Q1?", "idx": 0, "answers": [{"text": "a", "label": 1}, {"text": "b", "label": 0}]},
            {"question": "Q2?", "idx": 1, "answers": [{"text": "c", "label": 0}]}]}}"#;
        let path = write(&dir, "m.jsonl", &row.replace('\n', " "));
        let units = read_units(&spec("multirc"), &path).unwrap();
        assert_eq!(units.len(), 1);
        let u = &units[0];
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].texts[0], ("Para.".to_string(), Some("Q1? a".to_string())));
        assert_eq!(u[0].target, Target::Class(1));
        assert_eq!(u[1].group.as_deref(), Some("7-0"));
        assert_eq!(u[2].group.as_deref(), Some("7-1"));
    }
}
