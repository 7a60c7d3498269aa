//! `noisycxr` binary: parse, run, print the error chain, exit non-zero on failure.

use clap::Parser;

fn main() {
    noisycxr::runtime::init_threads();
    let cli = noisycxr::cli::Cli::parse();
    if let Err(e) = noisycxr::ops::openblas::init().and_then(|()| noisycxr::cli::run(cli)) {
        let code = e.exit_code();
        let e = anyhow::Error::new(e);
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(code);
    }
}
