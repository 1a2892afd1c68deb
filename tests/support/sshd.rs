//! A real OpenSSH `sshd` playing a cluster node, for end-to-end tests.
//!
//! [`SshdNode::start`] runs `/usr/sbin/sshd -D` on 127.0.0.1 (a free port) in a
//! temporary directory, trusting one user CA and letting one local account log in
//! with certificates that carry one of the given principals. Needs root (sshd,
//! `useradd`); `tests/infra/run-tests.sh` runs the tests as root on a machine set
//! up by `tests/infra/install.sh`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
const READY: &str = "Server listening on";
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Serializes account creation between the tests of one binary (`useradd` locks
/// /etc/passwd and fails when another `useradd` holds the lock).
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A running `sshd`. Dropping it stops the daemon (sessions already open may
/// outlive it, as with a real sshd) and removes its directory.
pub struct SshdNode {
    child: Child,
    port: u16,
    login: String,
    host_public_key: String,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl SshdNode {
    /// Starts an sshd on 127.0.0.1 that trusts `trusted_user_ca_pubkey_line` (an
    /// OpenSSH public key line, as in `ca.pub`) as user CA and admits the local
    /// account `login` (created if missing) for certificates naming one of
    /// `principals`. Panics, with sshd's log, if it does not come up.
    pub fn start(trusted_user_ca_pubkey_line: &str, login: &str, principals: &[&str]) -> SshdNode {
        Self::start_with(trusted_user_ca_pubkey_line, login, principals, "")
    }

    /// [`SshdNode::start`] with `extra` sshd_config lines (e.g. `MaxStartups` for a bench).
    pub fn start_with(
        trusted_user_ca_pubkey_line: &str,
        login: &str,
        principals: &[&str],
        extra: &str,
    ) -> SshdNode {
        ensure_account(login);
        // privilege-separation directory (normally made by systemd-tmpfiles)
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let dir = tempfile::Builder::new()
            .prefix("sallyport-sshd.")
            .tempdir()
            .expect("create temp dir for sshd");
        // sshd reads the principals file as the login user: let it traverse the dir.
        set_mode(dir.path(), 0o755);

        let host_key = dir.path().join("host_ed25519");
        let out = ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "sallyport-test-node",
            "-f",
            path_str(&host_key),
        ]);
        assert!(
            out.status.success(),
            "ssh-keygen (host key) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host_public_key = fs::read_to_string(dir.path().join("host_ed25519.pub"))
            .expect("read host public key")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");

        let ca_path = dir.path().join("user_ca.pub");
        write_file(
            &ca_path,
            &format!("{}\n", trusted_user_ca_pubkey_line.trim()),
            0o644,
        );
        let principals_dir = dir.path().join("principals");
        fs::create_dir(&principals_dir).expect("create principals dir");
        set_mode(&principals_dir, 0o755);
        let mut list = principals.join("\n");
        list.push('\n');
        write_file(&principals_dir.join(login), &list, 0o644);

        let log_path = dir.path().join("sshd.log");
        let config_path = dir.path().join("sshd_config");

        // The port is picked by binding port 0 and releasing it; another process
        // may take it in between, so retry on "Address already in use".
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let config = format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 TrustedUserCAKeys {ca}\n\
                 AuthorizedPrincipalsFile {principals}/%u\n\
                 AuthorizedKeysFile none\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 LogLevel VERBOSE\n\
                 PrintMotd no\n\
                 Subsystem sftp internal-sftp\n{extra}",
                host_key = host_key.display(),
                pid = dir.path().join("sshd.pid").display(),
                ca = ca_path.display(),
                principals = principals_dir.display(),
            );
            write_file(&config_path, &config, 0o644);

            let log = File::create(&log_path).expect("create sshd.log");
            let log_err = log.try_clone().expect("clone sshd.log handle");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f", path_str(&config_path)])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {SSHD} (run tests/infra/install.sh): {e}"));

            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                if text.contains(READY) {
                    return SshdNode {
                        child,
                        port,
                        login: login.to_owned(),
                        host_public_key,
                        log_path,
                        dir,
                    };
                }
                if let Ok(Some(_status)) = child.try_wait() {
                    last_log = fs::read_to_string(&log_path).unwrap_or_default();
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshd did not log {READY:?} within {START_TIMEOUT:?}; log:\n{}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                sleep(Duration::from_millis(20));
            }
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("sshd exited during start-up; log:\n{last_log}");
    }

    /// The TCP port sshd listens on (address 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The local account certificates log in as.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The node's host public key, `ssh-ed25519 AAAA…` (no comment).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// A `known_hosts` line for this node: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public_key)
    }

    /// sshd's log so far (LogLevel VERBOSE: accepted keys with certificate key
    /// IDs and serials, refusals with reasons, subsystem requests).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (sshd logs asynchronously, e.g. the
    /// end of a session after the client has already returned). Returns whether
    /// it appeared within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The node's temporary directory (config, host key, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SshdNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ssh-keygen` with `args` and returns its output (it is not checked).
