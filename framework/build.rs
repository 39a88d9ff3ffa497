//! Lists the migrations in `migrations/{postgres,sqlite}/NNNN_name.sql`
//! (written by `cargo xtask schema`) for `store::migrations` to embed, so
//! that the files are the only list: a new migration needs no Rust change.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    println!("cargo::rerun-if-changed={}", root.display());
    let mut code = String::new();
    for (dialect, constant, feature) in [
        ("postgres", "POSTGRES", "postgres"),
        ("sqlite", "SQLITE", "sqlite"),
    ] {
        let folder = root.join(dialect);
        println!("cargo::rerun-if-changed={}", folder.display());
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&folder)
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", folder.display()))
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".sql")?;
                let (number, label) = stem.split_once('_')?;
                Some((number.parse().ok()?, label.to_owned(), name))
            })
            .collect();
        files.sort();
        let _ = writeln!(
            code,
            "/// The {dialect} migrations, in order.\n#[cfg(feature = \"{feature}\")]\npub(crate) const {constant}: &[Migration] = &["
        );
        for (version, label, file) in files {
            let _ = writeln!(
                code,
                "    Migration {{ version: {version}, name: \"{label}\", sql: include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/migrations/{dialect}/{file}\")) }},"
            );
        }
        code.push_str("];\n");
    }
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(&out, code)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", out.display()));
}
