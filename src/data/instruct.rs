//! Instruction data (`kind = "generation"`, `reader = "chat"`): JSONL lines holding either `messages`
//! (a list of `{"role": ..., "content": ...}` ending with the assistant's reply, any system and earlier
//! turns before it) or `prompt` and `response` (one user turn, one reply). Each line becomes one example
//! whose text is the conversation as JSON; the model's chat template renders it (crate::prompt).
use super::readers::{lines, Example, Target, Unit};
use crate::chat::Message;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The conversation of one JSONL line; `at` is `file:line` for errors.
pub fn conversation(v: &Value, path: &Path, line: usize) -> Result<Vec<Message>> {
    let bad = |msg: String| Error::parse(path, line, msg);
    let text = |v: &Value, key: &str| -> Result<String> {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("no string `{key}`")))
    };
    let messages = match v.get("messages") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|m| Ok(Message { role: text(m, "role")?, content: text(m, "content")? }))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(bad("`messages` is not a list".into())),
        None => {
            vec![Message::new("user", &text(v, "prompt")?), Message::new("assistant", &text(v, "response")?)]
        }
    };
    match messages.last() {
        Some(m) if m.role == "assistant" => Ok(messages),
        _ => Err(bad("the conversation must end with an assistant message (the target)".into())),
    }
}

/// Every line of a chat JSONL file as one example (its own split unit).
pub(crate) fn read_chat(path: &Path, text: &str) -> Result<Vec<Unit>> {
    let mut units = Vec::new();
    for (line, row) in lines(text) {
        let v: Value =
            serde_json::from_str(row).map_err(|e| Error::parse(path, line, format!("invalid JSON: {e}")))?;
        let messages = conversation(&v, path, line)?;
        let json = serde_json::to_string(&messages).map_err(|e| Error::Msg(e.to_string()))?;
        units.push(vec![Example {
            texts: vec![(json, None)],
            target: Target::Class(0),
            group: None,
            source: format!("{}:{line}", path.display()),
        }]);
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_line_forms_and_errors() {
        let text = "{\"prompt\": \"2+2?\", \"response\": \"4\"}\n\n\
                    {\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}, \
                    {\"role\": \"assistant\", \"content\": \"A\"}]}\n";
        let units = read_chat(Path::new("d.jsonl"), text).unwrap();
        assert_eq!(units.len(), 2);
        let m: Vec<Message> = serde_json::from_str(&units[0][0].texts[0].0).unwrap();
        assert_eq!(m, [Message::new("user", "2+2?"), Message::new("assistant", "4")]);
        assert!(units[1][0].source.ends_with("d.jsonl:3"));
        let e = read_chat(Path::new("d.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"U\"}]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.jsonl:1") && e.contains("assistant"), "{e}");
        let e = read_chat(Path::new("d.jsonl"), "{\"prompt\": \"x\"}").unwrap_err().to_string();
        assert!(e.contains("response"), "{e}");
    }
}
