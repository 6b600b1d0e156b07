mod cli;
mod cmd;

fn main() {
    let (args, file_keys) = match cli::expand_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let sources = cmd::ArgSources::new(&args, file_keys);
    let cli = cli::parse(args).unwrap_or_else(|e| e.exit());
    cli::init_logging(cli.verbose, cli.quiet);
    s3pet::progress::set_quiet(cli.quiet);
    s3pet::data::quiet_parquet_panics();
    s3pet::guard::exit_cleanly_on_out_of_memory();
    if cli.offline {
        std::env::set_var(s3pet::hub::OFFLINE_ENV, "1");
    }
    // First Ctrl-C: finish the step, save a checkpoint, exit; a second one exits at once.
    let _ = ctrlc::set_handler(|| {
        use std::sync::atomic::Ordering;
        if s3pet::checkpoint::INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupt: saving a checkpoint at the end of this step (Ctrl-C again to exit now)");
    });
    if let Err(e) = cmd::dispatch(cli, &sources) {
        eprintln!("error: {e:#}");
        if s3pet::dist::PEER_LOST.load(std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(s3pet::dist::PEER_LOST_EXIT); // another rank failed first
        }
        std::process::exit(1);
    }
}
