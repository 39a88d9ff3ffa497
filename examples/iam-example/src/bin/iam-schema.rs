//! The schema generator of the IAM example workspace: `annals-codegen`'s
//! command line over the IAM domain's registered types. `cargo xtask schema`
//! runs it; `--help` lists its options.

fn main() -> std::process::ExitCode {
    iam_domain::link();
    annals_codegen::cli::main()
}
