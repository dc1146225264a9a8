//! A small fuzzer without coverage feedback, for the stable toolchain and
//! for CI: every corpus file first, then inputs mutated from the corpus
//! (bit flips, protocol words, cuts, repeats, splices) until the time budget
//! is spent, and now and then a large input (a piece of a seed repeated to
//! megabytes, numbered so the copies differ) to catch work that grows
//! faster than the input.
//!
//! Each input is watched: a panic, an input that runs past its time bound
//! (a hang, or superlinear work) or one that holds more memory than its
//! bound fails the run; the input is written to the findings folder and
//! named in the failure, ready to be added to the corpus.
//!
//! Settings come from the environment: `MAILROBOT_FUZZ_SECS` (the budget
//! per target after the corpus, default 3), `MAILROBOT_FUZZ_SEED`
//! (default 1: CI runs the same inputs each time), `MAILROBOT_FUZZ_FINDINGS`
//! (where found inputs go), `MAILROBOT_FUZZ_TRACE=1` (each input is
//! written to `<findings>/<target>/last-input` before it runs: for what
//! kills the process, such as a stack overflow).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Target, alloc};

/// Time any one input may take, beyond its size-based share.
const BASE_TIME: Duration = Duration::from_secs(10);
/// Bytes per second every target manages at least (unoptimised test
/// builds included): an input gets `size / RATE` on top of [`BASE_TIME`].
const RATE: u64 = 64 << 10;
/// Memory one input may hold: this much plus [`MEMORY_PER_BYTE`] per byte.
const BASE_MEMORY: isize = 64 << 20;
// A JSON tree (serde_json::Value) of small objects alone costs 60 to 100
// bytes per byte of JSON.
const MEMORY_PER_BYTE: isize = 128;

/// What the fuzzer did for one target.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub target: &'static str,
    pub corpus_files: usize,
    pub inputs: u64,
    pub large_inputs: u64,
    pub elapsed: Duration,
    pub slowest: Duration,
    pub slowest_len: usize,
    /// The most memory one input held, and its size.
    pub peak_memory: isize,
    pub peak_memory_len: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} corpus files, {} inputs ({} large) in {:.1} s; slowest {} ms ({} bytes); \
             most memory {} KiB ({} bytes in)",
            self.target,
            self.corpus_files,
            self.inputs,
            self.large_inputs,
            self.elapsed.as_secs_f64(),
            self.slowest.as_millis(),
            self.slowest_len,
            self.peak_memory / 1024,
            self.peak_memory_len
        )
    }
}

/// How long the fuzzer runs after the corpus, and with which seed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub budget: Duration,
    pub seed: u64,
    pub findings: PathBuf,
    pub trace: bool,
}

impl Settings {
    /// From `MAILROBOT_FUZZ_SECS`, `MAILROBOT_FUZZ_SEED` and
    /// `MAILROBOT_FUZZ_FINDINGS`, with `findings` as the default folder.
    pub fn from_env(findings: &Path) -> Self {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().parse::<f64>().unwrap_or_else(|_| panic!("{name}={v:?}: not a number")))
        };
        let budget = Duration::from_secs_f64(number("MAILROBOT_FUZZ_SECS").unwrap_or(3.0).max(0.0));
        let seed = number("MAILROBOT_FUZZ_SEED").map_or(1, |s| s as u64);
        let findings = std::env::var_os("MAILROBOT_FUZZ_FINDINGS").map(PathBuf::from).unwrap_or(findings.to_path_buf());
        let trace = std::env::var("MAILROBOT_FUZZ_TRACE").is_ok_and(|v| v == "1");
        Self { budget, seed, findings, trace }
    }
}

/// The workspace root (where `tests/fixtures` is).
pub fn workspace_root() -> PathBuf {
    manifest_dir().join("../..")
}

/// The committed corpus folder of a target.
pub fn corpus_dir(target: &Target) -> PathBuf {
    manifest_dir().join("corpus").join(target.name)
}

