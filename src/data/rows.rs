//! Rows of a dataset repo's files (parquet, JSONL, CSV), each one JSON object, turned into examples
//! by a task spec's templates (the `[hub]` table's where given). Labels keep their type: an integer
//! is the class index itself (the Hub's ClassLabel convention), a string or boolean is matched
//! against `labels`; CSV cells are text. Errors name `file:row` (rows count from 1).
use std::path::Path;

use serde_json::{Map, Value};

use super::hub_spec::HubSpec;
use super::readers::{json_field, json_path, scalar, Example, Target, Unit};
use super::spec::{TaskKind, TaskSpec};
use super::template::{parse_template, render, Piece, Templates};
use crate::error::{Error, Result};

/// The file extensions a dataset repo's split files may have.
pub const ROW_FILE_EXTENSIONS: [&str; 3] = ["parquet", "jsonl", "csv"];

/// Reads one file into rows (JSON objects) by its extension; an empty file is an error.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<Value>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let rows = match ext {
        "parquet" => super::parquet::read_rows(path)?,
        "jsonl" => jsonl_rows(path, &std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?)?,
        "csv" => csv_rows(path, &std::fs::read(path).map_err(|e| Error::io(path, e))?)?,
        _ => return Err(Error::file(path, "not a .parquet, .jsonl or .csv file")),
    };
    if rows.is_empty() {
        return Err(Error::file(path, "no rows in file"));
    }
    Ok(rows)
}

fn jsonl_rows(path: &Path, text: &str) -> Result<Vec<Value>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::parse(path, i + 1, format!("invalid JSON: {e}")))?;
        if !v.is_object() {
            return Err(Error::parse(path, i + 1, "a row must be a JSON object"));
        }
        rows.push(v);
    }
    Ok(rows)
}

fn csv_rows(path: &Path, bytes: &[u8]) -> Result<Vec<Value>> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let line = |e: &csv::Error| e.position().map_or(1, |p| p.line() as usize);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Error::parse(path, line(&e), format!("invalid CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::parse(path, line(&e), format!("invalid CSV: {e}")))?;
        let row: Map<String, Value> = header
            .iter()
            .zip(record.iter())
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect();
        rows.push(Value::Object(row));
    }
    Ok(rows)
}

/// Turns a split's rows into examples and split units.
pub(crate) struct RowMapper<'a> {
    spec: &'a TaskSpec,
    templates: Templates,
    label: &'a str,
    group: Option<Vec<Piece>>,
    unit: Option<Vec<Piece>>,
}

impl<'a> RowMapper<'a> {
    pub(crate) fn new(spec: &'a TaskSpec, hub: &'a HubSpec) -> Result<Self> {
        let key = format!("{}.hub", spec.name);
        let templates = Templates::parse(&key, hub.text_a(spec), hub.text_b(spec), hub.choices(spec))?;
        let parse = |k: &str, t: &Option<String>| {
            t.as_deref()
                .map(|t| parse_template(t).map_err(|m| Error::config(format!("{key}.{k}"), m)))
                .transpose()
        };
        Ok(RowMapper {
            spec,
            templates,
            label: hub.label(spec),
            group: parse("group", &hub.group)?,
            unit: parse("unit", &hub.unit)?,
        })
    }

    /// The split units of one file's rows, in file order: consecutive rows with the same `unit`
    /// value form one unit, else every row is one. `source` names the rows (`{source}:{row}`).
    pub(crate) fn units(&self, rows: &[Value], file: &Path, source: &str) -> Result<Vec<Unit>> {
        let mut units: Vec<Unit> = Vec::new();
        let mut last_key: Option<String> = None;
        for (i, row) in rows.iter().enumerate() {
            let n = i + 1;
            let lookup = |field: &str| json_field(row, field, field);
            let example = self.example(row, &lookup, file, n, source)?;
            let key = self.unit.as_ref().map(|u| render(u, &lookup).map_err(|m| Error::parse(file, n, m)));
            let key = key.transpose()?;
            match (&key, units.last_mut()) {
                (Some(k), Some(unit)) if last_key.as_ref() == Some(k) => unit.push(example),
                _ => units.push(vec![example]),
            }
            last_key = key;
        }
        Ok(units)
    }

