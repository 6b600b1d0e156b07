//! The enums a run configuration is made of, parsed once at the edge: method, strategy, dtype, device.
use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a training run trains: a manual baseline, or a structure (searched, random, imported or given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Full fine-tuning: every backbone tensor.
    Full,
    /// LoRA (r8 on query and value by default).
    Lora,
    /// Houlsby adapters after attention and FFN blocks.
    Adapter,
    /// BitFit on every Linear and LayerNorm.
    Bitfit,
    /// LNFit on every LayerNorm.
    Lnfit,
    /// Low-rank adapters on every attention and FFN block.
    Lra,
    /// A structure.json (from `--structure`, a search or a random draw); older run directories wrote
    /// the strategy here.
    #[serde(alias = "s3pet", alias = "random", alias = "export")]
    Structure,
}

impl Method {
    /// The manual baselines, in report order.
    pub const MANUAL: [Method; 6] =
        [Method::Full, Method::Lora, Method::Adapter, Method::Bitfit, Method::Lnfit, Method::Lra];

    pub fn name(self) -> &'static str {
        match self {
            Method::Full => "full",
            Method::Lora => "lora",
            Method::Adapter => "adapter",
            Method::Bitfit => "bitfit",
            Method::Lnfit => "lnfit",
            Method::Lra => "lra",
            Method::Structure => "structure",
        }
    }

    /// A manual method by name (`structure` is not one: it comes with `--structure FILE`).
    pub fn parse_manual(s: &str) -> Result<Method> {
        Method::MANUAL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            Error::config("method", format!("unknown method `{s}` (full, lora, adapter, bitfit, lnfit, lra)"))
        })
    }

    pub fn is_full(self) -> bool {
        self == Method::Full
    }
}

/// How `run` gets its structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The bi-level S3PET search.
    S3pet,
    /// Candidates shuffled with the seed, then the search's greedy fill.
    Random,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::S3pet => "s3pet",
            Strategy::Random => "random",
        }
    }

    pub fn parse(s: &str) -> Result<Strategy> {
        match s {
            "s3pet" => Ok(Strategy::S3pet),
            "random" => Ok(Strategy::Random),
            s => Err(Error::config("strategy", format!("unknown strategy `{s}` (s3pet, random)"))),
        }
    }
}

/// Dtype of the frozen backbone matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[serde(alias = "float32")]
    Fp32,
    #[serde(alias = "bfloat16")]
    Bf16,
}

impl Dtype {
    pub fn kind(self) -> tch::Kind {
        match self {
            Dtype::Fp32 => tch::Kind::Float,
            Dtype::Bf16 => tch::Kind::BFloat16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Fp32 => "fp32",
            Dtype::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<Dtype> {
        match s {
            "fp32" | "float32" => Ok(Dtype::Fp32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            d => Err(Error::config("backbone_dtype", format!("unknown dtype `{d}` (fp32, bf16)"))),
        }
    }
}

/// How a model computes. `bf16`: bf16 activations and frozen matmuls end to end (the frozen matrices
/// stored in bf16; norms computed from bf16 inputs, RMS statistics in fp32), with the deltas, the head,
/// the optimiser state and their master copies in fp32 (deltas are cast to bf16 where they meet the
/// activations; logits and loss in fp32). No loss scaling: bf16 has fp32's exponent range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            p => Err(Error::config("precision", format!("unknown precision `{p}` (fp32, bf16)"))),
        }
    }

    /// The activations' dtype.
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// Where a run computes: `auto` (the first CUDA device when there is one, else the CPU), `cpu`,
/// `cuda` or `cuda:N`. Written as that string in config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<DeviceSpec> {
        let bad = || Error::config("device", format!("bad device `{s}` (auto, cpu, cuda, cuda:N)"));
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            s => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceSpec::Cuda).ok_or_else(bad),
        }
    }

    pub fn name(self) -> String {
        match self {
            DeviceSpec::Auto => "auto".into(),
            DeviceSpec::Cpu => "cpu".into(),
            DeviceSpec::Cuda(0) => "cuda".into(),
            DeviceSpec::Cuda(i) => format!("cuda:{i}"),
        }
    }

    /// The libtorch device; CUDA must be present when asked for.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            DeviceSpec::Auto if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            DeviceSpec::Auto | DeviceSpec::Cpu => Ok(tch::Device::Cpu),
            DeviceSpec::Cuda(i) if tch::Cuda::is_available() && (i as i64) < tch::Cuda::device_count() => {
                Ok(tch::Device::Cuda(i))
            }
            DeviceSpec::Cuda(_) => Err(Error::config(
                "device",
                format!(
                    "{} requested but CUDA is unavailable (build with --features cuda, on a GPU machine)",
                    self.name()
                ),
            )),
        }
    }

    /// The spec that names a resolved device.
    pub fn of(d: tch::Device) -> DeviceSpec {
        match d {
            tch::Device::Cuda(i) => DeviceSpec::Cuda(i),
            _ => DeviceSpec::Cpu,
        }
    }

    /// Whether this names a CUDA device (or may resolve to one).
    pub fn may_be_cuda(self) -> bool {
        !matches!(self, DeviceSpec::Cpu)
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceSpec::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
