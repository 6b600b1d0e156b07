//! Tokenisation with the model's own tokenizer.json (the `tokenizers` crate): pairs truncated
//! longest-first to `max_len`, no padding (batches pad dynamically).
use crate::data::{Example, Target};
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::{PostProcessor, Tokenizer, TruncationParams, TruncationStrategy};

/// One example as token ids: one row per choice (a single row unless multiple choice).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub rows: Vec<(Vec<i64>, Vec<i64>)>, // (ids, token types)
    pub target: Target,
    pub group: Option<String>,
}

pub struct TextEncoder {
    tok: Tokenizer,
}

impl TextEncoder {
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(path, "tokenizer.json not found"));
        }
        let mut tok =
            Tokenizer::from_file(path).map_err(|e| Error::file(path, format!("bad tokenizer: {e}")))?;
        tok.with_padding(None);
        let specials = tok.get_post_processor().map(|p| p.added_tokens(true)).unwrap_or(0);
        // a pair needs its special tokens and at least one token of each text
        if max_len < specials + 2 {
            return Err(Error::config(
                "--max-length",
                format!(
                    "{max_len} is too short for {}: a pair takes {specials} special tokens plus one token per text, \
                     so at least {}",
                    path.display(),
                    specials + 2
                ),
            ));
        }
        tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .map_err(|e| Error::file(path, format!("truncation: {e}")))?;
        Ok(TextEncoder { tok })
    }

    pub fn encode_pair(&self, a: &str, b: Option<&str>) -> Result<(Vec<i64>, Vec<i64>)> {
        let enc = match b {
            Some(b) => self.tok.encode((a, b), true),
            None => self.tok.encode(a, true),
        }
        .map_err(|e| Error::Msg(format!("tokenizing {a:?}: {e}")))?;
        let ids = enc.get_ids().iter().map(|&i| i as i64).collect();
        let types = enc.get_type_ids().iter().map(|&i| i as i64).collect();
        Ok((ids, types))
    }

    pub fn encode(&self, examples: &[Example]) -> Result<Vec<Encoded>> {
        examples
            .iter()
            .map(|ex| {
                let rows = ex
                    .texts
                    .iter()
                    .map(|(a, b)| self.encode_pair(a, b.as_deref()))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| Error::Msg(format!("{}: {e}", ex.source)))?;
                Ok(Encoded { rows, target: ex.target, group: ex.group.clone() })
            })
            .collect()
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
}
