//! How fast `mailrobot_core::parse` reads the benchmark corpus, alone.
use mailrobot_testkit::generate::{GenOptions, generate_corpus};
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mails: Vec<Vec<u8>> = generate_corpus(n, 1, &GenOptions::default()).collect();
    let started = std::time::Instant::now();
    let mut attachments = 0;
    for raw in &mails {
        attachments += mailrobot_core::parse(raw).unwrap().attachments.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{n} mails parsed in {secs:.3} s: {:.0} mails/s ({attachments} attachments)", n as f64 / secs);
}
