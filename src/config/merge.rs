//! Layering: code defaults < the file < `CRATEDOCK__…` environment variables < the command
//! line, as one pure function.

use std::path::Path;

use super::{CliOverrides, Config, ConfigError, DEFAULT_TOML, ENV_PREFIX};

impl Config {
    /// Reads `path` (or the embedded default when `None`), then applies the process environment
    /// and the command line.
    pub fn load(path: Option<&Path>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
            ),
            None => ("embedded default".to_owned(), DEFAULT_TOML.to_owned()),
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut config = Self::merge(&origin, &text, &env, cli)?;
        config.warnings = std::env::vars()
            .map(|(k, _)| k)
            .filter_map(|k| stray_variable(&k))
            .collect();
        Ok(config)
    }

    /// Merges the layers: code defaults, the file's text, `CRATEDOCK__…` variables, the CLI.
    ///
    /// A file that declares `[registries]` replaces the default set of registries; the other
    /// sections are merged key by key.
    pub fn merge(
        origin: &str,
        file_text: &str,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        // Parse the file on its own first: that error carries line, column and key name.
        toml::from_str::<Config>(file_text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: at_the_key(file_text, &e),
        })?;
        let file: toml::Table = toml::from_str(file_text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;

        let mut merged = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => unreachable!("the default config serializes to a table"),
        };
        for (key, value) in file {
            match (merged.get_mut(&key), value) {
                (Some(toml::Value::Table(base)), toml::Value::Table(over))
                    if key != "registries" =>
                {
                    deep_merge(base, over)
                }
                (_, value) => {
                    merged.insert(key, value);
                }
            }
        }
        // Which key each variable set, to name the variable if that key is refused.
        let mut set_by: Vec<(String, String)> = Vec::new();
        for (name, raw) in env {
            set_by.push((name.clone(), apply_env(&mut merged, name, raw)?.join(".")));
        }
        if let Some(listen) = cli.listen {
            set(
                &mut merged,
                &["server", "listen"],
                listen.to_string().into(),
            );
        }
        if let Some(dir) = &cli.data_dir {
            set(
                &mut merged,
                &["storage", "data_dir"],
                dir.display().to_string().into(),
            );
        }

        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                let key = e.path().to_string();
                let var = set_by.iter().find(|(_, set)| {
                    set == &key
                        || set.starts_with(&format!("{key}."))
                        || key.starts_with(&format!("{set}."))
                });
                ConfigError::Parse {
                    origin: match var {
                        Some((var, _)) => format!("environment variable {var}"),
                        None => format!("{origin} with environment and command-line overrides"),
                    },
                    message: format!("key `{key}`: {}", e.inner()),
                }
            })?;
        config.validate()?;
        Ok(config)
    }
}

/// The parse error, pointed at the unknown key's own line when toml points at its table's
/// header instead (as it does inside a registry, whose kind decides its keys).
fn at_the_key(text: &str, e: &toml::de::Error) -> String {
    let message = e.to_string();
    let unknown = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    let (Some(key), Some(span)) = (unknown, e.span()) else {
        return message;
    };
    // The lines before the span's start; the span's own line is the next one.
    let before = text[..span.start].matches('\n').count();
    let found = text
        .lines()
        .enumerate()
        .skip(before)
        .skip_while(|(_, l)| l.trim_start().starts_with('['))
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.strip_prefix(&format!("\"{key}\""))
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
    match found {
        Some((i, line)) => format!(
            "line {}: unknown key `{key}`\n  |\n{} | {line}\n  |\n{}",
            i + 1,
            i + 1,
            e.message()
        ),
        None => message,
    }
}

fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        t = match t
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => inner,
            other => {
                *other = toml::Value::Table(toml::Table::new());
                other.as_table_mut().expect("just set")
            }
        };
    }
    t.insert((*last).to_owned(), value);
}

/// Variables of cratedock's own besides the `CRATEDOCK__` overrides.
const OWN_VARIABLES: &[&str] = &[
    "CRATEDOCK_CONFIG",
    "CRATEDOCK_URL",
    "CRATEDOCK_TOKEN",
    "CRATEDOCK_TOKEN_FILE",
    "CRATEDOCK_CA_FILE",
];