/// Panics only if `ssh-keygen` cannot be run at all.
pub fn ssh_keygen(args: &[&str]) -> Output {
    Command::new("ssh-keygen")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (install openssh-client): {e}"))
}

/// Test servers take ports from this range, below Linux's ephemeral range
/// (32768–60999), so an outgoing connection of any process never takes a port a
/// test picked a moment before and is about to listen on.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

/// A TCP port on 127.0.0.1 for a test server to listen on: free now, and handed
/// out to no other test of any test binary in this run (a counter in a locked
/// file shared by all test processes walks through [`TEST_PORTS`]).
pub fn free_port() -> u16 {
    let path = std::env::temp_dir().join("sallyport-test-ports");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock().expect("lock the test port counter");
    let mut text = String::new();
    io::Read::read_to_string(&mut &file, &mut text).expect("read the test port counter");
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let mut next: u16 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| TEST_PORTS.contains(p))
        .unwrap_or(TEST_PORTS.start + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let port = next;
        next = if port + 1 >= TEST_PORTS.end {
            TEST_PORTS.start
        } else {
            port + 1
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            let mut f = &file;
            io::Seek::seek(&mut f, io::SeekFrom::Start(0)).expect("seek the test port counter");
            file.set_len(0).expect("truncate the test port counter");
            f.write_all(next.to_string().as_bytes())
                .expect("write the test port counter");
            file.unlock().expect("unlock the test port counter");
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?} on 127.0.0.1");
}

/// Creates the local account `login` if it does not exist (home directory, bash,
/// password `*`: no password login, but not "locked", which `UsePAM no` refuses).
fn ensure_account(login: &str) {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..50 {
        if account_exists(login) {
            unlock_if_locked(login);
            return;
        }
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", "-p", "*", login])
            .output()
            .unwrap_or_else(|e| panic!("cannot run useradd (tests must run as root): {e}"));
        if out.status.success() || account_exists(login) {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        // exit 10: /etc/passwd locked by another process (another test binary); retry
        if out.status.code() != Some(10) && !err.contains("lock") {
            panic!("useradd {login} failed (tests must run as root): {err}");
        }
        sleep(Duration::from_millis(100));
    }
    panic!("useradd {login}: /etc/passwd stayed locked");
}

fn account_exists(login: &str) -> bool {
    Command::new("id")
        .arg(login)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// An existing account with a locked password (`!…`) cannot log in with
/// `UsePAM no`, not even with a key; give it the password `*` instead.
fn unlock_if_locked(login: &str) {
    let Ok(shadow) = fs::read_to_string("/etc/shadow") else {
        return;
    };
    let locked = shadow.lines().any(|line| {
        let mut fields = line.split(':');
        fields.next() == Some(login) && fields.next().is_some_and(|p| p.starts_with('!'))
    });
    if locked {
        let out = Command::new("usermod")
            .args(["-p", "*", login])
            .output()
            .expect("run usermod");
        assert!(
            out.status.success(),
            "usermod -p '*' {login} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e: io::Error| panic!("chmod {}: {e}", path.display()));
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
