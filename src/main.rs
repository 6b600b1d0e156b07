mod cli;
mod cmd;

fn main() {
    let cli = <cli::Cli as clap::Parser>::parse();
    cli::init_logging(cli.verbose, cli.quiet);
    if let Err(e) = cmd::dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
