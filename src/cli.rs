//! Command-line interface: parse, set up logging, dispatch to src/cmd.
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "s3pet",
    version,
    about = "Sparse structure search for delta tuning of pre-trained transformers",
    after_help = "Every subcommand also takes --config FILE.toml: `key = value` lines named like its long \
                  options (e.g. configs/rte-mix.toml); options given on the command line win."
)]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bars, warnings only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Use only the local hub cache for `--model org/name` and Hub task data (as HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
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
    /// Export a run: PEFT adapters (LoRA, LN_TUNING) or s3pet's own lossless format.
    Export(ExportArgs),
    /// Make an s3pet run from a PEFT LoRA / LN_TUNING adapter directory.
    ImportPeft(ImportPeftArgs),
    /// Run a plan of tasks x methods x budgets x seeds (resumable; N cells at once) into results/.
    Experiment(ExperimentArgs),
    /// Render results/RESULTS.md and its plots from results/runs.jsonl.
    Report(ReportArgs),
    /// Plots of one run: the structure (heatmap) or the training curves.
    #[command(subcommand)]
    Plot(PlotCommand),
    /// Data parallelism: one process per rank (GPU) running the same train, retrain, search, run or
    /// dist-check; rank 0 alone writes into --out (docs/DISTRIBUTED.md).
    Launch(LaunchArgs),
    /// One all-reduce of a known tensor on this rank's device, checked (run it under `s3pet launch`).
    DistCheck(DistCheckArgs),
}

