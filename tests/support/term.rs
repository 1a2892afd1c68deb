//! An engineer at a real terminal: `ssh` running in a tmux pane, driven with send-keys and read
//! with capture-pane, the way a person (or an attacker) types.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A tmux session `name` (`width`x`height`, kept after it exits) running
/// `ssh <extra> node1.acme-prod` with `home`'s ssh_config.
pub fn tmux_ssh(name: &str, home: &Path, width: u16, height: u16, extra: &str) {
    let ssh_cmd = format!(
        "ssh -F {} {extra} node1.acme-prod",
        home.join("ssh_config").display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        &width.to_string(),
        "-y",
        &height.to_string(),
        &ssh_cmd,
    ]);
    tmux(&["set-option", "-t", name, "remain-on-exit", "on"]);
}

/// Wait until one of `needles` shows `count` times in pane `name`; the screen then.
pub fn wait_pane_any_n(name: &str, needles: &[&str], count: usize) -> String {
    let start = Instant::now();
    loop {
        let text = tmux(&["capture-pane", "-p", "-t", name]);
        if needles.iter().any(|n| text.matches(n).count() >= count) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waiting for {needles:?} x{count} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_pane(name: &str, needle: &str, count: usize) -> String {
    wait_pane_any_n(name, &[needle], count)
}

pub fn wait_pane_any(name: &str, needles: &[&str]) -> String {
    wait_pane_any_n(name, needles, 1)
}

/// A tmux session running ssh (see [`tmux_ssh`]), named after the test and the process; killed
/// when dropped.
pub struct Term {
    pub name: String,
}

impl Term {
    pub fn ssh(name: &str, home: &Path, width: u16, height: u16, extra: &str) -> Term {
        let name = format!("{name}-{}", std::process::id());
        tmux_ssh(&name, home, width, height, extra);
        Term { name }
    }

    /// Keys as tmux send-keys takes them (`"Enter"`, `"C-c"`, or text).
    pub fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.name.as_str()];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    /// Text sent literally (no key names).
    pub fn type_text(&self, text: &str) {
        tmux(&["send-keys", "-t", &self.name, "-l", text]);
    }

    /// Text pasted (bracketed when the program asked for it).
    pub fn paste(&self, text: &str) {
        let buffer = format!("{}-buf", self.name);
        tmux(&["set-buffer", "-b", &buffer, text]);
        tmux(&["paste-buffer", "-p", "-d", "-b", &buffer, "-t", &self.name]);
    }

    pub fn resize(&self, width: u16, height: u16) {
        tmux(&[
            "resize-window",
            "-t",
            &self.name,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
    }

    pub fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// Wait until `needle` shows `count` times; the screen then.
    pub fn wait(&self, needle: &str, count: usize) -> String {
        wait_pane(&self.name, needle, count)
    }

    /// Wait until ssh exited.
    pub fn wait_exit(&self) {
        wait_exit(&self.name);
    }
}

/// Wait until the pane's program (ssh) exited.
pub fn wait_exit(name: &str) {
    let start = Instant::now();
    while !tmux(&["list-panes", "-t", name, "-F", "#{pane_dead}"]).contains('1') {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the session did not end:\n{}",
            tmux(&["capture-pane", "-p", "-t", name])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.name]);
    }
}
