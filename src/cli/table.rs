//! Tables of the admin API's answers, for people (`--json` prints the answers as they are).

use serde_json::Value;

use crate::auth::rfc3339;

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        v => v.to_string(),
    }
}

pub(super) fn time(v: &Value) -> String {
    v.as_u64().map_or("-".to_owned(), rfc3339)
}

fn rows(v: &Value, f: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

pub(super) fn users(v: &Value) -> String {
    let rows = rows(v, |u| {
        vec![
            text(&u["login"]),
            text(&u["name"]),
            text(&u["email"]),
            if u["admin"] == true { "yes" } else { "no" }.to_owned(),
            if u["disabled"] == true {
                "disabled"
            } else {
                "active"
            }
            .to_owned(),
        ]
    });
    table(&["LOGIN", "NAME", "E-MAIL", "ADMIN", "STATE"], rows)
}

pub(super) fn teams(v: &Value) -> String {
    let rows = rows(v, |t| {
        let members: Vec<String> = t["members"]
            .as_array()
            .map(|m| m.iter().map(text).collect())
            .unwrap_or_default();
        vec![text(&t["name"]), members.join(", ")]
    });
    table(&["TEAM", "MEMBERS"], rows)
}

pub(super) fn grants(v: &Value) -> String {
    let rows = rows(v, |g| {
        let to = match (g["subject"]["user"].as_str(), g["subject"]["team"].as_str()) {
            (Some(u), _) => format!("user {u}"),
            (_, Some(t)) => format!("team {t}"),
            _ => "-".to_owned(),
        };
        let registry = g["registry"].as_str().unwrap_or("*").to_owned();
        vec![
            text(&g["id"]),
            to,
            text(&g["permission"]),
            registry,
            text(&g["crates"]),
            time(&g["expires_ms"]),
        ]
    });
    table(
        &["ID", "TO", "PERMISSION", "REGISTRY", "CRATES", "EXPIRES"],
        rows,
    )
}

pub(super) fn tokens(v: &Value) -> String {
    let rows = rows(v, |t| {
        let scope = match t["scopes"].as_array() {
            None => "all of the user's".to_owned(),
            Some(s) => s
                .iter()
                .map(|s| {
                    format!(
                        "{} on {}/{}",
                        text(&s["permission"]),
                        s["registry"].as_str().unwrap_or("*"),
                        text(&s["crates"])
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        let state = if t["revoked_ms"].is_u64() {
            "revoked"
        } else {
            "active"
        };
        vec![
            text(&t["id"]),
            text(&t["user"]),
            text(&t["name"]),
            scope,
            time(&t["expires_ms"]),
            time(&t["last_used_ms"]),
            state.to_owned(),
        ]
    });
    table(
        &[
            "ID",
            "USER",
            "NAME",
            "SCOPE",
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        rows,
    )
}

/// Columns padded to their widest cell.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}