/// A warning for a `CRATEDOCK_…` variable that sets nothing (`CRATEDOCK_SERVER_LISTEN`: a single
/// underscore where the overrides take two).
fn stray_variable(name: &str) -> Option<String> {
    if !name.starts_with("CRATEDOCK_") || name.starts_with(ENV_PREFIX) {
        return None;
    }
    if OWN_VARIABLES.contains(&name) {
        return None;
    }
    let suggestion = format!(
        "{ENV_PREFIX}{}",
        name["CRATEDOCK_".len()..].replacen('_', "__", 1)
    );
    Some(format!(
        "environment variable {name} sets nothing: overrides are {ENV_PREFIX}SECTION__KEY (did you mean {suggestion}?)"
    ))
}

/// Applies `CRATEDOCK__A__B__C=value`. Segments are matched to existing keys ignoring case and
/// treating `_` and `-` alike (so `REGISTRIES__CRATES_IO` finds `crates-io`). The value is
/// typed by the key it sets ([`value_for`]): a token or a path of digits stays a string.
fn apply_env(table: &mut toml::Table, var: &str, raw: &str) -> Result<Vec<String>, ConfigError> {
    let origin = || format!("environment variable {var}");
    let rest = &var[ENV_PREFIX.len()..];
    let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::Parse {
            origin: origin(),
            message: "empty key segment".into(),
        });
    }
    let norm = |s: &str| s.replace('-', "_");
    // A registry's keys are typed by its kind (a private registry's keys are not a mirror's).
    let kind = match segments.as_slice() {
        [first, name, _, ..] if first == "registries" => table
            .get("registries")
            .and_then(toml::Value::as_table)
            .and_then(|r| {
                r.iter()
                    .find(|(k, _)| norm(&k.to_ascii_lowercase()) == norm(name))
            })
            .and_then(|(_, v)| v.get("kind"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let mut t = &mut *table;
    let mut resolved = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let key = t
            .keys()
            .find(|k| norm(&k.to_ascii_lowercase()) == norm(seg))
            .cloned()
            .unwrap_or_else(|| seg.clone());
        resolved.push(key.clone());
        if i + 1 == segments.len() {
            let value = value_for(&resolved, kind.as_deref(), raw).map_err(|message| {
                ConfigError::Parse {
                    origin: origin(),
                    message,
                }
            })?;
            t.insert(key, value);
        } else {
            let entry = t
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().ok_or_else(|| ConfigError::Parse {
                origin: origin(),
                message: format!("`{}` is not a section", resolved.join(".")),
            })?;
        }
    }
    Ok(resolved)
}

/// The value of `raw` for the key at `path`, typed as that key is typed: text for string keys,
/// a number for number keys, and so on. A key cratedock does not know is kept as text (the
/// merged configuration then names it as unknown).
fn value_for(path: &[String], kind: Option<&str>, raw: &str) -> Result<toml::Value, String> {
    let schema = match toml::Value::try_from(Config::with_every_key()) {
        Ok(v) => v,
        Err(e) => return Err(format!("cannot describe the configuration's keys: {e}")),
    };
    let mut shape = Some(&schema);
    for (i, seg) in path.iter().enumerate() {
        // Every registry has the shape of the example one of its kind.
        let seg = if i == 1 && path[0] == "registries" {
            match kind {
                Some("private") => "internal",
                _ => "crates-io",
            }
        } else {
            seg.as_str()
        };
        shape = shape.and_then(|v| v.get(seg));
    }
    let key = path.join(".");
    let parsed = |what: &str| {
        toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| format!("`{key}` takes {what}, not `{raw}`"))
    };
    match shape {
        None | Some(toml::Value::String(_)) => Ok(toml::Value::String(raw.to_owned())),
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{key}` takes a whole number, not `{raw}`")),
        Some(toml::Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("`{key}` takes a number, not `{raw}`")),
        Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("`{key}` takes true or false, not `{raw}`")),
        },
        Some(toml::Value::Array(_)) => parsed("a TOML array"),
        Some(toml::Value::Table(_)) => parsed("a TOML inline table"),
        Some(toml::Value::Datetime(_)) => parsed("a TOML date"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::RegistryConfig;

    fn merge(text: &str, env: &[(&str, &str)], cli: &CliOverrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::merge("test.toml", text, &env, cli)
    }

    #[test]
    fn layers_apply_in_order() {
        let text = r#"
            [server]
            listen = "127.0.0.1:9000"
            [cache]
            memory_max_bytes = 10000000
        "#;
        let cli = CliOverrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
        };
        let c = merge(
            text,
            &[
                ("CRATEDOCK__CACHE__MEMORY_MAX_BYTES", "20000000"),
                ("CRATEDOCK__SERVER__LISTEN", "127.0.0.1:9050"),
                ("CRATEDOCK__REGISTRIES__CRATES_IO__TOKEN", "secret"),
            ],
            &cli,
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9100, "CLI beats env");
        assert_eq!(c.cache.memory_max_bytes, 20_000_000, "env beats file");
        assert_eq!(c.cache.coalesce_wait_ms, 60_000, "defaults fill the rest");
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
        let RegistryConfig::Mirror(m) = &c.registries["crates-io"] else {
            panic!("a mirror")
        };
        assert_eq!(m.token.as_ref().unwrap().expose(), "secret");
        assert_eq!(format!("{:?}", m.token), "Some(Secret(***))");
    }

    #[test]
    fn a_file_with_registries_replaces_the_default_set() {
        let c = merge(
            r#"
            [registries.internal]
            kind = "mirror"
            upstream = "http://127.0.0.1:1/index/"
            index_ttl_ms = 5
            "#,
            &[],
            &CliOverrides::default(),
        )
        .unwrap();
        assert_eq!(c.registries.keys().collect::<Vec<_>>(), ["internal"]);
        let RegistryConfig::Mirror(m) = &c.registries["internal"] else {
            panic!("a mirror")
        };
        assert_eq!(m.index_ttl_ms, 5);
        assert_eq!(m.retries, 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = merge(
            "[server]\nlisten_addr = \"x\"\n",
            &[],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = merge(
            "[registries.x]\nkind = \"mirror\"\nupstream = \"https://a/\"\ntimeout = 1\n",
            &[],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timeout"), "{e}");
        let e = merge(
            "",
            &[("CRATEDOCK__CACHE__BOGUS", "1")],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn environment_values_are_typed_by_the_key_they_set() {
        let c = merge(
            "",
            &[
                ("CRATEDOCK__REGISTRIES__CRATES_IO__TOKEN", "12345678"),
                ("CRATEDOCK__STORAGE__DATA_DIR", "2024"),
                ("CRATEDOCK__SERVER__H2C_UPGRADE", "FALSE"),
                ("CRATEDOCK__CACHE__MEMORY_MAX_BYTES", "10000000"),
            ],
            &CliOverrides::default(),
        )
        .unwrap();
        let RegistryConfig::Mirror(m) = &c.registries["crates-io"] else {
            panic!("a mirror")
        };
        assert_eq!(m.token.as_ref().unwrap().expose(), "12345678");
        assert_eq!(c.storage.data_dir, PathBuf::from("2024"));
        assert!(!c.server.h2c_upgrade);
        assert_eq!(c.cache.memory_max_bytes, 10_000_000);

        let e = merge(
            "",
            &[("CRATEDOCK__CACHE__MEMORY_MAX_BYTES", "lots")],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cache.memory_max_bytes") && e.contains("whole number"),
            "{e}"
        );
        // A registry declared in the file gets typed keys too.
        let c = merge(
            "[registries.corp]\nkind = \"mirror\"\nupstream = \"https://corp.example/index/\"\n",
            &[
                ("CRATEDOCK__REGISTRIES__CORP__TOKEN", "007"),
                ("CRATEDOCK__REGISTRIES__CORP__RETRIES", "5"),
            ],
            &CliOverrides::default(),
        )
        .unwrap();
        let RegistryConfig::Mirror(m) = &c.registries["corp"] else {
            panic!("a mirror")
        };
        assert_eq!((m.token.as_ref().unwrap().expose(), m.retries), ("007", 5));

        // A private registry's keys are typed as a private registry's.
        let c = merge(
            "",
            &[
                ("CRATEDOCK__REGISTRIES__INTERNAL__MAX_UPLOAD_BYTES", "1000"),
                ("CRATEDOCK__REGISTRIES__INTERNAL__AUTH_REQUIRED", "false"),
                (
                    "CRATEDOCK__REGISTRIES__INTERNAL__ALLOW_UPSTREAM_NAMES",
                    "[\"acme-*\"]",
                ),
            ],
            &CliOverrides::default(),
        )
        .unwrap();
        let RegistryConfig::Private(p) = &c.registries["internal"] else {
            panic!("a private registry")
        };
        assert_eq!(p.max_upload_bytes, 1000);
        assert!(!p.auth_required);
        assert_eq!(p.allow_upstream_names.len(), 1);
    }
}
