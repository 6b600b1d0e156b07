//! Text templates of task specs: literal text and `{field}` references (`{{` and `}}` are literal
//! braces), parsed once and rendered against one record (a TSV line, a JSON object, a hub row).
use super::spec::TaskKind;
use crate::error::{Error, Result};

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(String),
    Field(String),
}

/// Field lookup for one record: a string value, or a message saying what is missing.
pub(crate) type Lookup<'a> = dyn Fn(&str) -> std::result::Result<String, String> + 'a;

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

/// Renders parsed pieces against one record, trimmed.
pub(crate) fn render(pieces: &[Piece], lookup: &Lookup) -> std::result::Result<String, String> {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Lit(s) => out.push_str(s),
            Piece::Field(f) => out.push_str(&lookup(f)?),
        }
    }
    Ok(out.trim().to_string())
}

/// The parsed text templates of a task: text_a, text_b, and one template per choice.
pub(crate) struct Templates {
    text_a: Vec<Piece>,
    text_b: Option<Vec<Piece>>,
    choices: Vec<Vec<Piece>>,
}

impl Templates {
    /// Parses the templates; `key` prefixes the config key in errors (e.g. `rte` or `rte.hub`).
    pub(crate) fn parse(key: &str, text_a: &str, text_b: Option<&str>, choices: &[String]) -> Result<Self> {
        let parse =
            |name: &str, s: &str| parse_template(s).map_err(|m| Error::config(format!("{key}.{name}"), m));
        Ok(Templates {
            text_a: parse("text_a", text_a)?,
            text_b: text_b.map(|b| parse("text_b", b)).transpose()?,
            choices: choices.iter().map(|c| parse("choices", c)).collect::<Result<_>>()?,
        })
    }

    /// The text pairs of one example: (text_a, text_b), or for multiple choice one (text_a, choice)
    /// pair per choice.
    pub(crate) fn texts(
        &self,
        kind: TaskKind,
        lookup: &Lookup,
    ) -> std::result::Result<Vec<(String, Option<String>)>, String> {
        let a = render(&self.text_a, lookup)?;
        if kind == TaskKind::MultipleChoice {
            return self.choices.iter().map(|c| Ok((a.clone(), Some(render(c, lookup)?)))).collect();
        }
        let b = self.text_b.as_ref().map(|b| render(b, lookup)).transpose()?;
        Ok(vec![(a, b)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn texts_render_pairs_and_choices() {
        let lookup = |f: &str| match f {
            "p" => Ok(" P. ".to_string()),
            "c1" => Ok("X".to_string()),
            "c2" => Ok("Y".to_string()),
            _ => Err(format!("missing field `{f}`")),
        };
        let t = Templates::parse("t", "{p} Why?", Some("{c1}"), &[]).unwrap();
        assert_eq!(
            t.texts(TaskKind::Classification, &lookup).unwrap(),
            vec![("P.  Why?".into(), Some("X".into()))]
        );
        let mc = Templates::parse("t", "{p}", None, &["{c1}".into(), "{c2}".into()]).unwrap();
        let texts = mc.texts(TaskKind::MultipleChoice, &lookup).unwrap();
        assert_eq!(texts, vec![("P.".into(), Some("X".into())), ("P.".into(), Some("Y".into()))]);
        let bad = Templates::parse("t", "{nope}", None, &[]).unwrap();
        assert!(bad.texts(TaskKind::Classification, &lookup).unwrap_err().contains("nope"));
        let err = Templates::parse("rte.hub", "{open", None, &[]).err().unwrap().to_string();
        assert!(err.contains("rte.hub.text_a"), "{err}");
    }
}
