//! One file per subcommand, glue only: parse, call one library function, print.
mod bench;
mod data;
mod eval;
mod experiment;
mod export;
mod given;
mod import_peft;
mod inspect;
mod merge;
mod plot;
mod predict;
mod report;
mod search;
mod train;

pub use given::ArgSources;

use crate::cli::{Cli, Command, DataCommand, StructureCommand};

pub fn dispatch(cli: Cli, src: &ArgSources) -> anyhow::Result<()> {
    let q = cli.quiet;
    match cli.command {
        Command::Train(a) => train::run(a, src, q),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Search(a) => search::search(a, src, q),
        Command::Retrain(a) => train::retrain(a, src, q),
        Command::Run(a) => search::run(a, src, q),
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
