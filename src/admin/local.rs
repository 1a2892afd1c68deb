//! What `sallyport admin` does on this machine alone: tokens and passwords hashed for the
//! broker's config and directory file, host keys read from files.

use std::io::Read;

use anyhow::Context;

/// `admin hash-token`.
pub(super) fn hash_token(stdin: bool) -> anyhow::Result<()> {
    let token = if stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim().to_string()
    } else {
        sallyport_broker::auth::new_api_token()
    };
    anyhow::ensure!(token.starts_with("spt_"), "tokens start with spt_");
    if !stdin {
        println!("token:                 {token}");
    }
    println!(
        "operator_token_sha256 = \"{}\"",
        sallyport_broker::auth::token_hash(&token)
    );
    Ok(())
}

/// `admin hash-password`.
pub(super) fn hash_password(
    stdin: bool,
    uid: Option<String>,
    groups: Vec<String>,
) -> anyhow::Result<()> {
    let password = if stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(
            first == again,
            "the two passwords differ: nothing was hashed"
        );
        first
    };
    anyhow::ensure!(
        password.chars().count() >= 12,
        "the password is shorter than 12 characters: choose a longer one"
    );
    for name in uid.iter().chain(&groups) {
        anyhow::ensure!(
            crate::valid_name(name),
            "invalid name {name:?}: use letters, digits, '.', '_' and '-'"
        );
    }
    let hash = sallyport_broker::directory::hash_argon2(&password)?;
    match uid {
        Some(uid) => println!(
            "[[engineer]]\nuid = \"{uid}\"\npassword_argon2 = \"{hash}\"\ngroups = {groups:?}"
        ),
        None => println!("{hash}"),
    }
    Ok(())
}

/// `--host-key` values as key lines: a value naming a file stands for the keys in it (one a
/// line; blank lines and `#` comments skipped). The broker checks each.
pub(super) fn host_key_lines(values: &[String]) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for v in values {
        let path = std::path::Path::new(v);
        if !v.trim_start().starts_with("ssh-")
            && !v.trim_start().starts_with("ecdsa-")
            && path.is_file()
        {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading host keys from {v}"))?;
            lines.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        } else {
            lines.push(v.trim().to_string());
        }
    }
    Ok(lines)
}
