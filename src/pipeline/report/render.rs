//! A report as data (headings, paragraphs, tables, images) and its one markdown renderer.
use std::fmt::Write as _;

/// A table: a header row and body rows of cells (already formatted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }
}

/// One block of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Heading(usize, String),
    Para(String),
    Table(Table),
    /// An image (alt text, path relative to the report).
    Image(String, String),
    /// Markdown text included as it is (e.g. a discussion file).
    Raw(String),
}

/// The report as markdown: blocks separated by blank lines.
pub fn markdown(blocks: &[Block]) -> String {
    let mut md = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(md, "{} {text}\n", "#".repeat(*level));
            }
            Block::Para(text) => {
                let _ = writeln!(md, "{text}\n");
            }
            Block::Table(t) => {
                let _ = writeln!(md, "| {} |", t.header.join(" | "));
                let _ = writeln!(md, "|{}", "---|".repeat(t.header.len()));
                for r in &t.rows {
                    let _ = writeln!(md, "| {} |", r.join(" | "));
                }
                md.push('\n');
            }
            Block::Image(alt, path) => {
                let _ = writeln!(md, "![{alt}]({path})\n");
            }
            Block::Raw(text) => md.push_str(text),
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_block() {
        let mut t = Table::new(&["a", "b"]);
        t.rows.push(vec!["1".into(), "2".into()]);
        let md = markdown(&[
            Block::Heading(2, "H".into()),
            Block::Table(t),
            Block::Image("x".into(), "p.png".into()),
        ]);
        assert_eq!(md, "## H\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![x](p.png)\n\n");
    }
}
