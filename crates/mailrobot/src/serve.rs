//! `mailrobot serve`: the polling loops and the HTTP endpoints, until SIGTERM.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::app::App;
use crate::http::{HttpLimits, HttpState, router, serve_http};
use crate::scheduler::run_forever;

pub const LOCK_FILE: &str = "serve.lock";

/// An exclusive lock on the data directory for one `serve`. It is a kernel
/// lock (flock): a killed process loses it at once, so a crash never blocks
/// the restart.
pub struct ServeLock {
    _file: File,
}

impl ServeLock {
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let file = crate::data_dir::private_file(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another `mailrobot serve` is running on {} (pid {}); stop it first, or use another --data-dir",
                data_dir.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        use std::io::Write;
        (&file).write_all(std::process::id().to_string().as_bytes())?;
        Ok(Self { _file: file })
    }
}

/// Runs until SIGTERM or Ctrl-C; returns within seconds of either.
pub async fn serve(app: &App, listen: SocketAddr, public_url: Option<String>) -> anyhow::Result<()> {
    let limits = HttpLimits::from_env().map_err(anyhow::Error::msg)?;
    let _lock = ServeLock::acquire(&app.data_dir)?;
    raise_open_files_limit();
    let metrics = crate::metrics::install()?;
    let mut pipeline = app.pipeline()?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; is another program using that port? choose one with --listen")
    })?;
    let local = listener.local_addr()?;
    // Recorded so `connection authorize` builds redirect URIs that reach us.
    let public_url =
        public_url.map(|u| u.trim_end_matches('/').to_string()).unwrap_or_else(|| format!("http://{local}"));
    app.store.set_setting(crate::commands_auth::SETTING_PUBLIC_URL, &public_url)?;
    tracing::info!(address = %local, data_dir = %app.data_dir.display(), "mailrobot serving");
    println!("mailrobot serving on http://{local} (public URL {public_url}, data dir {})", app.data_dir.display());

    let (stop_tx, stop_rx) = watch::channel(false);
    let state = HttpState::new(app.store.clone(), metrics, app.broker()?, limits);
    let web = crate::web::state(app, &public_url)?;
    // Graph posts change notifications under the public URL.
    let unreachable = crate::graph_push::unreachable_reason(&public_url);
    if let (true, Some(reason)) = (crate::graph_push::enabled()?, &unreachable) {
        tracing::warn!("{reason}");
    }
    if crate::graph_push::enabled()? && unreachable.is_none() {
        let push =
            crate::graph_push::GraphPush::new(&public_url, app.store.clone(), app.leases.clone(), app.secrets.clone())?;
        pipeline.graph_push = Some(Arc::new(push));
    }
    let app_router = router(state, Some(web), pipeline.graph_push.clone());
    let http = tokio::spawn(serve_http(listener, app_router, limits, stop_rx.clone()));
    let webhooks = mailrobot_outbox::Engine::new(
        app.store.clone(),
        app.outbox.clone(),
        app.secrets.clone(),
        crate::outbound::engine_config(&public_url, app.tag_format()?),
    )?
    .with_mail(crate::outbound::RobotMail::transport(app));
    let delivering = spawn_outbox(webhooks, stop_rx.clone())?;
    let leases = app.leases.clone();
    let node = Arc::new(tokio::task::spawn_blocking(move || crate::node::Node::start(leases)).await??);
    let heartbeat = tokio::spawn(node.clone().heartbeat(stop_rx.clone()));
    let polling = tokio::spawn(run_forever(pipeline, node, stop_rx));

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Polls stop at once (their work is committed or repeatable); give
    // in-flight HTTP answers a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = polling.await;
        let _ = heartbeat.await;
        let _ = tokio::task::spawn_blocking(move || delivering.join()).await;
        let _ = http.await;
    })
    .await;
    Ok(())
}

/// The outbox (webhook deliveries and mail) on a thread of its own: its
/// store calls block that thread only, never the polls' runtime. (Not at a
/// lower CPU priority: it takes the store's write lock, and a thread
/// descheduled while holding it would hold ingestion up.)
fn spawn_outbox(
    engine: mailrobot_outbox::Engine,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(std::thread::Builder::new().name("outbox".into()).spawn(move || {
        runtime.block_on(engine.run(stop));
    })?)
}

/// Raises this process's soft limit on open files to its hard limit: a node
/// keeps a connection per IMAP mailbox that offers IDLE, besides its polls
/// (the usual soft limit of 1,024 would stop it near a thousand mailboxes).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    tracing::debug!(open_files = limit.rlim_cur, "open files limit");
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