    fn example(
        &self,
        row: &Value,
        lookup: &super::template::Lookup,
        file: &Path,
        n: usize,
        source: &str,
    ) -> Result<Example> {
        let texts = self.templates.texts(self.spec.kind, lookup).map_err(|m| Error::parse(file, n, m))?;
        let group = self.group.as_ref().map(|g| render(g, lookup).map_err(|m| Error::parse(file, n, m)));
        let value = json_path(row, self.label)
            .ok_or_else(|| Error::parse(file, n, format!("missing field `{}`", self.label)))?;
        let target = self.target(value).map_err(|m| Error::parse(file, n, m))?;
        Ok(Example { texts, target, group: group.transpose()?, source: format!("{source}:{n}") })
    }

    fn target(&self, value: &Value) -> std::result::Result<Target, String> {
        let labels = &self.spec.labels;
        if self.spec.kind == TaskKind::Regression {
            let x = match value {
                Value::Number(n) => n.as_f64().map(|x| x as f32),
                Value::String(s) => s.trim().parse::<f32>().ok(),
                _ => None,
            };
            return x
                .filter(|x| x.is_finite())
                .map(Target::Score)
                .ok_or_else(|| format!("label `{value}` is not a finite number"));
        }
        if let Some(i) = value.as_i64() {
            return match usize::try_from(i) {
                Ok(c) if c < labels.len() => Ok(Target::Class(c)),
                Ok(c) => Err(format!(
                    "class index {c} is out of range: the task has {} labels ({})",
                    labels.len(),
                    labels.join(", ")
                )),
                Err(_) => Err(format!(
                    "label {i}: the row has no label (the Hub marks unlabelled test rows with -1); use a labelled split"
                )),
            };
        }
        let text =
            scalar(value).ok_or_else(|| format!("label `{value}` is not a string, number or boolean"))?;
        labels.iter().position(|l| *l == text.trim()).map(Target::Class).ok_or_else(|| {
            format!("unknown label `{}` (expected one of: {})", text.trim(), labels.join(", "))
        })
    }
}