#[derive(Args)]
pub struct LaunchArgs {
    /// Ranks on this host [default: the number of --gpus, else 1].
    #[arg(long, value_parser = checked::<usize>("nproc"))]
    pub nproc: Option<usize>,
    /// This host's GPUs, one per rank in rank order (made CUDA_VISIBLE_DEVICES: local rank l uses cuda:l);
    /// refused on a machine without CUDA.
    #[arg(long, value_delimiter = ',')]
    pub gpus: Option<Vec<usize>>,
    /// nccl (GPUs; the default with --gpus) or tcp (a TCP all-reduce over the CPU; the default without).
    #[arg(long, value_parser = ["nccl", "tcp"])]
    pub backend: Option<String>,
    /// Hosts in the world: run one launch per host, each with its --node-rank and the same --master-*.
    #[arg(long, default_value_t = 1, value_parser = checked::<usize>("nnodes"))]
    pub nnodes: usize,
    /// This host's place among --nnodes (its ranks are node_rank * nproc + local rank).
    #[arg(long, default_value_t = 0, value_parser = checked::<usize>("node-rank"))]
    pub node_rank: usize,
    /// Where rank 0 listens for the rendezvous.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Its port [default: a free one; required with --nnodes above 1].
    #[arg(long, value_parser = checked::<usize>("master-port"))]
    pub master_port: Option<usize>,
    /// The command every rank runs, after `--`: train, retrain, search, run or dist-check with its options.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Args)]
pub struct DistCheckArgs {
    /// auto, cpu, cuda (under a launch with GPUs: each rank's cuda:LOCAL_RANK).
    #[arg(long, default_value = "auto", value_parser = known(s3pet::config::DeviceSpec::parse))]
    pub device: String,
}

#[derive(Args)]
pub struct ExperimentArgs {
    /// The plan (TOML): seeds, options, [[grid]] of tasks x methods x budgets.
    #[arg(long)]
    pub plan: PathBuf,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Cells run at once (default: the plan's `parallel`).
    #[arg(long, value_parser = checked::<usize>("parallel"))]
    pub parallel: Option<usize>,
    /// Start no new cell after this many minutes (running ones finish); run again to continue.
    #[arg(long, value_parser = checked::<f64>("max-minutes"), conflicts_with = "dry_run")]
    pub max_minutes: Option<f64>,
    /// For a machine held until a known time: start a cell only when the longest finished cell of its
    /// kind (task, method, search order; runs.jsonl and this run), with a 1.2 margin, ends within this
    /// many minutes; a kind with none finished yet is timed by the longest of its method and order on
    /// any task, else of its method at a higher search order on any task, and one with none of these
    /// starts as before (until --max-minutes). Shorter kinds then fill the end instead of cells that
    /// would be cut.
    #[arg(long, value_parser = checked::<f64>("cells-end-by"), conflicts_with = "dry_run")]
    pub cells_end_by: Option<f64>,
    /// List the cells still to run and their commands, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// GPUs to spread the cells over: each cell starts on the listed GPU with the most free memory (one
    /// cell per GPU at a time); refused on a machine without CUDA.
    #[arg(long, value_delimiter = ',')]
    pub gpus: Option<Vec<usize>>,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The experiment's output directory (runs.jsonl, cells/).
    #[arg(default_value = "results")]
    pub dir: PathBuf,
}

#[derive(Subcommand)]
pub enum PlotCommand {
    /// Heatmap of the searched p (or of the chosen modules), layer x site type, PNG and SVG.
    Structure(PlotArgs),
    /// Training loss and dev metrics against steps, PNG and SVG.
    Curves(PlotArgs),
}

#[derive(Args)]
pub struct PlotArgs {
    /// A run directory.
    pub run: PathBuf,
    /// Output path without extension (default: <run>/structure or <run>/curves).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// peft (adapter_config.json + adapter_model.safetensors) or native (the run's own files, lossless).
    #[arg(long, default_value = "peft")]
    pub format: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct ImportPeftArgs {
    /// The adapter directory (adapter_config.json, adapter_model.safetensors; sub-adapters in subdirectories).
    pub dir: PathBuf,
    /// The run directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The task the classifier was trained for (default: the one in s3pet_export.json, if any).
    #[arg(long)]
    pub task: Option<String>,
    /// Options recorded in the run's config.json (--model is the adapter's base model).
    #[command(flatten)]
    pub common: CommonArgs,
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
    Export(Box<DataExportArgs>),
    /// Download a task's Hub dataset files into the hub cache ($HF_HOME/hub) and print them.
    Fetch(DataFetchArgs),
    /// The dataset repos in the hub cache: revisions, commits, files.
    List(DataListArgs),
}

#[derive(Args)]
pub struct DataFetchArgs {
    /// Builtin task or a task-spec TOML file with a [hub] table.
    #[arg(long)]
    pub task: String,
    /// Branch, tag or commit of the dataset repo (default: the spec's, else main).
    #[arg(long)]
    pub revision: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DataListArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
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
    /// minilm, bert-base, bert-large, mpnet-base, roberta-base, deberta-v3-base (random weights; the last three
    /// from the real configs) or a model directory; comma-separated.
    #[arg(long, default_value = "minilm")]
    pub shape: String,
    /// full, lora, retrain, search1, search2, comma-separated, or all.
    #[arg(long, default_value = "all")]
    pub workload: String,
    #[arg(long, default_value_t = 16, value_parser = checked::<usize>("batch-size"))]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128, value_parser = checked::<usize>("seq-len"))]
    pub seq_len: usize,
    #[arg(long, default_value_t = 2, value_parser = checked::<usize>("warmup"))]
    pub warmup: usize,
    #[arg(long, default_value_t = 5, value_parser = checked::<usize>("steps"))]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, value_parser = checked::<usize>("threads"))]
    pub threads: Option<usize>,
    /// Budget (fraction of the backbone) of the retrain and search workloads.
    #[arg(long, default_value_t = 1.39e-4, value_parser = checked::<f64>("budget"))]
    pub budget: f64,
    /// Frozen backbone matrices in fp32 or bf16 (the full workload always trains fp32).
    #[arg(long, default_value = "fp32")]
    pub backbone_dtype: String,
    /// fp32, or bf16 activations and frozen matmuls end to end (fp32 deltas, head, optimiser); not for
    /// the full workload.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16"])]
    pub precision: String,
    /// Use the real all-MiniLM-L6-v2 weights (--model) for the minilm shape.
    #[arg(long)]
    pub real_minilm: bool,
    /// Also write, per shape, the retrain structure (`SHAPE.retrain.json`) and the search candidates with
    /// the budget (`SHAPE.candidates.json`) in structure.json form, for tools/bench_peer.py.
    #[arg(long)]
    pub emit_structures: Option<PathBuf>,
    #[arg(long, env = "S3PET_MODEL", default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Search rows: capture the step as a CUDA graph (on a CUDA device of a cuda build), or not.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub cuda_graphs: String,
    /// Second-order search rows: the w+ and w- passes of the Hessian term as one pass with a replica
    /// dimension (on), or as two passes (off); auto: on for CUDA, off on the CPU (the search's default).
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub hvp_replicas: String,
    /// Instead of timing: for each workload (search1 / search2: the search step; full, lora, retrain: the
    /// training step), run --steps steps (at least 12, over two sequence lengths: --seq-len and half of
    /// it) with CUDA graphs and without, from the same start, print the largest differences (JSON) and
    /// fail when one exceeds --graph-tol or a shape was not captured.
    #[arg(long)]
    pub graph_check: bool,
    #[arg(long, default_value_t = 1e-4)]
    pub graph_tol: f64,
}

#[derive(Subcommand)]
pub enum StructureCommand {
    /// A random structure: candidates shuffled with the seed, then the same greedy fill as the search.
    Random(RandomArgs),
}

/// A value parser that checks the option's range ([`s3pet::config::limits`]): NaN, infinities and
/// out-of-range values fail here, with the option, the value and the range named.
fn checked<T: FromNumber>(
    option: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| {
        let v = s3pet::config::limits::parse_number(option, text).map_err(|_| {
            let range = s3pet::config::limits::range_of(option).map(|r| r.describe()).unwrap_or_default();
            format!("must be {range}")
        })?;
        Ok(T::from_number(v))
    }
}

/// A value parser that accepts what `parse` accepts and keeps the text.
fn known<T: 'static>(
    parse: fn(&str) -> s3pet::Result<T>,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |text| parse(text).map(|_| text.to_string()).map_err(|e| e.to_string())
}

/// Numbers the checked parsers produce.
pub trait FromNumber: Clone + Send + Sync + 'static {
    fn from_number(v: f64) -> Self;
}
impl FromNumber for f64 {
    fn from_number(v: f64) -> Self {
        v
    }
}
impl FromNumber for usize {
    fn from_number(v: f64) -> Self {
        v as usize
    }
}
impl FromNumber for u64 {
    fn from_number(v: f64) -> Self {
        v as u64
    }
}
impl FromNumber for i64 {
    fn from_number(v: f64) -> Self {
        v as i64
    }
}
impl FromNumber for u8 {
    fn from_number(v: f64) -> Self {
        v as u8
    }
}

/// The search space and budget.
#[derive(Args, Clone, Debug, Serialize)]
pub struct SpaceArgs {
    /// mix (S3PET-M), mix-peft (S3PET-M without LRA: every structure exports to PEFT), lora (S3PET-L) or a space
    /// TOML file [default: mix].
    #[arg(long)]
    pub space: Option<String>,
    /// Budget as a fraction of all backbone parameters (rounded down), e.g. 1.39e-4.
    #[arg(long, value_parser = checked::<f64>("budget"))]
    pub budget: Option<f64>,
    /// Budget as an absolute parameter count.
    #[arg(long, conflicts_with = "budget", value_parser = checked::<i64>("budget-params"))]
    pub budget_params: Option<i64>,
}

#[derive(Args, Clone, Debug, Serialize)]
pub struct SearchOpts {
    /// 1: first order; 2: the paper's second order (DARTS) [default: 2].
    #[arg(long, value_parser = checked::<u8>("order"))]
    pub order: Option<u8>,
    /// Learning rate of the structure logits alpha [default: 0.1].
    #[arg(long, value_parser = checked::<f64>("alpha-lr"))]
    pub alpha_lr: Option<f64>,
    /// Temperature beta of the shifted global sigmoid [default: 1].
    #[arg(long, value_parser = checked::<f64>("beta"))]
    pub beta: Option<f64>,
    /// Batch size of the search's D_w and D_alpha batches [default: --batch-size].
    #[arg(long, value_parser = checked::<usize>("search-batch-size"))]
    pub search_batch_size: Option<usize>,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Builtin task or a task-spec TOML file.
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
    /// Builtin task or a task-spec TOML file.
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub out: PathBuf,
    /// s3pet (search) or random (a random structure of the same space and budget) [default: s3pet].
    #[arg(long)]
    pub strategy: Option<String>,
    /// Search epochs [default: --epochs, else the task's schedule].
    #[arg(long, value_parser = checked::<usize>("search-epochs"))]
    pub search_epochs: Option<usize>,
    /// At the end of the run, export the retrained structure: `--export peft DIR` writes a PEFT adapter
    /// (refused up front when the space holds modules PEFT cannot represent: use --space mix-peft).
    #[arg(long, num_args = 2, value_names = ["FORMAT", "DIR"])]
    pub export: Option<Vec<String>>,
    /// Retraining epochs (the same as --epochs) [default: the task's schedule].
    #[arg(long, conflicts_with = "epochs", value_parser = checked::<usize>("retrain-epochs"))]
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
    #[arg(long, default_value_t = 42, value_parser = checked::<u64>("seed"))]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// Model, data and training options shared by every training command. Unset options take the task's
/// schedule (epochs, batch size, max length, eval interval) or the built-in default (in brackets); every
/// value and its source are recorded in the run's config.json.
#[derive(Args, Clone, Debug, Serialize)]
pub struct CommonArgs {
    /// A Hugging Face directory (config.json, model.safetensors, tokenizer.json) of an encoder (BERT,
    /// RoBERTa, XLM-RoBERTa, MPNet, DeBERTa-v2/v3, DistilBERT) or of T5, or a
    /// hub model id `org/name` (downloaded once into the hub cache; HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE)
    /// [default: models/all-MiniLM-L6-v2].
    #[arg(long, env = "S3PET_MODEL")]
    pub model: Option<PathBuf>,
    /// Where the task's files are (also $S3PET_DATA); without one, a builtin task's Hugging Face Hub
    /// dataset (fetched into the hub cache; offline: the cache only).
    #[arg(long, env = "S3PET_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Seed of every generator (splits, initialisation, dropout, batch order, search noise) [default: 42].
    #[arg(long, value_parser = checked::<u64>("seed"))]
    pub seed: Option<u64>,
    /// Epochs [default: the task's schedule, else 3].
    #[arg(long, value_parser = checked::<usize>("epochs"))]
    pub epochs: Option<usize>,
    /// Stop after N optimiser steps (overrides --epochs).
    #[arg(long, value_parser = checked::<usize>("max-steps"))]
    pub max_steps: Option<usize>,
    /// Keep only the first N training examples.
    #[arg(long, value_parser = checked::<usize>("max-train-examples"))]
    pub max_train_examples: Option<usize>,
    /// Keep only the first N dev and test examples.
    #[arg(long, value_parser = checked::<usize>("max-eval-examples"))]
    pub max_eval_examples: Option<usize>,
    /// Batch size [default: the task's schedule, else 32].
    #[arg(long, value_parser = checked::<usize>("batch-size"))]
    pub batch_size: Option<usize>,
    /// Evaluation batch size [default: 64].
    #[arg(long, value_parser = checked::<usize>("eval-batch-size"))]
    pub eval_batch_size: Option<usize>,
    /// Learning rate of the deltas and head (the search's w too) [default: 3e-4; full fine-tuning 2e-5].
    #[arg(long, value_parser = checked::<f64>("lr"))]
    pub lr: Option<f64>,
    /// AdamW weight decay of the trained parameters (the search's w too) [default: 0].
    #[arg(long, value_parser = checked::<f64>("weight-decay"))]
    pub weight_decay: Option<f64>,
    /// Linear warm-up over this fraction of the steps (the search's w too) [default: 0].
    #[arg(long, value_parser = checked::<f64>("warmup-ratio"))]
    pub warmup_ratio: Option<f64>,
    /// Gradient-norm clip [default: 2.0 as the paper's scripts; full fine-tuning 1.0].
    #[arg(long, value_parser = checked::<f64>("clip-norm"))]
    pub clip_norm: Option<f64>,
    /// Evaluate dev every K steps (always at each epoch's end) [default: the task's schedule].
    #[arg(long, value_parser = checked::<usize>("eval-every"))]
    pub eval_every: Option<usize>,
    /// Longest input in tokens [default: the task's schedule, else 128].
    #[arg(long, value_parser = checked::<usize>("max-length"))]
    pub max_length: Option<usize>,
    /// Group training examples of similar length (less padding): each run of N batches of the shuffled
    /// order is sorted by length, cut into batches, and those batches are shuffled again [default: 0, off].
    #[arg(long, value_parser = checked::<usize>("length-buckets"))]
    pub length_buckets: Option<usize>,
    /// Pad each training and search batch up to a multiple of N tokens (at most --max-length): fewer
    /// batch shapes, so the search's steps replay as CUDA graphs [default: 16 for a search that runs
    /// CUDA graphs, else 1: no padding beyond the batch's longest example].
    #[arg(long, value_parser = checked::<usize>("pad-to-multiple"))]
    pub pad_to_multiple: Option<usize>,
    /// auto (CUDA when present), cpu, cuda or cuda:N [default: auto].
    #[arg(long, value_parser = known(s3pet::config::DeviceSpec::parse))]
    pub device: Option<String>,
    /// libtorch intra-op threads [default: libtorch's choice].
    #[arg(long, value_parser = checked::<usize>("threads"))]
    pub threads: Option<usize>,
    /// Frozen backbone matrices in fp32 or bf16 (deltas, head, norms, optimiser state stay fp32)
    /// [default: fp32].
    #[arg(long, value_parser = known(s3pet::config::Dtype::parse))]
    pub backbone_dtype: Option<String>,
    /// fp32, or bf16: bf16 activations and frozen matmuls end to end, deltas / head / optimiser in fp32
    /// [default: fp32].
    #[arg(long, value_parser = known(s3pet::config::Precision::parse))]
    pub precision: Option<String>,
    /// Replace an existing run directory.
    #[arg(long)]
    #[serde(skip)]
    pub overwrite: bool,
    /// Continue the run in --out from its last checkpoint (its saved config is used; only --device and
    /// --threads may change).
    #[arg(long, conflicts_with = "overwrite")]
    #[serde(skip)]
    pub resume: bool,
    /// Also save a checkpoint every K steps (always at each evaluation and on Ctrl-C).
    #[arg(long, value_parser = checked::<usize>("checkpoint-every"))]
    pub checkpoint_every: Option<usize>,
    /// Skip batches whose loss, gradient or updated parameters are not finite instead of stopping.
    #[arg(long)]
    pub skip_nonfinite: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Builtin task (rte, mrpc, cola, sst2, stsb, qqp, mnli, mnli-mm, qnli, wnli, cb, copa, boolq, multirc,
    /// wsc, wic) or a task-spec TOML file.
    #[arg(long)]
    pub task: String,
    /// full, lora, adapter, bitfit, lnfit or lra (train only; not with --structure) [default: lora].
    #[arg(long)]
    pub method: Option<String>,
    /// A structure.json to train instead of a manual method (required by retrain).
    #[arg(long)]
    pub structure: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Manual LoRA's knobs, named as PEFT names them (`--method lora`; a structure takes only the dropout).
#[derive(Args, Clone, Debug, Serialize)]
pub struct LoraArgs {
    /// LoRA rank r [default: 8].
    #[arg(long, value_parser = checked::<i64>("lora-r"))]
    pub lora_r: Option<i64>,
    /// lora_alpha (scale = alpha / r) [default: 16].
    #[arg(long, value_parser = checked::<f64>("lora-alpha"))]
    pub lora_alpha: Option<f64>,
    /// Dropout on LoRA's input [default: 0].
    #[arg(long, value_parser = checked::<f64>("lora-dropout"))]
    pub lora_dropout: Option<f64>,
    /// Comma-separated module names or suffixes (as PEFT matches them), or `re:<regex>` matched against
    /// the whole module path [default: the query and value projections].
    #[arg(long)]
    pub target_modules: Option<String>,
    /// Per-module ranks, `name=r,...` (names or suffixes of target modules).
    #[arg(long)]
    pub rank_pattern: Option<String>,
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
    /// Show a search space's candidates instead of a method (mix, mix-peft, lora or a TOML file).
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long, value_parser = checked::<f64>("budget"))]
    pub budget: Option<f64>,
    #[arg(long, conflicts_with = "budget", value_parser = checked::<i64>("budget-params"))]
    pub budget_params: Option<i64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The command with every value-taking option accepting a leading `-` (so `--lr -1` reaches the range
/// check and its message instead of reading as an unknown flag).
fn command() -> clap::Command {
    fn negatives(c: clap::Command) -> clap::Command {
        c.mut_args(|a| if a.get_action().takes_values() { a.allow_negative_numbers(true) } else { a })
            .mut_subcommands(negatives)
    }
    negatives(<Cli as clap::CommandFactory>::command())
}

/// Parses a command line (`args[0]` is the program).
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
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

/// `--config FILE` (TOML, flat `key = value` pairs named like the command's long options, `_` or `-`):
/// the file's options are inserted after the subcommand, except those also given on the command line,
/// which win. Booleans set a flag when true. Unknown keys fail with the file and key named.
pub fn expand_config(
    args: Vec<std::ffi::OsString>,
) -> anyhow::Result<(Vec<std::ffi::OsString>, std::collections::HashSet<String>)> {
    use anyhow::{bail, Context};
    use clap::CommandFactory;
    let strs: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(at) = strs.iter().position(|a| a == "--config" || a.starts_with("--config=")) else {
        return Ok((args, Default::default()));
    };
    let (path, drop) = match strs[at].strip_prefix("--config=") {
        Some(p) => (p.to_string(), 1),
        None => (strs.get(at + 1).cloned().context("--config needs a file")?, 2),
    };
    let cmd = Cli::command();
    let sub_at = strs
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, a)| cmd.find_subcommand(a.as_str()).is_some())
        .map(|(i, _)| i)
        .context("--config goes after a subcommand, e.g. `s3pet run --config FILE`")?;
    if strs[sub_at] == "launch" {
        return Ok((args, Default::default())); // the `--config` of the command each rank runs: its rank expands it
    }
    let sub = cmd.find_subcommand(&strs[sub_at]).expect("found above");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("{path}: cannot read the config file"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{path}: {}", e.message()))?;
    let known: Vec<String> = sub.get_arguments().filter_map(|a| a.get_long().map(String::from)).collect();
    let given =
        |long: &str| strs.iter().any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let mut inserted: Vec<std::ffi::OsString> = Vec::new();
    let mut from_file = std::collections::HashSet::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        if long == "config" || !known.contains(&long) {
            bail!("{path}: unknown key `{key}` for `s3pet {}` (known: {})", strs[sub_at], known.join(", "));
        }
        if given(&long) {
            continue; // the command line wins
        }
        let flag = format!("--{long}").into();
        from_file.insert(long.clone());
        match value {
            toml::Value::Boolean(true) => inserted.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => inserted.extend([flag, s.into()]),
            toml::Value::Integer(i) => inserted.extend([flag, i.to_string().into()]),
            toml::Value::Float(f) => inserted.extend([flag, format!("{f:e}").into()]),
            other => {
                bail!("{path}: key `{key}` must be a string, number or boolean, not {}", other.type_str())
            }
        }
    }
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(args.len() + inserted.len());
    for (i, a) in args.into_iter().enumerate() {
        if i >= at && i < at + drop {
            continue;
        }
        out.push(a);
        if i == sub_at {
            out.append(&mut inserted);
        }
    }
    Ok((out, from_file))
}
