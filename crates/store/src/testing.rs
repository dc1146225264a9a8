//! Throwaway PostgreSQL databases for tests (this crate's, and the end-to-end
//! suite's through the testkit).
//!
//! `MAILROBOT_TEST_DATABASE_URL` names a database whose role may create
//! databases (`scripts/throwaway-postgres.sh` starts such a server; the test
//! command does it when the variable is not set). Each test gets a database
//! of its own, dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the test server.
pub const TEST_DATABASE_URL: &str = "MAILROBOT_TEST_DATABASE_URL";

/// A database made for one test; dropped with it.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A new empty database. Panics with what to do when no test server is
    /// configured: a PostgreSQL test must never pass by not running.
    pub fn create() -> Self {
        let admin_url = std::env::var(TEST_DATABASE_URL).unwrap_or_else(|_| {
            panic!(
                "{TEST_DATABASE_URL} is not set: run scripts/test.sh (it starts a throwaway PostgreSQL), \
                 or `eval \"$(scripts/throwaway-postgres.sh)\"` first"
            )
        });
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let name = format!("mrt_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        crate::pg::execute_batch(&admin_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating a database at {}: {e}", crate::redacted_url(&admin_url)));
        let mut url = url::Url::parse(&admin_url).expect("the test database URL parses");
        url.set_path(&format!("/{name}"));
        Self { url: url.to_string(), admin_url, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ =
            crate::pg::execute_batch(&self.admin_url, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// `len` bytes that look random (xorshift, always the same ones): what a
/// packed attachment — an archive, a picture — is to a compressor.
pub fn random_looking_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs each named test function on both backends: `name::sqlite` on a new
/// SQLite file, `name::postgres` on a new PostgreSQL database. The functions
/// take the store generically, e.g. `fn works<S: Store + AuthStore>(s: &S)`.
///
/// ```text
/// mailrobot_store::on_both_backends!(administrators_are_unique, sessions_expire);
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let store = $crate::SqliteStore::open(&dir.path().join("robot.db")).unwrap();
                super::$name(&store);
            }

            #[test]
            fn postgres() {
                let db = $crate::testing::TestDatabase::create();
                let store = $crate::PgStore::connect(&db.url).unwrap();
                super::$name(&store);
            }
        }
    )*};
}

/// Like [`on_both_backends!`] for tests that open one database several
/// times (two processes or nodes, or a restart): each function takes an
/// opener, `fn name<S: Store>(open: &dyn Fn() -> S)`.
#[macro_export]
macro_rules! on_both_backends_opened {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("robot.db");
                super::$name(&|| $crate::SqliteStore::open(&path).unwrap());
            }

            #[test]
            fn postgres() {
                let db = $crate::testing::TestDatabase::create();
                super::$name(&|| $crate::PgStore::connect(&db.url).unwrap());
            }
        }
    )*};
}
