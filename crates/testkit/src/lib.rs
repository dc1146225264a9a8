//! Test harness shared by integration tests and benchmarks: a real Dovecot
//! and a real SMTP sink started on free loopback ports, and generators of
//! realistic mail.

#[cfg(feature = "browser")]
pub mod browser;
pub mod dovecot;
pub mod generate;
pub mod lmtp_relay;
pub mod python;
pub mod smtp_sink;
