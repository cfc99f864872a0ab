//! `gridctl`: see the library (`gridctl::cli`) for the commands.

use clap::Parser;

fn main() {
    let cli = gridctl::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    if let Err(e) = gridctl::cli::run(cli, &mut out) {
        eprintln!("gridctl: {e}");
        std::process::exit(1);
    }
}
