//! Command-line interface: parse, set up logging, dispatch to src/cmd.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "s3pet",
    version,
    about = "Sparse structure search for delta tuning of pre-trained transformers"
)]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bars, warnings only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a manual method or a structure on a task, then test the best-dev weights.
    Train(TrainArgs),
    /// Evaluate a finished run on its dev or test split.
    Eval(EvalArgs),
    /// Show sites, modules and parameter counts of a method, structure or search space.
    Inspect(InspectArgs),
    /// Search a structure under a parameter budget (S3PET); writes structure.json.
    Search(SearchArgs),
    /// Retrain a structure from scratch on the full training set, then test.
    Retrain(TrainArgs),
    /// Search (or draw a random structure), retrain and test in one command.
    Run(RunArgs),
    /// Make structures without training.
    #[command(subcommand)]
    Structure(StructureCommand),
    /// Task data as a run sees it.
    #[command(subcommand)]
    Data(DataCommand),
    /// Training-step throughput: full, lora, retrain, search1, search2 on a model or a named shape.
    Bench(BenchArgs),
    /// Predictions of a finished run for new text (one JSON object per input line).
    Predict(PredictArgs),
    /// Fold a run's linear deltas into a plain Hugging Face BertForSequenceClassification directory.
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct MergeArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// TSV without a header (one or two text columns) or JSONL with text_a / text_b; `-` for stdin.
    #[arg(long)]
    pub input: String,
    /// tsv or jsonl (default: from the file's extension, else tsv).
    #[arg(long)]
    pub input_format: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write the split and cut examples of a task (train/dev/test.jsonl + spec.json).
    Export(DataExportArgs),
}

#[derive(Args)]
pub struct DataExportArgs {
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    /// minilm, bert-base, bert-large (random weights) or a model directory; comma-separated.
    #[arg(long, default_value = "minilm")]
    pub shape: String,
    /// full, lora, retrain, search1, search2, comma-separated, or all.
    #[arg(long, default_value = "all")]
    pub workload: String,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Budget (fraction of the backbone) of the retrain and search workloads.
    #[arg(long, default_value_t = 1.39e-4)]
    pub budget: f64,
    /// Use the real all-MiniLM-L6-v2 weights (--model) for the minilm shape.
    #[arg(long)]
    pub real_minilm: bool,
    #[arg(long, env = "S3PET_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
}

#[derive(Subcommand)]
pub enum StructureCommand {
    /// A random structure: candidates shuffled with the seed, then the same greedy fill as the search.
    Random(RandomArgs),
}

/// The search space and budget.
#[derive(Args, Clone, Debug)]
pub struct SpaceArgs {
    /// mix (S3PET-M), lora (S3PET-L) or a space TOML file.
    #[arg(long, default_value = "mix")]
    pub space: String,
    /// Budget as a fraction of all backbone parameters (rounded down), e.g. 1.39e-4.
    #[arg(long)]
    pub budget: Option<f64>,
    /// Budget as an absolute parameter count.
    #[arg(long, conflicts_with = "budget")]
    pub budget_params: Option<i64>,
}

#[derive(Args, Clone, Debug)]
pub struct SearchOpts {
    /// 1: first order; 2: the paper's second order (DARTS).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub order: u8,
    /// Learning rate of the structure logits alpha.
    #[arg(long, default_value_t = 0.1)]
    pub alpha_lr: f64,
    /// Temperature beta of the shifted global sigmoid.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
}

#[derive(Args)]
pub struct SearchArgs {
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub space: SpaceArgs,
    #[command(flatten)]
    pub search: SearchOpts,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub out: PathBuf,
    /// s3pet (search) or random (a random structure of the same space and budget).
    #[arg(long, default_value = "s3pet")]
    pub strategy: String,
    /// Search epochs (default: --epochs).
    #[arg(long)]
    pub search_epochs: Option<usize>,
    /// Retraining epochs (default: --epochs).
    #[arg(long)]
    pub retrain_epochs: Option<usize>,
    #[command(flatten)]
    pub space: SpaceArgs,
    #[command(flatten)]
    pub search: SearchOpts,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct RandomArgs {
    #[arg(long, env = "S3PET_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    #[command(flatten)]
    pub space: SpaceArgs,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// Model, data and training options shared by every training command.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// A Hugging Face BERT-family directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = "S3PET_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Where the GLUE / SuperGLUE files are (else $S3PET_DATA, else ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Stop after N optimiser steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Keep only the first N training examples.
    #[arg(long)]
    pub max_train_examples: Option<usize>,
    /// Keep only the first N dev and test examples.
    #[arg(long)]
    pub max_eval_examples: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub eval_batch_size: usize,
    /// Learning rate (train: 2e-5 for full fine-tuning, 5e-4 otherwise; search, retrain, run: 3e-4).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.0)]
    pub warmup_ratio: f64,
    /// Gradient-norm clip (train: 1.0; search, retrain, run: 2.0 as the paper's scripts).
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Evaluate dev every K steps (always at each epoch's end).
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing run directory.
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run in --out from its last checkpoint (its saved config is used).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Also save a checkpoint every K steps (always at each evaluation and on Ctrl-C).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Skip batches whose loss or gradient is not finite instead of stopping.
    #[arg(long)]
    pub skip_nonfinite: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Builtin task (rte, mrpc, cola, sst2, stsb, qqp, mnli, mnli-mm, qnli, wnli, cb, copa, boolq, multirc,
    /// wsc, wic) or a task-spec TOML file.
    #[arg(long)]
    pub task: String,
    /// full, lora, adapter, bitfit, lnfit or lra (ignored with --structure).
    #[arg(long, default_value = "lora")]
    pub method: String,
    /// A structure.json to train instead of a manual method (required by retrain).
    #[arg(long)]
    pub structure: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Override the data directory saved in the run.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long, env = "S3PET_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Read this config.json instead of --model's (no weights needed), e.g. a T5-large config.
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    #[arg(long, default_value = "lora")]
    pub method: String,
    #[arg(long)]
    pub structure: Option<PathBuf>,
    /// Show a search space's candidates instead of a method (mix, lora or a TOML file).
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long)]
    pub budget: Option<f64>,
    #[arg(long, conflicts_with = "budget")]
    pub budget_params: Option<i64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
