//! The native command-line tool: hidden states, benchmarks (and later
//! bank building, inspect, eval).

use clap::{Parser, Subcommand};

mod bench;
mod bench_bank;
mod bench_model;
mod bench_search;
mod bench_wgsl;
mod build_bank;
mod eval;
mod eval_export;
mod hidden_states;
mod inspect;
mod inspect_vlm;
mod model_url;
mod serve;
mod train_scenes;

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
    /// Build a contextual bank: run the model's LLM over a corpus, quantise, write.
    BuildBank(build_bank::Args),
    /// Explain every visual token (or text token) with LatentLens, EmbeddingLens and LogitLens.
    Inspect(inspect::Args),
    /// Merge shard collections (build-bank --shard i/n) into one bank.
    MergeBanks(build_bank::MergeArgs),
    /// Serve the web page (static files with Range, application/wasm, COOP/COEP).
    Serve(serve::Args),
    /// Ground-truth interpretability of the controlled VLM (three lenses, Mid-Layer Leap).
    Eval(eval::Args),
    /// Generate synthetic scenes (PNG + captions + per-patch ground truth) for the controlled VLM.
    Scenes(train_scenes::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::HiddenStates(args) => hidden_states::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BuildBank(args) => build_bank::run(args),
        Command::MergeBanks(args) => build_bank::run_merge(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Scenes(args) => train_scenes::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
