//! The mailrobot application: configuration, the mail pipeline, the polling
//! scheduler, the HTTP endpoints, the CLI commands and the demo.

pub mod app;
pub mod cli;
pub mod commands;
pub mod commands_auth;
pub mod commands_migrate;
pub mod commands_rules;
pub mod commands_secrets;
pub mod commands_smtp;
pub mod commands_webhooks;
pub mod crash;
pub mod data_dir;
pub mod demo;
pub mod demo_m365;
pub mod graph_push;
pub mod http;
pub mod mail_in_memory;
pub mod mailbox_config;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod pipeline;
pub mod scheduler;
pub mod serve;
pub mod term;
pub mod web;
