//! Properties of the configuration loader (proptest, in the normal test run): whatever the
//! file and the environment hold, loading never panics, and a refused environment value names
//! its variable.

use proptest::prelude::*;

use super::{CliOverrides, Config, DEFAULT_TOML};

/// Lines shaped like configuration: known sections and keys with arbitrary values, and noise.
fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(vec![
            "[server]",
            "[cache]",
            "[storage]",
            "[log]",
            "[auth]",
            "[registries.crates-io]",
            "[registries.internal]",
            "[server.tls]",
            "kind = \"mirror\"",
            "kind = \"private\"",
            "upstream = \"https://index.crates.io/\"",
        ])
        .prop_map(str::to_owned),
        (
            // Not `listen`: a value shaped like HOST:PORT would be looked up in the DNS.
            prop::sample::select(vec![
                "memory_max_bytes",
                "disk_max_bytes",
                "evict_low_percent",
                "level",
                "data_dir",
                "retries",
                "auth_required",
                "reserved_names",
                "max_upload_bytes",
            ]),
            prop_oneof![
                "[0-9]{1,22}".prop_map(|s| s),
                "\"[ -~]{0,30}\"".prop_map(|s| s),
                Just("true".to_owned()),
                Just("[\"a*\", 3]".to_owned()),
            ],
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,40}",
    ];
    prop::collection::vec(line, 0..20).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_file_loads_or_is_refused_without_a_panic(text in config_text()) {
        let _ = Config::merge("prop.toml", &text, &[], &CliOverrides::default());
    }

    #[test]
    fn a_refused_environment_value_names_its_variable(
        path in prop::collection::vec("[A-Za-z_-]{1,16}", 1..4),
        value in "[ -~]{0,40}",
    ) {
        let var = format!("CRATEDOCK__{}", path.join("__").to_ascii_uppercase());
        let env = vec![(var.clone(), value)];
        if let Err(e) = Config::merge("default", DEFAULT_TOML, &env, &CliOverrides::default()) {
            let text = e.to_string();
            // The variable is named, unless the value passed every check of its key and the
            // configuration as a whole is what was refused (`low >= high`, say).
            prop_assert!(
                text.contains(&var) || text.starts_with("invalid configuration"),
                "{text}"
            );
        }
    }
}
