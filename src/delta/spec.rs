//! What a delta module is (type and hyper-parameters) and how many parameters it has.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaKind {
    Lora,
    Bitfit,
    Lnfit,
    Lra,
    Adapter,
}

impl DeltaKind {
    pub fn is_parallel(self) -> bool {
        matches!(self, DeltaKind::Lora | DeltaKind::Lnfit)
    }
    pub fn name(self) -> &'static str {
        match self {
            DeltaKind::Lora => "lora",
            DeltaKind::Bitfit => "bitfit",
            DeltaKind::Lnfit => "lnfit",
            DeltaKind::Lra => "lra",
            DeltaKind::Adapter => "adapter",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lora" => Some(DeltaKind::Lora),
            "bitfit" => Some(DeltaKind::Bitfit),
            "lnfit" | "ln" | "ln_tuning" => Some(DeltaKind::Lnfit),
            "lra" | "low_rank_adapter" => Some(DeltaKind::Lra),
            "adapter" | "houlsby" => Some(DeltaKind::Adapter),
            _ => None,
        }
    }
}

/// The shape of the site a module attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteShape {
    /// A Linear `d_in -> d_out`; `block` marks the output projection of a whole attention or FFN block
    /// (where LRA and adapters attach).
    Linear { d_in: i64, d_out: i64, block: bool },
    /// A LayerNorm over `d` features.
    Norm { d: i64 },
}

impl SiteShape {
    pub fn d_out(self) -> i64 {
        match self {
            SiteShape::Linear { d_out, .. } => d_out,
            SiteShape::Norm { d } => d,
        }
    }
}

/// One module of a structure (or one candidate of a search space): site, type and hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    pub site: String,
    #[serde(rename = "type")]
    pub kind: DeltaKind,
    /// LoRA rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<i64>,
    /// LoRA alpha (scale = alpha / rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// LoRA dropout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// LRA / adapter bottleneck (LRA default d/32 rounded down, adapter default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<i64>,
    /// Parameter count, written for readers; recomputed and checked on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<i64>,
}

pub const LORA_RANK: i64 = 8;
pub const LORA_ALPHA: f64 = 16.0;
pub const ADAPTER_BOTTLENECK: i64 = 24;

impl ModuleSpec {
    pub fn new(site: &str, kind: DeltaKind) -> Self {
        ModuleSpec {
            site: site.into(),
            kind,
            rank: None,
            alpha: None,
            dropout: None,
            bottleneck: None,
            params: None,
        }
    }

    pub fn rank(&self) -> i64 {
        self.rank.unwrap_or(LORA_RANK)
    }
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(LORA_ALPHA)
    }
    pub fn dropout(&self) -> f64 {
        self.dropout.unwrap_or(0.0)
    }
    pub fn bottleneck(&self, d: i64) -> i64 {
        match self.kind {
            DeltaKind::Adapter => self.bottleneck.unwrap_or(ADAPTER_BOTTLENECK),
            _ => self.bottleneck.unwrap_or((d / 32).max(1)),
        }
    }

    /// Checks that the module fits the site and returns its parameter count.
    pub fn check(&self, shape: SiteShape) -> Result<i64> {
        let bad = |msg: String| Err(Error::site(&self.site, msg));
        match (self.kind, shape) {
            (DeltaKind::Lora, SiteShape::Linear { .. }) => {}
            (DeltaKind::Bitfit, _) => {}
            (DeltaKind::Lnfit, SiteShape::Norm { .. }) => {}
            (DeltaKind::Lra | DeltaKind::Adapter, SiteShape::Linear { block: true, .. }) => {}
            (k, s) => return bad(format!("a {} module cannot attach to {s:?}", k.name())),
        }
        if self.kind == DeltaKind::Lora && self.rank() < 1 {
            return bad(format!("LoRA rank {} must be at least 1", self.rank()));
        }
        if !(0.0..1.0).contains(&self.dropout()) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout()));
        }
        let n = self.count(shape);
        if let Some(p) = self.params {
            if p != n {
                return bad(format!("{} module says {p} params but has {n}", self.kind.name()));
            }
        }
        Ok(n)
    }

    /// Parameter count by formula (S3PET.md section 1).
    pub fn count(&self, shape: SiteShape) -> i64 {
        match (self.kind, shape) {
            (DeltaKind::Lora, SiteShape::Linear { d_in, d_out, .. }) => self.rank() * (d_in + d_out),
            (DeltaKind::Lra, s) => {
                let (d, k) = (s.d_out(), self.bottleneck(s.d_out()));
                (d + k + k) + (k + d + d)
            }
            (DeltaKind::Adapter, s) => {
                let (d, m) = (s.d_out(), self.bottleneck(s.d_out()));
                2 * d * m + m + d
            }
            (_, s) => s.d_out(),
        }
    }

    /// The same module with its parameter count filled in.
    pub fn with_params(&self, shape: SiteShape) -> Self {
        ModuleSpec { params: Some(self.count(shape)), ..self.clone() }
    }
}
