use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match qualtrics_bridge::startup::run_from_env().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qualtrics-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