/// Every corpus file of a target, with its name, sorted.
pub fn corpus(target: &Target) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, only_eml: bool, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, only_eml, out);
            } else if if only_eml {
                name.ends_with(".eml")
            } else {
                !name.starts_with("README") && !name.starts_with('.')
            } {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&corpus_dir(target), false, &mut paths);
    for dir in target.seed_dirs {
        walk(&workspace_root().join(dir), true, &mut paths);
    }
    paths.sort();
    let root = workspace_root();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let name = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            (name, bytes)
        })
        .collect()
}

/// SplitMix64: small, fast, and the same sequence for the same seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING_BYTES: &[u8] = b"\0\xff\x7f\x80\r\n \t{}\"<>:=;,.-+\\[]()*%&";
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "255",
    "65535",
    "65536",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
];

/// One random change to `input`; `others` are the corpus to splice from.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>], dictionary: &[&[u8]]) {
    let len = input.len();
    match rng.below(13) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
        }
        2 => {
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(1 + len / 4));
            input.drain(at..at + n);
        }
        4 if len > 0 => {
            // Repeat a piece, a few times or many.
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let piece = input[at..at + n].to_vec();
            let times = if rng.chance(8) { 1 + rng.below(64) } else { 1 + rng.below(3) };
            let insert_at = rng.below(len + 1);
            input.splice(insert_at..insert_at, piece.repeat(times));
        }
        5 if !others.is_empty() => {
            let other = &others[rng.below(others.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        6 | 7 if !dictionary.is_empty() => {
            let word = dictionary[rng.below(dictionary.len())];
            // At a line start half the time: where protocol words live.
            let at = if rng.chance(2) {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain(input.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1))
                    .collect();
                starts[rng.below(starts.len())]
            } else {
                rng.below(len + 1)
            };
            if rng.chance(3) && at < len {
                let end = (at + word.len()).min(len);
                input.splice(at..end, word.iter().copied());
            } else {
                input.splice(at..at, word.iter().copied());
            }
        }
        8 => {
            // A number becomes an edge case.
            let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let start = digits[rng.below(digits.len())];
                let end = (start..len).find(|&i| !input[i].is_ascii_digit()).unwrap_or(len);
                let number = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                input.splice(start..end, number.bytes());
            }
        }
        9 if len > 0 => input.truncate(rng.below(len)),
        10 => {
            // Line endings: CRLF to LF or LF to CRLF.
            let text = std::mem::take(input);
            let mut out = Vec::with_capacity(text.len() + text.len() / 16);
            let to_lf = rng.chance(2);
            for (i, &b) in text.iter().enumerate() {
                if to_lf && b == b'\r' && text.get(i + 1) == Some(&b'\n') {
                    continue;
                }
                if !to_lf && b == b'\n' && (i == 0 || text[i - 1] != b'\r') {
                    out.push(b'\r');
                }
                out.push(b);
            }
            *input = out;
        }
        11 if len > 1 => {
            let from = rng.below(len);
            let to = rng.below(len);
            let n = 1 + rng.below((len - from.max(to)).min(64));
            let piece = input[from..from + n].to_vec();
            input[to..to + n].copy_from_slice(&piece);
        }
        12 if len > 0 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(32)).min(len);
            for b in &mut input[at..end] {
                if b.is_ascii_alphabetic() {
                    *b ^= 0x20;
                }
            }
        }
        _ => {
            let at = rng.below(len + 1);
            input.insert(at, rng.next_u64() as u8);
        }
    }
}

