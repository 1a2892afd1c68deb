//! `sallyport admin check`: read a broker, edge or gateway config and say what is wrong with it
//! before anything starts — the same checks each process makes at start, touching no state (no
//! data directory, key, database or network connection is made).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Broker,
    Edge,
    Gateway,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Broker => "broker",
            Kind::Edge => "edge",
            Kind::Gateway => "gateway",
        }
    }

    /// Which process a config is for, from the keys only one of them has.
    fn infer(text: &str) -> Option<Kind> {
        let table: toml::Table = toml::from_str(text).ok()?;
        if table.contains_key("tunnel_listen") {
            Some(Kind::Edge)
        } else if table.contains_key("edges") || table.contains_key("join_token") {
            Some(Kind::Gateway)
        } else if table.contains_key("operator_token_sha256") || table.contains_key("listen") {
            Some(Kind::Broker)
        } else {
            None
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The config file to check.
    #[arg(long)]
    pub config: PathBuf,
    /// Which process the config is for (default: told by its keys).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// One JSON object: {config, kind, ok, problems}.
    #[arg(long)]
    pub json: bool,
}

/// The problems of the config at `path` for `kind` (empty: it would start).
pub fn problems(path: &Path, kind: Kind) -> Vec<String> {
    let loaded = match kind {
        Kind::Broker => sallyport_broker::BrokerConfig::load(path).map(|c| c.preflight()),
        Kind::Edge => {
            sallyport_bastion::config::load::<sallyport_bastion::config::EdgeConfig>(path)
                .map(|c| c.preflight())
        }
        Kind::Gateway => {
            sallyport_bastion::config::load::<sallyport_bastion::config::GatewayConfig>(path)
                .map(|c| c.preflight())
        }
    };
    loaded.unwrap_or_else(|e| vec![format!("{e:#}")])
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let kind = match args.kind.or_else(|| Kind::infer(&text)) {
        Some(k) => k,
        None => anyhow::bail!(
            "cannot tell whether {} is a broker, edge or gateway config: name it with --kind",
            args.config.display()
        ),
    };
    let problems = problems(&args.config, kind);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "config": args.config,
                "kind": kind.name(),
                "ok": problems.is_empty(),
                "problems": problems,
            }))?
        );
    } else if problems.is_empty() {
        println!(
            "ok: {} is a usable {} config",
            args.config.display(),
            kind.name()
        );
    } else {
        println!(
            "{} ({} config): {} problem{}",
            args.config.display(),
            kind.name(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in &problems {
            println!("  - {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} is not usable: mend what is listed above, then check again",
            args.config.display()
        ))
    }
}
