//! Full-text search latency over a large audit log: seeds N events (default 1,000,000) into a
//! fresh store, then times searches through `Store::audit_search` (what `GET /v1/audit/events`
//! runs) and prints p50/p99 per query. Measures, asserts nothing. Run by `bench/audit_search.sh`.
//!
//!   audit_search_bench STORE_URL [EVENTS]
//!
//! STORE_URL: `sqlite://FILE` (a new file) or `postgres://...` (an empty database).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use sallyport_audit::AuditRecord;
use sallyport_broker::store::{AuditQuery, Store};
use sallyport_ca::clock::now_ms;
use serde_json::json;

const VOCABULARY: [&str; 24] = [
    "ls -la /var/log",
    "cd /srv/app",
    "tail -n 200 /var/log/syslog",
    "sudo systemctl status nginx",
    "df -h",
    "cat /etc/hosts",
    "grep -i error app.log",
    "ps aux | grep java",
    "kubectl get pods -n payments",
    "journalctl -u postgresql --since today",
    "free -m",
    "uptime",
    "vim /etc/nginx/nginx.conf",
    "docker ps -a",
    "top -b -n 1",
    "netstat -tlnp",
    "sudo -i",
    "history | tail",
    "du -sh /var/lib/docker",
    "curl -s localhost:8080/health",
    "git log --oneline -5",
    "mysql -u app -p orders",
    "less /var/log/auth.log",
    "exit",
];

const SOURCES: usize = 4;
const PER_SESSION: usize = 100;

fn events(n: usize, start_ms: u64) -> Vec<Vec<AuditRecord>> {
    let engineers = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let mut chains: Vec<Vec<AuditRecord>> = vec![Vec::new(); SOURCES];
    let sessions = n / PER_SESSION;
    for s in 0..sessions {
        let src = s % SOURCES;
        let subject = json!({"engineer": engineers[s % engineers.len()],
            "ticket": format!("T-{}", s % 500), "cluster": format!("c{}", s % 20),
            "node": format!("n{}", s % 200), "session": format!("s{s:07}")});
        for i in 0..PER_SESSION {
            let text = if s == sessions / 3 && i == 50 {
                "echo zqxj-needle-7f3a > /tmp/marker".to_string()
            } else {
                VOCABULARY[(s * 7 + i * 13) % VOCABULARY.len()].to_string()
            };
            let (kind, extra) = match i % 5 {
                0 | 1 => ("command", json!({"command": text, "via": "interactive"})),
                2 => ("line_entered", json!({"line": i, "shown": text})),
                3 => (
                    "file_op",
                    json!({"via": "sftp", "op": {"op": "open", "path": format!("/srv/data/s{s}/f{i}.csv")}}),
                ),
                _ => ("channel_exit", json!({"exit_status": 0})),
            };
            let mut data = subject.clone();
            for (k, v) in extra.as_object().unwrap() {
                data[k] = v.clone();
            }
            let chain = &mut chains[src];
            let prev = chain.last().map(|r| (r.seq, r.hash.as_str()));
            let time = start_ms + (s * PER_SESSION + i) as u64;
            let r = AuditRecord::next(&format!("gateway:bench{src}"), prev, time, kind, data);
            chain.push(r);
        }
    }
    chains
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: audit_search_bench STORE_URL [EVENTS]"))?;
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let store = Store::connect(&url).await?;
    let engine = if store.is_sqlite {
        "SQLite"
    } else {
        "PostgreSQL"
    };

    let t = Instant::now();
    let chains = events(n, now_ms() - 30 * 86_400_000);
    let total: usize = chains.iter().map(Vec::len).sum();
    let mut done = 0;
    for chain in &chains {
        for batch in chain.chunks(10_000) {
            store.import(batch).await?;
            done += batch.len();
        }
    }
    println!(
        "{engine}: seeded {done} of {total} events in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Statistics as a store in use has them (PostgreSQL's autovacuum, SQLite's `PRAGMA
    // optimize`): without them the planners' choices depend on when the bench happens to run.
    sqlx::query("ANALYZE").execute(&store.pool).await?;

    let q = |text: &str, f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: Some(50),
            ..Default::default()
        };
        if !text.is_empty() {
            q.q = Some(text.to_string());
        }
        f(&mut q);
        q
    };
    let cases: Vec<(&str, AuditQuery)> = vec![
        ("rare word (1 event)", q("zqxj-needle", &|_| {})),
        ("common word (systemctl)", q("systemctl", &|_| {})),
        ("fragment (temctl sta)", q("temctl sta", &|_| {})),
        ("short word (df)", q("df", &|_| {})),
        (
            "common word + engineer",
            q("nginx", &|q| q.engineer = Some("bob".into())),
        ),
        (
            "rare word + ticket",
            q("zqxj", &|q| q.ticket = Some("T-7".into())),
        ),
        (
            "filter only (engineer)",
            q("", &|q| q.engineer = Some("bob".into())),
        ),
        (
            "filter only, newest first",
            q("", &|q| {
                q.engineer = Some("bob".into());
                q.before = Some(format!("{}:~:0", u64::MAX / 2));
            }),
        ),
    ];
    println!(
        "{:<28} {:>9} {:>9} {:>8}   (page of 50, {} runs each)",
        "query", "p50 ms", "p99 ms", "hits", 40
    );
    for (name, query) in cases {
        let mut times = Vec::new();
        let mut hits = 0;
        for run in 0..43 {
            let t = Instant::now();
            let r = store.audit_search(&query).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if run >= 3 {
                times.push(ms);
            }
            hits = r.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<28} {:>9.1} {:>9.1} {hits:>8}",
            pct(&times, 0.5),
            pct(&times, 0.99)
        );
    }
    Ok(())
}
