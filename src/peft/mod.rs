//! Hugging Face PEFT adapters for transformers' sequence-classification models of every encoder family
//! (BertForSequenceClassification, RobertaForSequenceClassification, XLMRoberta..., MPNet...,
//! DebertaV2..., DistilBert...): export a run's deltas (LoRA with its bias, LN_TUNING) and import a PEFT
//! LoRA / LN_TUNING adapter as s3pet modules. Keys carry the family's backbone prefix
//! (`base_model.model.mpnet.encoder...`); the head's modules (`classifier`, and DeBERTa's `pooler`,
//! DistilBERT's `pre_classifier`) are `modules_to_save`.
//!
//! Layout of an exported directory: `adapter_config.json` + `adapter_model.safetensors` (the LoRA
//! adapter, or the LN_TUNING one when there is no LoRA) and, when both kinds are present,
//! `ln_tuning/adapter_config.json` + `ln_tuning/adapter_model.safetensors` (PEFT's own layout for a
//! second, non-default adapter saved next to the first). Each adapter carries the classifier
//! (`modules_to_save`), so either loads alone onto a fresh task model.
//! `s3pet_export.json` (written last) records the run, task and labels.
mod export;
mod family;
mod import;
mod run;

pub use export::{export, unrepresentable, Exported, PeftAdapter, Unrepresentable};
pub use family::Kind;
pub use import::{import, Imported};
pub use run::{
    export_run, imported_model, imported_model_with, write_adapters, PeftExport, WrittenAdapter, EXPORT_FILES,
};

/// The prefix PEFT gives every key of a saved adapter (PeftModel -> base_model -> model).
pub const KEY_PREFIX: &str = "base_model.model.";
/// Subdirectory of the second adapter (LN_TUNING) when the first is LoRA.
pub const LN_SUBDIR: &str = "ln_tuning";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Written next to an exported adapter: the task and labels the classifier was trained for.
pub const META_FILE: &str = "s3pet_export.json";

/// The saved-adapter key of `leaf` (e.g. `lora_A.weight`) at an s3pet site (a module path of the bare
/// model) under the task model's backbone `prefix` (`bert.`, `mpnet.`, ...).
pub fn site_key(prefix: &str, site: &str, leaf: &str) -> String {
    format!("{KEY_PREFIX}{prefix}{site}.{leaf}")
}

/// The saved-adapter key of a head tensor (`classifier.weight`, `classifier.out_proj.bias`, ...).
pub fn head_key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

/// Splits a saved-adapter key into (module path inside the task model, leaf), where
/// the leaf starts at the first PEFT marker (`lora_A`, `lora_B`, `ln_tuning_layers`,
/// `modules_to_save`, `base_layer`), else is the last component (`bias`, `weight`).
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    for marker in [".lora_A.", ".lora_B.", ".ln_tuning_layers.", ".modules_to_save.", ".base_layer."] {
        if let Some(i) = rest.find(marker) {
            return Some((&rest[..i], &rest[i + 1..]));
        }
    }
    let i = rest.rfind('.')?;
    Some((&rest[..i], &rest[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = site_key("bert.", "encoder.layer.3.attention.self.query", "lora_A.weight");
        assert_eq!(k, "base_model.model.bert.encoder.layer.3.attention.self.query.lora_A.weight");
        assert_eq!(split_key(&k), Some(("bert.encoder.layer.3.attention.self.query", "lora_A.weight")));
        assert_eq!(split_key(&head_key("classifier.bias")), Some(("classifier", "bias")));
        let k = site_key("mpnet.", "encoder.layer.0.attention.attn.q", "lora_B.weight");
        assert_eq!(split_key(&k), Some(("mpnet.encoder.layer.0.attention.attn.q", "lora_B.weight")));
        assert_eq!(
            split_key(&head_key("classifier.out_proj.weight")),
            Some(("classifier.out_proj", "weight"))
        );
        assert_eq!(
            split_key("base_model.model.classifier.modules_to_save.weight"),
            Some(("classifier", "modules_to_save.weight"))
        );
        assert_eq!(
            split_key("base_model.model.bert.encoder.layer.0.output.dense.base_layer.bias"),
            Some(("bert.encoder.layer.0.output.dense", "base_layer.bias"))
        );
        assert_eq!(split_key("bert.encoder.layer.0.output.dense.bias"), None);
    }
}
