//! The one way the tests run OpenSSH's `ssh`: as an engineer after `sallyport login` (their
//! ssh_config), or bare (no config: a direct dial, an attacker's client). Never asks anything
//! (`BatchMode=yes`), and standard input is empty unless a test pipes it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// `sftp -F <home>/ssh_config -o BatchMode=yes -b <batch> node1.acme-prod`: the engineer's
/// sftp running the commands of the file `batch`, to the end.
pub fn sftp_batch(home: &Path, batch: &Path) -> Output {
    Command::new("sftp")
        .arg("-F")
        .arg(home.join("ssh_config"))
        .args(["-o", "BatchMode=yes", "-b"])
        .arg(batch)
        .arg("node1.acme-prod")
        .stdin(Stdio::null())
        .output()
        .expect("running sftp")
}

pub struct Ssh {
    cmd: Command,
}

impl Ssh {
    /// `ssh -F <home>/ssh_config -o BatchMode=yes`: what an engineer types after login.
    pub fn engineer(home: &Path) -> Ssh {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(home.join("ssh_config"))
            .args(["-o", "BatchMode=yes"]);
        Ssh { cmd }
    }

    /// `ssh -F /dev/null -o BatchMode=yes`: no config at all.
    pub fn bare() -> Ssh {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"]);
        Ssh { cmd }
    }

    /// `-o OPTION` (e.g. `"IdentitiesOnly=yes"`).
    pub fn opt(mut self, option: impl AsRef<str>) -> Ssh {
        self.cmd.arg("-o").arg(option.as_ref());
        self
    }

    /// Accept any host key and remember none (the host is not what the test checks).
    pub fn any_host_key(self) -> Ssh {
        self.opt("StrictHostKeyChecking=no")
            .opt("UserKnownHostsFile=/dev/null")
    }

    /// Offer only `key` (`-i`; its `-cert.pub` next to it is offered too, as OpenSSH does).
    pub fn key(mut self, key: &Path) -> Ssh {
        self = self.opt("IdentitiesOnly=yes");
        self.cmd.arg("-i").arg(key);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Ssh {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Ssh
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Ssh {
        self.cmd.env(key, value);
        self
    }

    /// Run it to the end, standard input empty.
    pub fn output(mut self) -> Output {
        self.cmd.stdin(Stdio::null()).output().expect("running ssh")
    }

    /// Start it, standard input empty, standard output and error piped.
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ssh")
    }

    /// The command, for what the helpers above do not cover (a pty, piped input).
    pub fn command(self) -> Command {
        self.cmd
    }
}
