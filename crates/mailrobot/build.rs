//! Embeds the demo's sample mails (demo/*.eml) so `mailrobot demo` needs no
//! files beside the binary.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // The directory cargo runs this for, read at run time: a build script
    // compiled in another checkout sharing the target directory must not
    // read that checkout's files.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("demo");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the demo's sample mails: cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    assert!(!names.is_empty(), "no sample mails (*.eml) in {}", dir.display());
    names.sort();
    let mut code = String::from("pub const DEMO_MAILS: &[(&str, &[u8])] = &[\n");
    for name in &names {
        let path = dir.join(name);
        writeln!(code, "    ({name:?}, include_bytes!({:?})),", path.display().to_string()).unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("demo_mails.rs");
    std::fs::write(out, code).unwrap();
}
