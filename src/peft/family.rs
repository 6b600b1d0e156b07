//! What a PEFT adapter looks like for each model family: the key prefix of the backbone inside the
//! transformers model PEFT wraps, the `task_type`, whether a task head travels in `modules_to_save`,
//! and whether the norms are RMS norms (LN_TUNING then tunes their weight only).
use super::KEY_PREFIX;
use crate::backbone::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Prefix of the s3pet site inside the wrapped model (`bert.` for BertForSequenceClassification;
    /// none for T5 and the decoders, whose sites are already the model's own paths).
    pub prefix: &'static str,
    pub task_type: &'static str,
    /// A trained classifier in `modules_to_save` (encoders); the LM heads of T5 and decoders are frozen.
    pub head: bool,
    /// RMS norms (no bias): LN_TUNING holds their weight only, and BitFit after one has no PEFT form.
    pub rms: bool,
}

impl Family {
    pub fn of(cfg: &ModelConfig) -> Family {
        match cfg {
            ModelConfig::Bert(_) => {
                Family { prefix: super::BACKBONE, task_type: "SEQ_CLS", head: true, rms: false }
            }
            ModelConfig::T5(_) => Family { prefix: "", task_type: "SEQ_2_SEQ_LM", head: false, rms: true },
            ModelConfig::Llama(_) => Family { prefix: "", task_type: "CAUSAL_LM", head: false, rms: true },
        }
    }

    /// The saved-adapter key of `leaf` (e.g. `lora_A.weight`) at an s3pet site.
    pub fn key(&self, site: &str, leaf: &str) -> String {
        format!("{KEY_PREFIX}{}{site}.{leaf}", self.prefix)
    }
}

/// The config of a built model's backbone.
pub fn model_config(model: &Model) -> Result<ModelConfig> {
    if let Some(b) = model.bert() {
        return Ok(ModelConfig::Bert(b.cfg.clone()));
    }
    if let Some(t) = model.t5() {
        return Ok(ModelConfig::T5(t.cfg.clone()));
    }
    match model.causal() {
        Some((l, _)) => Ok(ModelConfig::Llama(Box::new(l.cfg.clone()))),
        None => Err(Error::Msg("PEFT export: a model of no known family".into())),
    }
}
