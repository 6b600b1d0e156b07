//! One file per subcommand, glue only: parse, call one library function, print.
mod bench;
mod data;
mod eval;
mod experiment;
mod export;
mod given;
mod import_peft;
mod inspect;
mod launch;
mod merge;
mod plot;
mod predict;
mod report;
mod search;
mod train;

pub use given::ArgSources;

use crate::cli::{Cli, Command, DataCommand, StructureCommand};

/// The world of a rank that `s3pet launch` started (for the commands a launch runs).
fn join_world(c: &Command) -> anyhow::Result<Option<s3pet::dist::Installed>> {
    let launched = matches!(
        c,
        Command::Train(_)
            | Command::Retrain(_)
            | Command::Search(_)
            | Command::Run(_)
            | Command::DistCheck(_)
    );
    if !launched {
        return Ok(None);
    }
    Ok(s3pet::dist::launch::init_from_env()?.map(s3pet::dist::install))
}

/// Where this rank writes `out` (rank 0: `out` itself; see s3pet::dist::rank_dir).
fn rank_out(out: &std::path::Path, resume: bool) -> anyhow::Result<std::path::PathBuf> {
    Ok(s3pet::dist::rank_dir::rank_dir(out, resume)?)
}

pub fn dispatch(cli: Cli, src: &ArgSources) -> anyhow::Result<()> {
    // the environment's CUDA-graph switch, refused before any command reads or writes anything
    s3pet::step_graphs::graphs_setting()?;
    let q = cli.quiet;
    let _world = join_world(&cli.command)?;
    let root = s3pet::dist::current().rank == 0;
    match cli.command {
        Command::Train(mut a) => {
            a.out = rank_out(&a.out, a.common.resume)?;
            train::run(a, src, q)
        }
        Command::Retrain(mut a) => {
            a.out = rank_out(&a.out, a.common.resume)?;
            train::retrain(a, src, q)
        }
        Command::Search(mut a) => {
            a.out = rank_out(&a.out, a.common.resume)?;
            search::search(a, src, q)
        }
        Command::Run(mut a) => {
            a.out = rank_out(&a.out, a.common.resume)?;
            if !root {
                a.export = None; // rank 0 exports the run
            }
            search::run(a, src, q)
        }
        Command::Launch(a) => launch::run(a),
        Command::DistCheck(a) => launch::dist_check(a),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Structure(StructureCommand::Random(a)) => search::random(a),
        Command::Data(DataCommand::Export(a)) => data::export(*a, src),
        Command::Data(DataCommand::Fetch(a)) => data::fetch(a),
        Command::Data(DataCommand::List(a)) => data::list(a),
        Command::Bench(a) => bench::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Report(a) => report::run(a),
        Command::Plot(p) => plot::run(p),
        Command::Export(a) => export::run(a),
        Command::ImportPeft(a) => import_peft::run(a, src),
    }
}
