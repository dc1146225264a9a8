//! Each fuzz target's corpus, then `MAILROBOT_FUZZ_SECS` (default 3) of
//! mutated and large inputs, as ordinary tests. A finding fails the test
//! and is saved (see the message) to be added to `crates/fuzz/corpus/`.
//!
//! Longer: `MAILROBOT_FUZZ_SECS=600 cargo nextest run --release -p mailrobot-fuzz --no-capture -E 'test(mime)'`.

use mailrobot_fuzz::engine::{Settings, fuzz};

#[global_allocator]
static ALLOC: mailrobot_fuzz::alloc::Counting = mailrobot_fuzz::alloc::Counting;

fn run(name: &str) {
    let target = mailrobot_fuzz::target(name);
    let settings = Settings::from_env(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings"));
    match fuzz(target, &settings) {
        Ok(report) => {
            assert!(
                report.corpus_files >= 3,
                "{name}: expected a committed corpus, found {} files",
                report.corpus_files
            );
            println!("{report}");
        }
        Err(finding) => panic!("{name}: {finding}"),
    }
}

#[test]
fn mime() {
    run("mime");
}

#[test]
fn imap_session() {
    run("imap_session");
}

#[test]
fn imap_frames() {
    run("imap_frames");
}

#[test]
fn pop3_session() {
    run("pop3_session");
}

#[test]
fn smtp_session() {
    run("smtp_session");
}

#[test]
fn ews_answer() {
    run("ews_answer");
}

#[test]
fn www_authenticate() {
    run("www_authenticate");
}

#[test]
fn graph_answer() {
    run("graph_answer");
}

#[test]
fn ntlm_challenge() {
    run("ntlm_challenge");
}

#[test]
fn token_error() {
    run("token_error");
}

/// The session seeds named `full-session*` get through the whole session,
/// so mutating them reaches every step.
#[test]
fn full_session_seeds_reach_the_end() {
    use mailrobot_sources::fuzzing;
    let sessions: [(&str, fn(&[u8], u8, u64) -> &'static str, &str); 3] = [
        ("imap_session", fuzzing::imap_session, "settle"),
        ("pop3_session", fuzzing::pop3_session, "quit"),
        ("smtp_session", fuzzing::smtp_session, "sent"),
    ];
    for (name, session, end) in sessions {
        let seeds: Vec<_> = mailrobot_fuzz::engine::corpus(mailrobot_fuzz::target(name))
            .into_iter()
            .filter(|(file, _)| file.contains("full-session"))
            .collect();
        assert!(seeds.len() >= 3, "{name}: few full-session seeds");
        for (file, bytes) in seeds {
            let (options, script) = bytes.split_first().expect("an options byte");
            assert_eq!(session(script, *options, 0), end, "{file}");
        }
    }
}
