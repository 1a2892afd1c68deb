//! Classification tables, and stdin lines fed in every split.
use super::*;
use crate::record::scp::ScpDirection;
use sha2::{Digest, Sha256};

fn i(program: &str) -> ExecKind {
    interpreter(program)
}
const C: ExecKind = ExecKind::Command;
const SFTP: ExecKind = ExecKind::SftpServer;

fn scp_t(path: &str) -> ExecKind {
    ExecKind::Scp(ScpTransfer {
        direction: ScpDirection::Upload,
        path: path.to_string(),
        recursive: false,
        preserve: false,
        target_is_dir: false,
    })
}

fn scp_f(path: &str, recursive: bool) -> ExecKind {
    ExecKind::Scp(ScpTransfer {
        direction: ScpDirection::Download,
        path: path.to_string(),
        recursive,
        preserve: false,
        target_is_dir: false,
    })
}

#[test]
fn classification() {
    let cases: Vec<(&str, ExecKind)> = vec![
        // Plain commands.
        ("", C),
        ("ls -la /var/log", C),
        ("uptime", C),
        ("cat /etc/hosts", C),
        ("tail -f /var/log/syslog | grep -v DEBUG", C),
        (
            "systemctl restart nginx && journalctl -u nginx -n 50",
            i("systemctl"),
        ),
        ("echo 'bash -s'", C),
        ("grep bash /etc/passwd", C),
        ("FOO=1 BAR=2", i("FOO=")),
        ("LANG=C LC_ALL=C grep -c x", C),
        ("sh script.sh", i("sh")),
        ("bash -x ./deploy.sh --fast", i("bash")),
        ("bash -c 'echo hi'", C),
        ("sh -c \"ls; uptime\"", C),
        ("python3 -c 'print(1)'", i("python3")),
        ("python3 script.py", i("python3")),
        ("python3 -W ignore script.py -", i("python3")),
        ("python3 -m http.server 8000", i("python3")),
        ("perl -e 'print 1'", i("perl")),
        ("perl -lane 'print $F[0]' file", i("perl")),
        ("perl -w script.pl", i("perl")),
        ("ruby -e 'puts 1'", i("ruby")),
        ("node app.js", i("node")),
        ("node -e 'console.log(1)'", i("node")),
        ("php -r 'echo 1;'", i("php")),
        ("php index.php", i("php")),
        ("psql -U postgres -c 'select 1'", C),
        ("psql -Atc 'select 1' mydb", C),
        ("psql -f /tmp/migrate.sql", C),
        ("mysql -uroot -e 'show databases'", C),
        ("sqlite3 /var/db.sqlite 'select count(*) from t'", C),
        ("redis-cli -h localhost ping", C),
        ("awk '{print $1}' /var/log/access.log", i("awk")),
        ("sed -n 1,10p /etc/passwd", i("sed")),
        ("lua -e 'print(1)'", i("lua")),
        ("gdb -batch -ex bt ./core", C),
        ("sudo -l", C),
        ("sudo systemctl status sshd", i("systemctl")),
        ("env", C),
        ("nohup ./server &", i("server")),
        ("timeout 5 curl -s localhost", C),
        ("command -v bash", C),
        ("exec >/dev/null", C),
        ("ionice -p 1234", C),
        ("chrt -p 1234", C),
        ("scp -t", C),
        ("su -c 'ls /root'", C),
        ("ssh other uptime", C),
        ("ssh -N -L 8080:localhost:80 other", C),
        ("cat <<'EOF'\nit's bash\nEOF\n", C),
        ("cat <<-EOF > /tmp/x\n\tbash\n\tEOF\nuptime", C),
        ("ls 2>&1 >/dev/null", C),
        ("ls # bash", C),
        ("echo $'it\\'s'", C),
        ("for x in bash sh; do echo $x; done", C),
        // Interpreters.
        ("bash", i("bash")),
        ("sh", i("sh")),
        ("/bin/bash -l", i("bash")),
        ("bash --norc --noprofile", i("bash")),
        ("sh -s -- arg1", i("sh")),
        ("bash -s arg1 arg2", i("bash")),
        ("bash -i", i("bash")),
        ("bash -", i("bash")),
        ("bash /dev/stdin", i("bash")),
        ("zsh -o pipefail", i("zsh")),
        ("fish", i("fish")),
        ("tcsh", i("tcsh")),
        ("busybox sh", i("sh")),
        ("busybox ash -s", i("ash")),
        ("bash -c 'bash -s'", i("bash")),
        ("/bin/sh -c \"sh\"", i("sh")),
        ("sh -ec 'cd /tmp && exec bash'", i("bash")),
        ("bash -o pipefail -c 'cat | python3'", i("python3")),
        ("sudo -E -u root bash", i("bash")),
        ("sudo -u postgres psql", i("psql")),
        ("sudo -i", i("sudo")),
        ("sudo -s", i("sudo")),
        ("sudo -- sh", i("sh")),
        ("sudo --user=root -H bash -l", i("bash")),
        ("/usr/bin/sudo -n /bin/sh", i("sh")),
        ("doas -s", i("doas")),
        ("doas -u root sh", i("sh")),
        ("pkexec", i("pkexec")),
        ("su", i("su")),
        ("su - root", i("su")),
        ("su - root -c 'bash'", i("bash")),
        ("runuser -u app -- bash -s", i("bash")),
        ("env -i PATH=/bin sh -s", i("PATH=")),
        ("env -u HOME -C /tmp python3", i("python3")),
        ("env -S 'python3 -u'", i("python3")),
        ("LANG=C TERM=dumb bash", i("bash")),
        ("nice -n 5 python3 -", i("python3")),
        ("nice -10 bash", i("bash")),
        ("nohup bash -s", i("bash")),
        ("timeout -s KILL 5m sh", i("sh")),
        ("timeout --foreground 10 python3", i("python3")),
        ("stdbuf -oL -eL bash", i("bash")),
        ("exec /bin/bash", i("bash")),
        ("exec -a login -l bash", i("bash")),
        ("command bash", i("bash")),
        ("ionice -c3 nice bash", i("bash")),
        ("setsid -w sh", i("sh")),
        ("chrt -f 10 bash", i("bash")),
        ("taskset -c 0-3 python3", i("python3")),
        ("time -p bash", i("bash")),
        ("ssh-agent bash", i("bash")),
        ("chroot /mnt", i("chroot")),
        ("chroot /mnt /bin/sh -i", i("sh")),
        ("nsenter -t 1 -m -u -n", i("nsenter")),
        ("unshare -r", i("unshare")),
        ("flock /tmp/lock -c 'bash'", i("bash")),
        ("script -qc bash /dev/null", i("bash")),
        ("script", i("script")),
        ("eval bash", i("bash")),
        ("source /dev/stdin", i("source")),
        ("python", i("python")),
        ("python3", i("python3")),
        ("python3.11 -u", i("python3.11")),
        ("python3 -", i("python3")),
        ("python3 - arg1 arg2", i("python3")),
        ("python3 -i script.py", i("python3")),
        ("/usr/bin/python3 -E -s", i("python3")),
        ("perl", i("perl")),
        ("perl -", i("perl")),
        ("ruby", i("ruby")),
        ("irb", i("irb")),
        ("node", i("node")),
        ("nodejs -", i("nodejs")),
        ("node -i", i("node")),
        ("php", i("php")),
        ("php -a", i("php")),
        ("lua", i("lua")),
        ("lua5.4 -", i("lua5.4")),
        ("Rscript -", i("Rscript")),
        ("R --vanilla", i("R")),
        ("tclsh", i("tclsh")),
        ("expect -f -", i("expect")),
        ("gdb ./prog", i("gdb")),
        ("psql", i("psql")),
        ("psql -h db -U app mydb", i("psql")),
        ("psql -f -", i("psql")),
        ("mysql -uroot -psecret mydb", i("mysql")),
        ("sqlite3 /var/db.sqlite", i("sqlite3")),
        ("sqlite3 -cmd '.mode csv' db", i("sqlite3")),
        ("redis-cli -n 2", i("redis-cli")),
        ("mongosh mongodb://localhost/db", i("mongosh")),
        ("awk -f -", i("awk")),
        ("sed -f /dev/stdin file", i("sed")),
        ("xargs -n1 sh -c", i("xargs")),
        ("xargs rm", i("xargs")),
        ("bc -l", i("bc")),
        ("ed /etc/hosts", i("ed")),
        ("vim -es", i("vim")),
        ("ssh other", i("ssh")),
        ("sudo su -", i("su")),
        ("sudo su - postgres -c psql", i("psql")),
        ("sudo su - postgres -c 'psql -c \"select 1\"'", C),
        ("exec su -l", i("su")),
        ("nice -- bash", i("bash")),
        ("env -- sh", i("sh")),
        ("sudo -iu root", i("sudo")),
        ("bash -lc 'exec \"$SHELL\"'", i("$SHELL")),
        ("sh +x -s", i("sh")),
        ("pwsh", i("pwsh")),
        ("pwsh -NoProfile -Command -", i("pwsh")),
        ("pwsh -c Get-Date", i("pwsh")),
        ("pwsh ./script.ps1", i("pwsh")),
        ("jshell", i("jshell")),
        ("dc -e '2 2 + p'", C),
        ("lldb --batch -o run ./prog", C),
        ("mysql --execute='select 1'", C),
        ("ssh -p 2222 other bash -s", i("bash")),
        // Pipelines and lists: any part.
        ("cat | bash", i("bash")),
        ("true; sh", i("sh")),
        ("tee log | python3 -", i("python3")),
        ("cd /tmp && exec bash", i("bash")),
        ("false || bash", i("bash")),
        ("(cd /tmp; bash)", i("bash")),
        ("{ bash; }", i("bash")),
        ("if true; then bash; fi", i("bash")),
        ("ls\nbash", i("bash")),
        ("echo $(bash)", i("bash")),
        ("echo \"$(cat | sh)\"", i("sh")),
        ("echo `bash`", i("bash")),
        ("X=$(python3) ls", i("python3")),
        ("diff <(bash) /dev/null", i("bash")),
        ("bash < /dev/null", i("bash")),
        ("bash <<EOF\nls\nEOF", i("bash")),
        // Data in, nothing run.
        ("cat > /tmp/upload", C),
        ("cat >> ~/notes && sha256sum ~/notes", C),
        ("dd of=/tmp/x bs=1M", C),
        ("tar xzf - -C /srv", C),
        ("tar -C /srv -xzf -", C),
        ("gzip -dc | tar xf -", C),
        ("rsync --server -vlogDtpre.iLsfxC . /tmp/x", C),
        ("mkdir -p /tmp/x && cd /tmp/x && cat > f", C),
        // Any program not known to run only data runs what it reads: wrappers, tools that start
        // others, names defined on the node, words that are not what they say.
        ("setarch x86_64 bash", i("setarch")),
        ("strace -f -o /dev/null bash", i("strace")),
        ("prlimit bash", i("prlimit")),
        ("setpriv bash", i("setpriv")),
        ("capsh --", i("capsh")),
        ("newgrp root", i("newgrp")),
        (
            "/lib64/ld-linux-x86-64.so.2 /bin/bash",
            i("ld-linux-x86-64.so.2"),
        ),
        ("socat - EXEC:bash", i("socat")),
        ("find /tmp -maxdepth 0 -exec bash \\;", i("find")),
        ("split -l 100 --filter=sh", i("split")),
        ("make -f -", i("make")),
        ("git -c alias.x='!sh' x", i("git")),
        ("kubectl exec -i pod -- bash", i("kubectl")),
        ("docker exec -i c sh", i("docker")),
        ("ip netns exec x bash", i("ip")),
        ("systemd-run --pipe bash", i("systemd-run")),
        ("/bin/bas? -s", i("bas?")),
        ("{bash,-s}", i("{bash,-s}")),
        ("function f { bash; }; f", i("function")),
        ("f() { cat; }; f", i("f")),
        ("shopt -s expand_aliases; alias x=bash\nx", i("shopt")),
        ("ln -sf /bin/bash /tmp/s; /tmp/s", i("s")),
        ("trap \"$(cat)\" EXIT", i("trap")),
        ("BASH_ENV=/dev/stdin bash -c true", i("BASH_ENV=")),
        ("set -a; BASH_ENV=/dev/stdin; bash -c true", i("set")),
        ("export BASH_ENV=/dev/stdin; bash -c true", i("export")),
        ("env BASH_ENV=/dev/stdin bash -c true", i("BASH_ENV=")),
        (". ./x", i(".")),
        ("tar xf - --to-command=sh", i("tar")),
        ("tar -xf - -I 'sh -c cat'", i("tar")),
        (
            "tar --checkpoint=1 --checkpoint-action=exec=sh -xf -",
            i("tar"),
        ),
        ("tar -x --to-c=sh -f -", i("tar")),
        ("tar -x --use=sh -f -", i("tar")),
        ("sort -S 64K --compress-program=sh", i("sort")),
        ("wget -i - --use-askpass=sh", i("wget")),
        ("cpio -o --rsh-command=sh", i("cpio")),
        ("rsync --server --daemon --config=/tmp/x .", i("rsync")),
        // Not known before it runs: fail safe.
        ("$SHELL", i("$SHELL")),
        ("\"$SHELL\" -s", i("$SHELL")),
        ("$(which bash)", i(UNKNOWN)),
        ("`which bash` -s", i(UNKNOWN)),
        ("sh -c \"$CMD\"", i("sh")),
        ("bash -c 'unterminated", i(UNPARSED)),
        ("echo 'unterminated", i(UNPARSED)),
        ("echo \"unterminated", i(UNPARSED)),
        ("echo (", i(UNPARSED)),
        ("echo )", i(UNPARSED)),
        ("echo $(ls", i(UNPARSED)),
        ("echo `ls", i(UNPARSED)),
        // SFTP servers and scp.
        ("/usr/lib/openssh/sftp-server", SFTP),
        ("/usr/libexec/sftp-server -l INFO", SFTP),
        ("/usr/libexec/openssh/sftp-server", SFTP),
        ("internal-sftp", SFTP),
        ("sudo -u www-data /usr/lib/openssh/sftp-server", SFTP),
        ("exec /usr/lib/sftp-server", SFTP),
        ("sh -c '/usr/lib/openssh/sftp-server -e'", SFTP),
        ("true; /usr/lib/openssh/sftp-server", SFTP),
        ("/usr/lib/openssh/sftp-server; bash", i("bash")),
        ("scp -t /tmp/x", scp_t("/tmp/x")),
        ("scp -r -f logs", scp_f("logs", true)),
        ("sudo scp -t /root/x", scp_t("/root/x")),
        ("sh -c 'scp -t /tmp'", scp_t("/tmp")),
        ("cd /tmp && scp -t .", scp_t(".")),
        ("scp -t 'my file'", scp_t("my file")),
    ];
    assert!(cases.len() >= 60);
    let wrong: Vec<String> = cases
        .into_iter()
        .filter_map(|(command, want)| {
            let got = classify(command);
            (got != want).then(|| format!("{command:?}: {got:?}, not {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn deep_nesting_is_an_interpreter() {
    assert_eq!(classify(&format!("{}ls", "eval ".repeat(40))), i(UNPARSED));
    assert_eq!(classify(&format!("{}ls", "eval ".repeat(5))), C);
    assert_eq!(classify(&format!("{}bash", "eval ".repeat(5))), i("bash"));
    let mut command = "ls".to_string();
    for _ in 0..6 {
        command = format!("sh -c {}", shell_quote(&command));
    }
    assert_eq!(classify(&command), C);
    let deep = format!("{}ls{}", "$(".repeat(100), ")".repeat(100));
    assert_eq!(classify(&deep), i(UNPARSED));
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn never_panics() {
    let mut x: u32 = 0x1234_5678;
    let alphabet: Vec<char> = "ab -c'\"\\$()`|;&<>#\n=sh{}éx".chars().collect();
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..(x % 40) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            s.push(alphabet[x as usize % alphabet.len()]);
        }
        let _ = classify(&s);
    }
}

#[test]
fn kinds_serialize() {
    let v = serde_json::to_value(i("bash")).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "interpreter", "program": "bash"})
    );
    let v = serde_json::to_value(scp_t("/x")).unwrap();
    assert_eq!(v["kind"], "scp");
    assert_eq!(v["direction"], "upload");
    assert_eq!(v["path"], "/x");
    assert_eq!(serde_json::to_value(SFTP).unwrap()["kind"], "sftp_server");
    assert_eq!(serde_json::to_value(C).unwrap()["kind"], "command");
}

