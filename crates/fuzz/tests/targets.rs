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

#[test]
fn tnef() {
    run("tnef");
}

/// The session seeds named `full-session*` get through the whole session,
/// so mutating them reaches every step.
#[test]
fn full_session_seeds_reach_the_end() {
    use mailrobot_sources::fuzzing;
    type Session = fn(&[u8], u8, u64) -> &'static str;
    let sessions: [(&str, Session, &str); 3] = [
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

/// Found by fuzzing: an IMAP response nesting parentheses a hundred
/// thousand deep overflowed the stack of the thread reading it (imap-proto
/// parses them recursively), which aborts the process. The frame guard now
/// refuses it; the session ends with an error, on a worker-sized stack.
#[test]
fn deeply_nested_imap_responses_end_the_session_not_the_process() {
    for response in ["* 1 FETCH (BODYSTRUCTURE ", "* LIST (", "* 1 FETCH (UID 1 X "] {
        let mut script = b"* OK ready\r\nA0001 OK in\r\n* CAPABILITY IMAP4rev1 MOVE\r\nA0002 OK\r\n".to_vec();
        script.extend(response.as_bytes());
        script.extend("(".repeat(100_000).as_bytes());
        script.extend(b"\r\nA0003 OK\r\n");
        let reached = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || mailrobot_sources::fuzzing::imap_session(&script, b'B', 0))
            .unwrap()
            .join()
            .unwrap();
        // Read whole, the guard meets the response while the greeting is read.
        assert!(matches!(reached, "nothing" | "login"), "{response}: {reached}");
    }
}
