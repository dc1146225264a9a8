//! Every fixture under tests/fixtures/eml/ is parsed and compared with the
//! `<case>.expected.json` beside it. A fixture without expectations fails, so
//! a new case cannot be added half-way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailrobot_core::{TagFormat, parse};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn fixtures_dir() -> PathBuf {
    manifest_dir().join("../../tests/fixtures/eml")
}

fn eml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            eml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            out.push(path);
        }
    }
}

/// What the parser made of a fixture, in the expectation file's shape.
fn observed(raw: &[u8], expected: &Value) -> Value {
    let mail = match parse(raw) {
        Ok(mail) => mail,
        Err(err) => return json!({ "parse": "error", "error": err.to_string() }),
    };
    let tag = TagFormat::default();
    let ticket_tag = tag.find(&mail.subject).or_else(|| mail.original_subject.as_deref().and_then(|s| tag.find(s)));
    let text_contains: Vec<&Value> = expected["text_contains"]
        .as_array()
        .map(|want| want.iter().filter(|s| mail.text_body.contains(s.as_str().unwrap_or("\u{0}"))).collect())
        .unwrap_or_default();
    json!({
        "parse": "ok",
        "message_id": mail.message_id,
        "subject": mail.subject,
        "from": mail.from.as_ref().map(|a| a.email.clone()).filter(|e| !e.is_empty()),
        "from_name": mail.from.as_ref().and_then(|a| a.name.clone()),
        "kind": mail.kind.as_str(),
        "ticket_tag": ticket_tag,
        "refers_to": mail.refers_to,
        "text_contains": text_contains,
        "has_html": mail.html_body.is_some(),
        "attachments": mail.attachments.iter().enumerate().map(|(i, a)| {
            let mut seen = json!({
                "filename": a.filename, "content_type": a.content_type, "size": a.size(),
                "inline": a.inline, "content_id": a.content_id,
            });
            // The content's hash, where the expectation gives one.
            if expected["attachments"][i].get("sha256").is_some() {
                seen["sha256"] = json!(hex::encode(Sha256::digest(&a.data)));
            }
            seen
        }).collect::<Vec<_>>(),
        "no_auto_answer": mail.no_auto_answer,
        "new_text": mail.new_text.as_deref().map(|t| t.replace("\r\n", "\n")),
        "html_quote_found": mail.html_body.as_deref().and_then(mailrobot_core::quote::html_quote_start).is_some(),
        "dedup_key": format!("{}|{}", mail.message_id.clone().unwrap_or_default(), mail.fingerprint),
    })
}

const COMPARED: &[&str] = &[
    "message_id",
    "subject",
    "from",
    "from_name",
    "kind",
    "ticket_tag",
    "refers_to",
    "text_contains",
    "has_html",
    "attachments",
    "no_auto_answer",
];

#[test]
fn every_fixture_matches_its_expectations() {
    let mut files = Vec::new();
    eml_files(&fixtures_dir(), &mut files);
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the fixture corpus under {}, found {} files",
        fixtures_dir().display(),
        files.len()
    );

    let mut failures = Vec::new();
    let mut groups: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    for path in &files {
        let expected_path = path.with_extension("expected.json");
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            Err(_) => {
                failures.push(format!("{}: no {}", path.display(), expected_path.display()));
                continue;
            }
        };
        let raw = std::fs::read(path).unwrap();
        let got = observed(&raw, &expected);
        let name = path.strip_prefix(fixtures_dir()).unwrap().display().to_string();
        if expected["parse"] == "error" {
            let want = expected["error_contains"].as_str().unwrap_or("");
            if got["parse"] != "error" || !got["error"].as_str().unwrap_or("").contains(want) {
                failures.push(format!("{name}: expected a parse error containing {want:?}, got {got}"));
            }
            continue;
        }
        if got["parse"] != "ok" {
            failures.push(format!("{name}: expected to parse, got {got}"));
            continue;
        }
        for key in COMPARED {
            if expected[*key] != got[*key] {
                failures.push(format!("{name}: {key}: expected {} got {}", expected[*key], got[*key]));
            }
        }
        // Compared where the expectation says.
        for key in ["new_text", "html_quote_found"] {
            if let Some(want) = expected.get(key)
                && *want != got[key]
            {
                failures.push(format!("{name}: {key}: expected {want} got {}", got[key]));
            }
        }
        if let Some(group) = expected["fingerprint_group"].as_str() {
            groups
                .entry(group.to_string())
                .or_default()
                .push((path.clone(), got["dedup_key"].as_str().unwrap().to_string()));
        }
    }
    // Copies of one mail share a dedup key; different groups never do.
    let mut keys_seen: BTreeMap<String, String> = BTreeMap::new();
    for (group, members) in &groups {
        let first = &members[0].1;
        for (path, key) in members {
            if key != first {
                failures.push(format!("{}: dedup key differs from the rest of group {group}", path.display()));
            }
        }
        if let Some(other) = keys_seen.insert(first.clone(), group.clone()) {
            failures.push(format!("groups {group} and {other} share a dedup key"));
        }
    }
    assert!(failures.is_empty(), "{} fixture mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// This package's directory, asked of cargo at run time (a test binary
/// built in another checkout that shares the target directory must read
/// this checkout's files); the build's own when run outside cargo.
fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}