// ---------------------------------------------------------------------------------------------
// Stdin lines.

fn line(text: &str) -> StdinLine {
    StdinLine {
        text: text.to_string(),
        part: 0,
        more: false,
        bytes: text.len() as u64,
        sha256: None,
        partial: false,
        after_partial: false,
    }
}

/// Feed `input` cut at `cuts`; the lines, and for each the absolute offset after it.
fn feed(input: &[u8], cuts: &[usize]) -> (Vec<(usize, StdinLine)>, Option<StdinLine>) {
    let mut lines = StdinLines::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([input.len()].iter()) {
        let cut = cut.clamp(start, input.len());
        for end in lines.feed(&input[start..cut]) {
            assert!(end.end <= cut - start);
            if end.line.more {
                // A piece: where it was reported depends on the cuts.
                out.push((0, end.line));
                continue;
            }
            assert!(end.end >= 1);
            assert!(matches!(input[start + end.end - 1], b'\n' | 0));
            out.push((start + end.end, end.line));
        }
        start = cut;
    }
    (out, lines.finish())
}

/// (input, the lines with the offset after each, the last line without `\n`)
type LinesCase = (Vec<u8>, Vec<(usize, StdinLine)>, Option<StdinLine>);

fn lines_cases() -> Vec<LinesCase> {
    let long: Vec<u8> = (0..MAX_LINE_BYTES + 100)
        .map(|n| b'a' + (n % 26) as u8)
        .collect();
    let mut long_input = long.clone();
    long_input.extend_from_slice(b"\r\nnext\n");
    let first = StdinLine {
        text: String::from_utf8(long[..MAX_LINE_BYTES].to_vec()).unwrap(),
        part: 1,
        more: true,
        bytes: MAX_LINE_BYTES as u64,
        sha256: None,
        partial: false,
        after_partial: false,
    };
    let last = StdinLine {
        text: String::from_utf8(long[MAX_LINE_BYTES..].to_vec()).unwrap(),
        part: 2,
        more: false,
        bytes: long.len() as u64,
        sha256: Some(hex::encode(Sha256::digest(&long))),
        partial: false,
        after_partial: false,
    };
    // A character across the piece boundary goes whole into the next piece.
    let mut wide = vec![b'x'; MAX_LINE_BYTES - 1];
    wide.extend_from_slice("é!".as_bytes());
    let mut wide_input = wide.clone();
    wide_input.push(b'\n');
    let exact: Vec<u8> = vec![b'x'; MAX_LINE_BYTES];
    let mut exact_input = exact.clone();
    exact_input.push(b'\n');
    vec![
        (b"".to_vec(), vec![], None),
        (b"ls\n".to_vec(), vec![(3, line("ls"))], None),
        (
            b"ls -la\r\nuptime\n\nexit".to_vec(),
            vec![(8, line("ls -la")), (15, line("uptime")), (16, line(""))],
            Some(line("exit")),
        ),
        (b"a\rb\n".to_vec(), vec![(4, line("a\rb"))], None),
        (
            b"rm a\0touch b\r\0c".to_vec(),
            vec![(5, line("rm a")), (14, line("touch b\r"))],
            Some(line("c")),
        ),
        (
            b"\r\n\r\r\n".to_vec(),
            vec![(2, line("")), (5, line("\r"))],
            None,
        ),
        (b"last\r".to_vec(), vec![], Some(line("last"))),
        (
            b"caf\xc3\xa9 \xff\n".to_vec(),
            vec![(
                8,
                StdinLine {
                    text: "café \u{fffd}".to_string(),
                    part: 0,
                    more: false,
                    bytes: 7,
                    sha256: None,
                    partial: false,
                    after_partial: false,
                },
            )],
            None,
        ),
        (
            long_input.clone(),
            vec![
                (0, first),
                (long.len() + 2, last),
                (long.len() + 7, line("next")),
            ],
            None,
        ),
        (
            exact_input.clone(),
            vec![(
                exact.len() + 1,
                StdinLine {
                    text: String::from_utf8(exact.clone()).unwrap(),
                    part: 0,
                    more: false,
                    bytes: exact.len() as u64,
                    sha256: None,
                    partial: false,
                    after_partial: false,
                },
            )],
            None,
        ),
        (
            wide_input.clone(),
            vec![
                (
                    0,
                    StdinLine {
                        text: String::from_utf8(wide[..MAX_LINE_BYTES - 1].to_vec()).unwrap(),
                        part: 1,
                        more: true,
                        bytes: (MAX_LINE_BYTES - 1) as u64,
                        sha256: None,
                        partial: false,
                        after_partial: false,
                    },
                ),
                (
                    wide.len() + 1,
                    StdinLine {
                        text: "é!".to_string(),
                        part: 2,
                        more: false,
                        bytes: wide.len() as u64,
                        sha256: Some(hex::encode(Sha256::digest(&wide))),
                        partial: false,
                        after_partial: false,
                    },
                ),
            ],
            None,
        ),
    ]
}

