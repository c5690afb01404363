//! Default locations, shared by `syncbased` and `sb` so that both, run with no flags, find the
//! same identity.

use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn xdg(variable: &str, fallback: &[&str]) -> PathBuf {
    match std::env::var_os(variable) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => fallback.iter().fold(home(), |path, part| path.join(part)),
    }
}

/// `$XDG_DATA_HOME/syncbase`, else `~/.local/share/syncbase`.
pub fn data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", &[".local", "share"]).join("syncbase")
}

/// `$XDG_CONFIG_HOME/syncbase/identity`, else `~/.config/syncbase/identity`.
pub fn identity_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", &[".config"])
        .join("syncbase")
        .join("identity")
}

/// The local user's name, for a root identity created on first use.
pub fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|name| crate::identity::validate_new_extension(name).is_ok())
        .unwrap_or_else(|| "user".to_string())
}
