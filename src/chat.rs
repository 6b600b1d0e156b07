//! Chat templates of instruct models: tokenizer_config.json's `chat_template` (Jinja) rendered with
//! minijinja as transformers' `apply_chat_template` renders it (trim_blocks, lstrip_blocks, the
//! `messages`, `add_generation_prompt`, `bos_token` / `eos_token` variables, `raise_exception`).
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.into(), content: content.into() }
    }
}

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
    /// tokenizer_config.json, for errors.
    file: PathBuf,
}

/// A special-token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn token(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// The chat template of a model directory (tokenizer_config.json's `chat_template`: a string, or a
    /// list of named templates whose `default` is taken), `None` when it has none.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>> {
        let file = dir.join("tokenizer_config.json");
        if !file.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&file, e.line(), e.to_string()))?;
        let source = match v.get("chat_template") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .ok_or_else(|| Error::file(&file, "chat_template is a list without a `default` template"))?
                .to_string(),
            _ => return Ok(None),
        };
        let t = ChatTemplate { source, bos: token(v.get("bos_token")), eos: token(v.get("eos_token")), file };
        t.render(&[Message::new("user", "x")], true)?; // a template that cannot render fails here
        Ok(Some(t))
    }

    /// The conversation as the model sees it; `add_generation_prompt` opens the assistant's turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        env.render_str(&self.source, ctx)
            .map_err(|e| Error::file(&self.file, format!("chat_template does not render: {e}")))
    }

    /// (prompt, response) of a conversation whose last turn is the assistant's: the prompt is the
    /// conversation before it with the assistant's turn opened, the response what the full rendering
    /// adds to that (the reply and the template's end-of-turn text).
    pub fn split(&self, messages: &[Message]) -> Result<(String, String)> {
        let (last, before) = messages
            .split_last()
            .filter(|(m, _)| m.role == "assistant")
            .ok_or_else(|| Error::Msg("a training conversation must end with an assistant turn".into()))?;
        let prompt = self.render(before, true)?;
        let full = self.render(messages, false)?;
        match full.strip_prefix(&prompt) {
            Some(rest) => Ok((prompt, rest.to_string())),
            None => Err(Error::file(
                &self.file,
                format!(
                    "chat_template renders the conversation so that its last reply ({:?}) does not follow the \
                     generation prompt; cannot tell prompt from response",
                    last.content
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\\nYou are nice<|im_end|>\\n' }}{% endif %}\
{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn chatml() -> ChatTemplate {
        ChatTemplate { source: CHATML.into(), bos: String::new(), eos: "<|im_end|>".into(), file: "t".into() }
    }

    #[test]
    fn renders_and_splits_chatml() {
        let t = chatml();
        let msgs = [Message::new("user", "Hi?"), Message::new("assistant", "Yes.")];
        let p = t.render(&msgs[..1], true).unwrap();
        assert_eq!(p, "<|im_start|>system\nYou are nice<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n");
        let (prompt, response) = t.split(&msgs).unwrap();
        assert_eq!(prompt, p);
        assert_eq!(response, "Yes.<|im_end|>\n");
        assert!(t.split(&msgs[..1]).is_err(), "the last turn must be the assistant's");
    }

    #[test]
    fn raise_exception_is_an_error_naming_the_file() {
        let t = ChatTemplate { source: "{{ raise_exception('no system') }}".into(), ..chatml() };
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system") && e.starts_with("t:"), "{e}");
    }
}
