//! The first admin: on a start with no `admin-token` file and no enabled admin holding a live
//! token (a first start, or every admin locked out), cratedock creates an admin user and writes
//! its token to `{data_dir}/admin-token` (mode 0600).
//!
//! The rule this module keeps: the file is written once and never rewritten, and the token is
//! never logged. The token goes to `admin-token.new` first, then the user and token are
//! stored in one call, then the file is renamed into place; a crash in between is finished on
//! the next start.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::admin::{Context, entry};
use super::{Auth, PlainToken, token::random_id};
use crate::store::{StoreError, TokenRecord, User, now_ms};

pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Creates the first admin when there is none; returns the token file's path when it wrote
/// one.
pub async fn first_admin(auth: &Auth, data_dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    let file = data_dir.join(ADMIN_TOKEN_FILE);
    let pending = data_dir.join(format!("{ADMIN_TOKEN_FILE}.new"));
    if let Ok(text) = std::fs::read_to_string(&pending) {
        // A start that stopped between storing the admin (with its audit records) and
        // renaming the file.
        let stored = match PlainToken::parse(&text) {
            Some(t) => auth.store().token_by_hash(&t.hash().hex()).await?.is_some(),
            None => false,
        };
        if stored && !file.exists() {
            std::fs::rename(&pending, &file)?;
            sync_dir(data_dir)?;
            return Ok(Some(file));
        }
        std::fs::remove_file(&pending)?;
    }
    if file.exists() {
        return Ok(None);
    }
    let users = auth.store().users().await?;
    let login = (1..)
        .map(|n| match n {
            1 => "admin".to_owned(),
            n => format!("admin-{n}"),
        })
        .find(|l| users.iter().all(|u| u.login != *l))
        .expect("an unused login");
    let token = PlainToken::generate();
    let now = now_ms();
    let user = User {
        login: login.clone(),
        name: "first admin (created at start-up)".into(),
        email: String::new(),
        admin: true,
        disabled: false,
        created_ms: now,
    };
    let record = TokenRecord {
        id: random_id(8),
        hash: token.hash().hex(),
        name: "first admin".into(),
        user: login.clone(),
        scopes: None,
        expires_ms: None,
        revoked_ms: None,
        created_ms: now,
        last_used_ms: None,
    };
    let ctx = Context::system();
    let audit = [
        entry(&ctx, "user.create", None, &login),
        entry(
            &ctx,
            "token.create",
            None,
            &format!("{} of {login}", record.id),
        ),
    ];
    write_secret(&pending, token.expose())?;
    if !auth
        .store()
        .create_first_admin(&user, &record, now, &audit)
        .await?
    {
        // An enabled admin can still sign in: nothing to do.
        std::fs::remove_file(&pending)?;
        return Ok(None);
    }
    std::fs::rename(&pending, &file)?;
    sync_dir(data_dir)?;
    Ok(Some(file))
}

/// Writes `secret` to a new file readable by its owner only, durably.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