/// A large input: a piece of `seed` repeated until the input is about
/// `size` bytes, the first number in each copy replaced by the copy's
/// index so that ids and names differ.
pub fn large(rng: &mut Rng, seed: &[u8], size: usize) -> Vec<u8> {
    if seed.is_empty() {
        return vec![b'a'; size];
    }
    let at = rng.below(seed.len());
    let n = 1 + rng.below((seed.len() - at).min(512));
    let piece = &seed[at..at + n];
    let number = piece.iter().position(u8::is_ascii_digit).map(|start| {
        let end = piece[start..].iter().position(|b| !b.is_ascii_digit()).map_or(piece.len(), |i| start + i);
        (start, end)
    });
    let mut out = Vec::with_capacity(size + seed.len() + 32);
    out.extend_from_slice(&seed[..at]);
    let mut copy = 0u64;
    while out.len() < size {
        match number {
            Some((start, end)) => {
                out.extend_from_slice(&piece[..start]);
                out.extend_from_slice(copy.to_string().as_bytes());
                out.extend_from_slice(&piece[end..]);
            }
            None => out.extend_from_slice(piece),
        }
        copy += 1;
    }
    out.extend_from_slice(&seed[at + n..]);
    out
}

/// What went wrong with one input.
#[derive(Debug)]
pub struct Finding {
    pub kind: &'static str,
    pub message: String,
    pub input: Vec<u8>,
    pub saved: Option<PathBuf>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: String =
            self.input.iter().take(200).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
        write!(f, "{}: {} ({} bytes", self.kind, self.message, self.input.len())?;
        if let Some(path) = &self.saved {
            write!(f, ", saved as {}", path.display())?;
        }
        write!(f, "): \"{head}\"")?;
        if self.input.len() > 200 {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// The time an input of `len` bytes may take.
pub fn time_bound(len: usize) -> Duration {
    BASE_TIME + Duration::from_secs_f64(len as f64 / RATE as f64)
}

fn save(findings: &Path, target: &str, kind: &str, input: &[u8]) -> Option<PathBuf> {
    use sha2::Digest;
    let dir = findings.join(target);
    std::fs::create_dir_all(&dir).ok()?;
    let name = format!("{kind}-{}", &hex::encode(sha2::Sha256::digest(input))[..16]);
    let path = dir.join(name);
    std::fs::write(&path, input).ok()?;
    Some(path)
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// What the watchdog sees of the input being run.
struct Running {
    input: Mutex<Option<(Instant, Vec<u8>)>>,
    stop: AtomicBool,
}

/// Runs a target's corpus, then mutated and large inputs for the budget.
/// Returns the report, or the first finding (already saved).
pub fn fuzz(target: &'static Target, settings: &Settings) -> Result<Report, Finding> {
    let corpus = corpus(target);
    let running = Arc::new(Running { input: Mutex::new(None), stop: AtomicBool::new(false) });
    let worker = {
        let running = running.clone();
        let settings = settings.clone();
        std::thread::Builder::new()
            .name(format!("fuzz-{}", target.name))
            // The main thread's size: deep recursion that would overflow a
            // worker thread in a release build shows here too.
            .stack_size(8 << 20)
            .spawn(move || work(target, corpus, &settings, &running))
            .expect("a fuzzing thread")
    };
    // The watchdog: an input that runs past its bound is a finding, even if
    // it never returns (the thread is left behind; the test process ends).
    loop {
        if worker.is_finished() {
            return match worker.join() {
                Ok(result) => result,
                Err(payload) => panic!("the fuzzer itself failed: {}", panic_text(payload.as_ref())),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
        let stuck = {
            let current = running.input.lock().unwrap_or_else(|p| p.into_inner());
            current
                .as_ref()
                .filter(|(started, input)| started.elapsed() > time_bound(input.len()))
                .map(|(started, input)| (started.elapsed(), input.clone()))
        };
        if let Some((elapsed, input)) = stuck {
            running.stop.store(true, Ordering::Relaxed);
            let saved = save(&settings.findings, target.name, "hang", &input);
            return Err(Finding {
                kind: "hang",
                message: format!(
                    "still running after {:.1} s (bound {:.1} s)",
                    elapsed.as_secs_f64(),
                    time_bound(input.len()).as_secs_f64()
                ),
                input,
                saved,
            });
        }
    }
}

fn work(
    target: &'static Target,
    corpus: Vec<(String, Vec<u8>)>,
    settings: &Settings,
    running: &Running,
) -> Result<Report, Finding> {
    let start = Instant::now();
    let mut report = Report { target: target.name, corpus_files: corpus.len(), ..Report::default() };
    let trace = settings.trace.then(|| {
        let dir = settings.findings.join(target.name);
        let _ = std::fs::create_dir_all(&dir);
        dir.join("last-input")
    });
    let run_one = |input: &[u8], report: &mut Report| -> Result<(), Finding> {
        if let Some(path) = &trace {
            let _ = std::fs::write(path, input);
        }
        *running.input.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), input.to_vec()));
        let base = alloc::reset_peak();
        let began = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
        let took = began.elapsed();
        let held = alloc::peak() - base;
        *running.input.lock().unwrap_or_else(|p| p.into_inner()) = None;
        report.inputs += 1;
        if took > report.slowest {
            report.slowest = took;
            report.slowest_len = input.len();
        }
        if held > report.peak_memory {
            report.peak_memory = held;
            report.peak_memory_len = input.len();
        }
        let finding = |kind: &'static str, message: String| {
            let saved = save(&settings.findings, target.name, kind, input);
            Finding { kind, message, input: input.to_vec(), saved }
        };
        if let Err(payload) = result {
            return Err(finding("crash", panic_text(payload.as_ref())));
        }
        if took > time_bound(input.len()) {
            return Err(finding(
                "slow",
                format!("took {:.1} s (bound {:.1} s)", took.as_secs_f64(), time_bound(input.len()).as_secs_f64()),
            ));
        }
        let memory_bound = BASE_MEMORY + MEMORY_PER_BYTE * input.len() as isize;
        if held > memory_bound {
            return Err(finding("memory", format!("held {} KiB (bound {} KiB)", held / 1024, memory_bound / 1024)));
        }
        Ok(())
    };

    for (name, input) in &corpus {
        run_one(input, &mut report).map_err(|mut f| {
            f.message = format!("corpus file {name}: {}", f.message);
            f
        })?;
    }
    let seeds: Vec<Vec<u8>> = corpus.into_iter().map(|(_, bytes)| bytes).filter(|b| !b.is_empty()).collect();
    if seeds.is_empty() {
        report.elapsed = start.elapsed();
        return Ok(report);
    }
    let mut rng =
        Rng::new(settings.seed ^ target.name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    // Recent mutants, mutated further: depth without coverage feedback.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let fuzz_start = Instant::now();
    let mut i: u64 = 0;
    while fuzz_start.elapsed() < settings.budget && !running.stop.load(Ordering::Relaxed) {
        i += 1;
        let input = if i % 1000 == 1 {
            // About 256 KiB to 2 MiB: big enough that quadratic work shows.
            report.large_inputs += 1;
            let seed = &seeds[rng.below(seeds.len())];
            let size = (256 << 10) << rng.below(4);
            large(&mut rng, seed, size)
        } else {
            let mut input = if !pool.is_empty() && rng.chance(2) {
                pool[rng.below(pool.len())].clone()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            let most = if rng.chance(4) { 16 } else { 4 };
            for _ in 0..1 + rng.below(most) {
                mutate(&mut rng, &mut input, &seeds, target.dictionary);
            }
            input.truncate(target.max_len);
            input
        };
        run_one(&input, &mut report)?;
        if input.len() <= target.max_len {
            if pool.len() < 256 {
                pool.push(input);
            } else {
                let at = rng.below(pool.len());
                pool[at] = input;
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// This package's directory, asked of cargo at run time (a test binary
/// built in another checkout that shares the target directory must read
/// this checkout's files); the build's own when run outside cargo.
fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}
