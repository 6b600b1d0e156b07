//! One file per subcommand, glue only.
mod bench;
mod common;
mod data;
mod eval;
mod experiment;
mod export;
mod import_peft;
mod inspect;
mod merge;
mod plot;
mod predict;
mod report;
mod search;
mod train;

use crate::cli::{Cli, Command, DataCommand, StructureCommand};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a, cli.quiet),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Search(a) => search::run_search(a, cli.quiet),
        Command::Retrain(a) => train::retrain(a, cli.quiet),
        Command::Run(a) => search::run_all(a, cli.quiet),
        Command::Structure(StructureCommand::Random(a)) => search::run_random(a),
        Command::Data(DataCommand::Export(a)) => data::export(*a),
        Command::Data(DataCommand::Fetch(a)) => data::fetch(a),
        Command::Data(DataCommand::List(a)) => data::list(a),
        Command::Bench(a) => bench::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Report(a) => report::run(a),
        Command::Plot(p) => plot::run(p),
        Command::Export(a) => export::run(a),
        Command::ImportPeft(a) => import_peft::run(a),
    }
}
