//! `latentlens bench NAME`: one module per benchmark.

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// PQ / exact search vs faiss (see bench_search.rs).
    Search(crate::bench_search::Args),
    /// SmolLM2 forward with all hidden states vs PyTorch (see bench_model.rs).
    Model(crate::bench_model::Args),
    /// Bank extraction tokens/s vs PyTorch, then quantisation (see bench_bank.rs).
    Bank(crate::bench_bank::Args),
    /// SmolLM2 forward and a VLM's vision + full forward on our WGSL kernels vs our CPU path
    /// (see bench_wgsl.rs).
    Wgsl(crate::bench_wgsl::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        Which::Search(a) => crate::bench_search::run(a),
        Which::Model(a) => crate::bench_model::run(a),
        Which::Bank(a) => crate::bench_bank::run(a),
        Which::Wgsl(a) => crate::bench_wgsl::run(a),
    }
}
