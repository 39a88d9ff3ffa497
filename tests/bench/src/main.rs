//! See the crate docs (`annals_bench`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    annals_bench::run(&args).await
}
