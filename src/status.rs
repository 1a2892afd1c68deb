//! `sallyport status`: the certificates under SALLYPORT_HOME and their remaining time.

use std::time::Duration;

use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let home = crate::login::home();
    let mut certs: Vec<Value> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&home) {
        let mut paths: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with("-cert.pub") {
                continue;
            }
            let Ok(cert) = russh::keys::Certificate::read_file(&path) else {
                continue;
            };
            let now = now_secs();
            let left = cert.valid_before().saturating_sub(now);
            certs.push(json!({
                "file": path,
                "key_id": cert.key_id(),
                "serial": cert.serial().to_string(),
                "principals": cert.valid_principals(),
                "valid_after": cert.valid_after(),
                "valid_before": cert.valid_before(),
                "remaining_secs": left,
                "expired": left == 0,
            }));
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"home": home, "certificates": certs}))?
        );
        return Ok(());
    }
    if certs.is_empty() {
        println!(
            "no certificates in {}: run `sallyport login --ticket <ticket>`",
            home.display()
        );
        return Ok(());
    }
    for c in &certs {
        let left = c["remaining_secs"].as_u64().unwrap_or(0);
        let state = if left == 0 {
            "expired".to_string()
        } else {
            format!(
                "{} left",
                humantime::format_duration(Duration::from_secs(left))
            )
        };
        println!("{}  {}", c["key_id"].as_str().unwrap_or("?"), state);
        println!(
            "    principals {}",
            c["principals"]
                .as_array()
                .map(|p| p
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
    }
    Ok(())
}