#[test]
fn stdin_lines_whole_and_split_everywhere() {
    for (input, want, last) in lines_cases() {
        assert_eq!(feed(&input, &[]), (want.clone(), last.clone()), "whole");
        if input.len() < 100 {
            // Every single cut, and every byte alone.
            for cut in 0..=input.len() {
                assert_eq!(
                    feed(&input, &[cut]),
                    (want.clone(), last.clone()),
                    "cut {cut}"
                );
            }
            let all: Vec<usize> = (0..input.len()).collect();
            assert_eq!(feed(&input, &all), (want.clone(), last.clone()), "bytes");
        }
        let mut x: u32 = 0xdead_beef;
        for _ in 0..20 {
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < input.len() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                at += (x % 9000) as usize + 1;
                cuts.push(at);
            }
            assert_eq!(
                feed(&input, &cuts),
                (want.clone(), last.clone()),
                "{cuts:?}"
            );
        }
    }
}

#[test]
fn stdin_lines_memory_is_bounded() {
    let mut lines = StdinLines::new();
    let chunk = vec![b'z'; 100_000];
    let mut text = 0;
    let mut parts = Vec::new();
    for _ in 0..50 {
        for end in lines.feed(&chunk) {
            assert!(end.line.more);
            text += end.line.text.len();
            parts.push(end.line.part);
        }
        assert!(lines.buf.len() <= MAX_LINE_BYTES);
    }
    let ends = lines.feed(b"\n");
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].end, 1);
    assert_eq!(ends[0].line.bytes, 5_000_000);
    assert!(!ends[0].line.more);
    text += ends[0].line.text.len();
    parts.push(ends[0].line.part);
    // Every byte is in a piece, the pieces numbered in order.
    assert_eq!(text, 5_000_000);
    assert_eq!(parts, (1..=parts.len() as u32).collect::<Vec<_>>());
    assert_eq!(lines.finish(), None);
}

