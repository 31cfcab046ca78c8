//! The native command-line tool: hidden states, benchmarks (and later
//! bank building, inspect, eval).

use clap::{Parser, Subcommand};

mod bench;
mod bench_model;
mod bench_search;
mod hidden_states;

#[derive(Parser)]
#[command(name = "latentlens", version, about = "What a vision-language model sees in each image patch, in words")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model and write the hidden states of every layer (safetensors).
    HiddenStates(hidden_states::Args),
    /// Benchmarks: ours vs an independent reference, side by side.
    Bench(bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::HiddenStates(args) => hidden_states::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
