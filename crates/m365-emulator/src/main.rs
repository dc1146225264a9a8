//! `m365-emulator --listen 127.0.0.1:PORT [--tls-cert PEM --tls-key PEM] [--config FILE.json]
//! [--ews-auth Basic,NTLM]`

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use m365_emulator::{Emulator, EmulatorConfig, EwsAuthScheme, EwsAuthSpec, Setup, TlsSetup};

/// A local stand-in for the Microsoft identity platform v2.0, for tests, benchmarks and demos.
#[derive(Debug, Parser)]
#[command(name = "m365-emulator", version)]
struct Args {
    /// Address to listen on (port 0 = any free port; the chosen URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Server certificate chain, PEM (HTTPS; needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key, PEM.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a generated CA and certificate; the CA is written to this file.
    #[arg(long, conflicts_with = "tls_cert")]
    self_signed_ca_out: Option<PathBuf>,
    /// Tenants, apps, users and consents to start with (JSON; see the README).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base URL clients use, when it differs from the listen address (e.g. behind a proxy).
    #[arg(long)]
    public_url: Option<String>,
    /// RS256 signing key (PKCS#8 PEM); default: generated at start.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Authentication schemes EWS accepts, comma-separated: Bearer (Exchange Online, default),
    /// Basic, NTLM (Exchange Server on-premises). Overrides `ews_auth` of the config file.
    #[arg(long, value_delimiter = ',')]
    ews_auth: Vec<EwsAuthScheme>,
}

fn read(p: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("M365_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut setup: Setup = match &args.config {
        Some(p) => serde_json::from_str(&read(p)?).with_context(|| format!("parsing {}", p.display()))?,
        None => Setup::default(),
    };
    if !args.ews_auth.is_empty() {
        setup.ews_auth = Some(EwsAuthSpec::new(&args.ews_auth));
    }
    let mut ca_out = None;
    let tls = match (&args.tls_cert, &args.tls_key, &args.self_signed_ca_out) {
        (Some(c), Some(k), _) => Some(TlsSetup::Pem { cert_chain_pem: read(c)?, key_pem: read(k)? }),
        (None, None, Some(out)) => {
            ca_out = Some(out.clone());
            Some(TlsSetup::SelfSigned)
        }
        (None, None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let signing_key_pem = args.signing_key.as_ref().map(read).transpose()?;
    let emu = Emulator::start(EmulatorConfig {
        listen: args.listen,
        public_url: args.public_url,
        tls,
        setup,
        signing_key_pem,
    })?;
    if let (Some(out), Some(ca)) = (ca_out, emu.ca_pem()) {
        std::fs::write(&out, ca).with_context(|| format!("writing {}", out.display()))?;
    }
    // Scripts read this line to learn the port when --listen used port 0.
    println!("m365-emulator listening on {}", emu.base_url());
    std::io::stdout().flush()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    emu.shutdown();
    Ok(())
}