/// Feed `input` cut at `cuts`, each chunk followed by its partial line as the recorder asks for
/// it; every report in order.
fn feed_with_partials(input: &[u8], cuts: &[usize]) -> Vec<StdinLine> {
    let mut lines = StdinLines::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([input.len()].iter()) {
        let cut = cut.clamp(start, input.len());
        out.extend(lines.feed(&input[start..cut]).into_iter().map(|e| e.line));
        out.extend(lines.partial());
        start = cut;
    }
    out.extend(lines.finish());
    out
}

fn partial(text: &str, bytes: u64) -> StdinLine {
    StdinLine {
        text: text.to_string(),
        part: 0,
        more: true,
        bytes,
        sha256: None,
        partial: true,
        after_partial: false,
    }
}

fn after_partial(text: &str) -> StdinLine {
    StdinLine {
        after_partial: true,
        ..line(text)
    }
}

#[test]
fn an_unterminated_rest_is_reported_before_its_chunk_goes_on() {
    type Case<'a> = (&'a [u8], &'a [usize], Vec<StdinLine>);
    let cases: Vec<Case> = vec![
        // `printf 'touch /tmp/x' | ssh node 'head -c 12 | bash'`: bash runs it at head's end.
        (
            b"touch /tmp/x",
            &[],
            vec![partial("touch /tmp/x", 12), after_partial("touch /tmp/x")],
        ),
        // Lines across chunks: each chunk's rest ahead, the line whole when it ends.
        (
            b"ech" as &[u8],
            &[],
            vec![partial("ech", 3), after_partial("ech")],
        ),
        (
            b"echo a\necho b\n",
            &[3, 9],
            vec![
                partial("ech", 3),
                after_partial("echo a"),
                partial("ec", 2),
                after_partial("echo b"),
            ],
        ),
        // One line over three chunks: each partial has only the bytes its chunk brought.
        (
            b"touch /tmp/y\n",
            &[4, 9],
            vec![
                partial("touc", 4),
                partial("h /tm", 9),
                after_partial("touch /tmp/y"),
            ],
        ),
        // A chunk that ends a line leaves nothing ahead; an empty chunk reports nothing.
        (b"id\nls\n", &[3, 3], vec![line("id"), line("ls")]),
        // A `\r` held at a chunk's end is in the next report (here the line, without it).
        (b"ls\r\n", &[3], vec![partial("ls", 2), after_partial("ls")]),
        (
            b"a\rb",
            &[2],
            vec![
                partial("a", 1),
                partial("\rb", 3),
                StdinLine {
                    bytes: 3,
                    ..after_partial("a\rb")
                },
            ],
        ),
        // A NUL ends a line as a newline does.
        (
            b"rm x\0rm",
            &[2],
            vec![
                partial("rm", 2),
                after_partial("rm x"),
                partial("rm", 2),
                after_partial("rm"),
            ],
        ),
    ];
    for (input, cuts, want) in cases {
        assert_eq!(
            feed_with_partials(input, cuts),
            want,
            "{:?} cut at {cuts:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn partial_lines_add_nothing_else_and_lose_no_byte_wherever_the_chunks_end() {
    for (input, want, last) in lines_cases() {
        let want: Vec<StdinLine> = want.into_iter().map(|(_, l)| l).chain(last).collect();
        let mut x: u32 = 0x1234_5678;
        for round in 0..40 {
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < input.len() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Short inputs are cut anywhere, long ones in chunks of up to 9,000 bytes.
                at += (x % if input.len() < 100 { 4 } else { 9000 }) as usize + 1;
                cuts.push(at);
            }
            let got = feed_with_partials(&input, &cuts);
            // Without the partial lines, and without saying which continue them: the lines.
            let lines: Vec<StdinLine> = got
                .iter()
                .filter(|l| !l.partial)
                .map(|l| StdinLine {
                    after_partial: false,
                    ..l.clone()
                })
                .collect();
            assert_eq!(lines, want, "round {round}: {cuts:?}");
            // In ASCII (no character cut): each line or piece holds the bytes reported ahead of
            // it, first, and says so; no other does.
            if !input.is_ascii() {
                continue;
            }
            let mut ahead = String::new();
            for l in &got {
                if l.partial {
                    ahead.push_str(&l.text);
                    continue;
                }
                assert_eq!(l.after_partial, !ahead.is_empty(), "round {round}: {l:?}");
                let taken = ahead.len().min(l.text.len());
                assert_eq!(l.text[..taken], ahead[..taken], "round {round}");
                ahead.drain(..taken);
            }
            assert!(ahead.is_empty(), "round {round}: left ahead: {ahead:?}");
        }
    }
}

#[test]
fn partial_lines_of_a_long_line_come_with_its_pieces_and_stay_bounded() {
    let mut lines = StdinLines::new();
    let chunk = vec![b'q'; 10_000];
    let mut pieces: Vec<StdinLine> = Vec::new();
    for n in 1..=20 {
        for end in lines.feed(&chunk) {
            pieces.push(end.line);
        }
        // Each chunk's bytes are in a piece or ahead of it, at most its own bytes ahead.
        let p = lines.partial().expect("each chunk ends inside the line");
        assert!(p.partial && p.text.len() <= chunk.len(), "{}", p.text.len());
        assert_eq!(lines.partial(), None);
        let in_pieces: usize = pieces.iter().map(|l| l.text.len()).sum();
        assert_eq!(in_pieces + lines.buf.len(), n * chunk.len());
        assert!(lines.buf.len() <= MAX_LINE_BYTES);
    }
    let last = lines.finish().unwrap();
    pieces.push(last);
    // The pieces are the line, each continuing partial lines.
    let text: usize = pieces.iter().map(|l| l.text.len()).sum();
    assert_eq!(text, 200_000);
    assert!(pieces.iter().all(|l| l.after_partial && !l.partial));
    assert_eq!(pieces.last().unwrap().bytes, 200_000);
}