/// The examples of one local dataset file (parquet, JSONL or CSV) read as the spec's `[hub]` rows.
pub fn read_hub_examples(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    let hub =
        spec.hub.as_ref().ok_or_else(|| Error::config(format!("{}.hub", spec.name), "no [hub] table"))?;
    let rows = read_rows(path)?;
    let units = RowMapper::new(spec, hub)?.units(&rows, path, &path.display().to_string())?;
    Ok(units.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &str) -> TaskSpec {
        TaskSpec::from_toml_str(src, "test").unwrap()
    }

    const NLI: &str = "name = \"t\"\nkind = \"classification\"\ntext_a = \"{p}\"\ntext_b = \"{h}\"\n\
                       label = \"label\"\nlabels = [\"yes\", \"no\"]\nmetrics = [\"accuracy\"]\n\
                       [hub]\nrepo = \"org/t\"\n";

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn typed_labels_integers_are_indices() {
        let d = tempfile::tempdir().unwrap();
        let rows = "{\"p\": \"a\", \"h\": \"b\", \"label\": 1}\n\n{\"p\": \"c\", \"h\": \"d\", \"label\": \"yes\"}\n";
        let ex = read_hub_examples(&spec(NLI), &write(&d, "t.jsonl", rows)).unwrap();
        assert_eq!(ex[0].texts, vec![("a".to_string(), Some("b".to_string()))]);
        assert_eq!((ex[0].target, ex[1].target), (Target::Class(1), Target::Class(0)));
        assert!(ex[1].source.ends_with("t.jsonl:2"), "{}", ex[1].source);
        for (label, needle) in
            [("-1", "no label"), ("2", "out of range"), ("\"maybe\"", "`maybe`"), ("null", "not a")]
        {
            let p = write(&d, "bad.jsonl", &format!("{{\"p\": \"a\", \"h\": \"b\", \"label\": {label}}}\n"));
            let err = read_hub_examples(&spec(NLI), &p).unwrap_err().to_string();
            assert!(err.contains("bad.jsonl:1") && err.contains(needle), "{err}");
        }
        let p = write(&d, "nolabel.jsonl", "{\"p\": \"a\", \"h\": \"b\"}\n");
        assert!(read_hub_examples(&spec(NLI), &p).unwrap_err().to_string().contains("missing field `label`"));
    }

    #[test]
    fn csv_quotes_and_text_labels() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "t.csv",
            "\u{feff}p,h,label\n\"a, with \"\"quotes\"\"\",b,no\nc,\"d\nnext line\",yes\n",
        );
        let ex = read_hub_examples(&spec(NLI), &p).unwrap();
        assert_eq!(ex[0].texts[0], ("a, with \"quotes\"".to_string(), Some("b".to_string())));
        assert_eq!(ex[1].texts[0].1.as_deref(), Some("d\nnext line"));
        assert_eq!((ex[0].target, ex[1].target), (Target::Class(1), Target::Class(0)));
        let p = write(&d, "ragged.csv", "p,h,label\na,b,no\nc,d\n");
        let err = read_hub_examples(&spec(NLI), &p).unwrap_err().to_string();
        assert!(err.contains("ragged.csv:3") && err.contains("CSV"), "{err}");
        let p = write(&d, "empty.csv", "p,h,label\n");
        assert!(read_hub_examples(&spec(NLI), &p).unwrap_err().to_string().contains("no rows"));
        let p = write(&d, "t.txt", "x");
        assert!(read_hub_examples(&spec(NLI), &p)
            .unwrap_err()
            .to_string()
            .contains(".parquet, .jsonl or .csv"));
    }

    #[test]
    fn groups_units_and_scores() {
        let src = NLI.replace("[hub]\n", "[hub]\ngroup = \"{idx.p}-{idx.q}\"\nunit = \"{idx.p}\"\n");
        let d = tempfile::tempdir().unwrap();
        let row = |p: u32, q: u32, l: u32| {
            format!(
                "{{\"p\": \"P{p}\", \"h\": \"Q{q}\", \"idx\": {{\"p\": {p}, \"q\": {q}}}, \"label\": {l}}}\n"
            )
        };
        let text: String = [row(0, 0, 1), row(0, 0, 0), row(0, 1, 1), row(1, 2, 0), row(0, 3, 0)].concat();
        let path = write(&d, "m.jsonl", &text);
        let rows = read_rows(&path).unwrap();
        let spec = spec(&src);
        let units =
            RowMapper::new(&spec, spec.hub.as_ref().unwrap()).unwrap().units(&rows, &path, "src").unwrap();
        assert_eq!(units.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 1, 1], "consecutive rows only");
        assert_eq!(units[0][2].group.as_deref(), Some("0-1"));
        let stsb = "name = \"s\"\nkind = \"regression\"\ntext_a = \"{a}\"\nlabel = \"score\"\n\
                    metrics = [\"pearson\"]\n[hub]\nrepo = \"org/s\"\n";
        let p = write(&d, "s.jsonl", "{\"a\": \"x\", \"score\": 3.8}\n{\"a\": \"y\", \"score\": \"1.5\"}\n");
        let ex = read_hub_examples(&TaskSpec::from_toml_str(stsb, "t").unwrap(), &p).unwrap();
        assert_eq!((ex[0].target, ex[1].target), (Target::Score(3.8), Target::Score(1.5)));
    }
}
