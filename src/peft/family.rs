//! What a PEFT adapter looks like for each kind of model: its `task_type` and whether its norms are RMS
//! norms (LN_TUNING then tunes their weight only). The backbone's key prefix is the family's
//! ([`crate::backbone::Family::prefix`]); a task head travels in `modules_to_save` only for encoders.
use crate::backbone::ModelConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub task_type: &'static str,
    /// RMS norms (no bias): LN_TUNING holds their weight only, and BitFit after one has no PEFT form.
    pub rms: bool,
}

impl Kind {
    pub fn of(cfg: &ModelConfig) -> Kind {
        match cfg {
            ModelConfig::T5(_) => Kind { task_type: "SEQ_2_SEQ_LM", rms: true },
            ModelConfig::Llama(_) => Kind { task_type: "CAUSAL_LM", rms: true },
            _ => Kind { task_type: "SEQ_CLS", rms: false },
        }
    }
}
