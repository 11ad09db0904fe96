//! The `herald` binary: command-line parsing, logging, signals, and the development app.
//!
//! Everything it serves comes from `herald-server`; this file only turns flags, environment
//! variables and a config file into a [`herald_server::Config`] and reports errors to a human.

mod api_client;
mod bench;
mod cli;
mod jobs;
mod publish;
mod webhooks;

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Parser;
use herald_core::AppConfig;
use herald_server::config::{DEFAULT_CONFIG, EngineKind, parse_app_spec};
use herald_server::{Config, ServerConfig};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, EngineArg, LogFormat, ServeArgs};

/// Credentials of the app served when none is configured; only ever on loopback.
const DEV_APP: (&str, &str, &str) = ("1", "herald-dev-key", "herald-dev-secret");

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes; a cause is left out when the message before it already says it (our
/// error types print their source in their own message).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Publish(args) => publish::publish(args),
        Command::Bench(args) => bench::bench(args),
        Command::Jobs(args) => jobs::jobs(args),
        Command::Webhooks(args) => webhooks::webhooks(args),
        Command::CheckConfig(args) => {
            init_logging(args.log_format);
            let config = resolve(&args)?;
            herald_core::Registry::new(config.apps.clone()).context("invalid apps")?;
            println!("configuration OK: {} app(s), listening on {}", config.apps.len(), config.server.bind);
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = resolve(&args)?;
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.server.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let bind = config.server.bind;
        let listener = bind_listener(bind).await?;
        let local = listener.local_addr()?;
        tracing::info!(address = %local, apps = config.apps.len(), "Herald listening");
        let scheme = if config.server.tls_cert.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{local}");
        std::io::stdout().flush()?;
        herald_server::run(config, listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn bind_listener(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    Ok(socket.listen(4096)?)
}

/// Merges, lowest first: defaults, the config file, environment variables and flags (clap reads
/// both), then adds the development app if no app was given.
fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    apply_overrides(&mut config.server, args);
    for (index, spec) in args.apps.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()).enumerate() {
        config.apps.push(parse_app_spec(index + 1, spec)?);
    }
    if config.apps.is_empty() {
        if !config.server.bind.ip().is_loopback() {
            bail!(
                "no app configured and {} is not a loopback address: give --app ID:KEY:SECRET or [[apps]] in --config",
                config.server.bind
            );
        }
        let (id, key, secret) = DEV_APP;
        tracing::warn!(
            "no app configured: serving the DEVELOPMENT app id={id} key={key} secret={secret}; \
             its secret is public, never use it in production"
        );
        config.apps.push(AppConfig::new(id, key, secret));
    }
    config.validate()?;
    Ok(config)
}

fn apply_overrides(server: &mut ServerConfig, args: &ServeArgs) {
    if let Some(bind) = args.bind {
        server.bind = bind;
    }
    if let Some(dir) = &args.data_dir {
        server.data_dir = dir.clone();
    }
    if args.durable_history {
        server.durable_history = true;
    }
    if let Some(cert) = &args.tls_cert {
        server.tls_cert = Some(cert.clone());
    }
    if let Some(key) = &args.tls_key {
        server.tls_key = Some(key.clone());
    }
    if let Some(secs) = args.activity_timeout {
        server.activity_timeout_secs = secs;
    }
    if let Some(engine) = args.engine {
        server.engine = match engine {
            EngineArg::Memory => EngineKind::Memory,
            EngineArg::Redis => EngineKind::Redis,
        };
    }
    if let Some(url) = &args.redis_url {
        server.redis_url = url.clone();
    }
    if let Some(prefix) = &args.redis_prefix {
        server.redis_prefix = prefix.clone();
    }
    if let Some(secs) = args.node_lease_secs {
        server.node_lease_secs = secs;
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
