use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    qualtrics_bridge::cli::run(qualtrics_bridge::cli::Cli::parse()).await
}
