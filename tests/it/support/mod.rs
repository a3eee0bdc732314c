//! Test harness: the real `cratedock` binary on a loopback port, a fake upstream, and real
//! `cargo` with its own `CARGO_HOME` per project.

pub mod advisories;
pub mod pki;
pub mod publish;
pub mod registry;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use registry::{CrateSpec, build, index_path, sha256_hex};
pub use upstream::{FakeUpstream, Fault, Gate, Target};

/// Installs the process-wide rustls provider the test's HTTP client needs.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn http_client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// The `cratedock` binary running as a child process.
pub struct Cratedock {
    /// The port of the plain listener, read from the log (cratedock binds port 0).
    pub port: u16,
    /// The port of the HTTPS listener, when the configuration has one on port 0.
    pub tls_port: Option<u16>,
    pub data_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Mirror settings for the test's `crates-io` registry, as TOML lines.
pub fn mirror_config(upstream: &str, extra: &str) -> String {
    config_with(upstream, "", &format!("retries = 0\n{extra}"))
}

/// A configuration with `cache` lines in `[cache]` and `registry` lines (no retries unless
/// given) in the test's `crates-io` mirror.
pub fn config_with(upstream: &str, cache: &str, registry: &str) -> String {
    let cache = if cache.contains("coalesce_wait_ms") {
        cache.to_owned()
    } else {
        format!("coalesce_wait_ms = 20000\n{cache}")
    };
    format!(
        "[cache]\n{cache}\n\n[registries.crates-io]\nkind = \"mirror\"\nupstream = \"{upstream}\"\n{registry}\n"
    )
}

/// The `detail` of a cargo-shaped error body (`{"errors":[{"detail":...}]}`).
pub async fn detail(r: reqwest::Response) -> String {
    let body: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.unwrap()).expect("errors are JSON");
    body["errors"][0]["detail"]
        .as_str()
        .expect("cargo's error shape")
        .to_owned()
}

/// Waits until `check` holds, polling; fails the test after 30 s.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cratedock {
    /// Starts cratedock with `config` (TOML) and a new data folder.
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// Starts with extra environment variables (e.g. proxy settings).
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Self::start_in(config, dir, data_dir, env).await
    }

    /// Starts with its data folder on a tmpfs of `bytes` in a mount namespace of its own
    /// (`unshare -rm`); `None` where this machine does not permit that (the caller skips).
    /// `data_dir` then reads the folder through `/proc/PID/root`.
    pub async fn start_on_tmpfs(config: &str, bytes: u64) -> Option<Self> {
        let probe = Command::new("unshare")
            .args(["-rm", "true"])
            .stdin(Stdio::null())
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED: `unshare -rm` is not permitted here, so no tmpfs can be mounted");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("data");
        std::fs::create_dir_all(&inner).unwrap();
        let mount = format!("mount -t tmpfs -o size={bytes} tmpfs \"$0\" && exec \"$@\"");
        let prefix = [
            "unshare".to_owned(),
            "-rm".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            mount,
            inner.display().to_string(),
        ];
        let mut me = Self::start_in_with(config, dir, inner.clone(), &[], &prefix).await;
        let pid = me.child.as_ref().expect("running").id();
        me.data_dir = PathBuf::from(format!("/proc/{pid}/root{}", inner.display()));
        Some(me)
    }

    async fn start_in(
        config: &str,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_in_with(config, dir, data_dir, env, &[]).await
    }

    /// Starts `prefix... cratedock serve ...`.
    async fn start_in_with(
        config: &str,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        env: &[(&str, &str)],
        prefix: &[String],
    ) -> Self {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let config_path = dir.path().join("cratedock.toml");
        std::fs::write(&config_path, config).unwrap();
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = dir.path().join(format!("cratedock-{n}.log"));
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_cratedock"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_cratedock")),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "cratedock=debug,info")
            // Tests stop cratedock often; the one that checks the delay sets its own.
            .env("CRATEDOCK__SERVER__SHUTDOWN_DELAY_MS", "0")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut me = Self {
            port: 0,
            tls_port: None,
            data_dir,
            child: Some(child),
            log,
            _dir: dir,
        };
        me.port = me.wait_for_listener("listening (HTTP)").await;
        if config.contains("[server.tls]") {
            me.tls_port = Some(me.wait_for_listener("listening (HTTPS)").await);
        }
        me.wait_ready().await;
        me
    }

    /// The port of the listener that the log line `what` names (`... what addr=IP:PORT`).
    async fn wait_for_listener(&mut self, what: &str) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            let port = log
                .lines()
                .filter_map(|l| {
                    l.split_once(what)?
                        .1
                        .split_once("addr=")?
                        .1
                        .split_whitespace()
                        .next()
                })
                .filter_map(|addr| addr.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port())
                .next();
            if let Some(p) = port {
                return p;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "cratedock logged no `{what}` line (exit: {exited:?}):\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&self) {
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/health/ready")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cratedock did not become ready:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A GET of one of cratedock's paths.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        http_client().get(self.url(path)).send().await.unwrap()
    }

    pub fn index_url(&self) -> String {
        self.url("/crates-io/index/")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        http_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one metric series, matched by name and a label substring (0 when absent).
    /// Waits until no upstream fetch, nor the disk write after one, is under way.
    pub async fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric("fetches_in_flight", "").await != 0.0 {
            assert!(
                Instant::now() < deadline,
                "fetches still under way after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| {
                let series = format!("cratedock_{name}");
                l.strip_prefix(&series)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    && l.contains(labels)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sends a signal (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "cratedock did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops (SIGTERM) and starts again with the same data folder and config.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        self.start_again().await
    }

    /// Stops with SIGTERM; the exit must be clean.
    pub async fn stop(&mut self) {
        let status = self.terminate().await;
        assert!(status.success(), "exit status {status}\n{}", self.log());
    }

    /// The configuration file the server runs with.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("cratedock.toml")
    }

    /// `cratedock ARGS --config <this config> --data-dir <this data folder>` (offline commands).
    pub fn offline(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cratedock"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts a stopped server again with the same data folder and config.
    pub async fn start_again(mut self) -> Self {
        let config = std::fs::read_to_string(self._dir.path().join("cratedock.toml")).unwrap();
        let data_dir = self.data_dir.clone();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Self::start_in(&config, dir, data_dir, &[]).await
    }

    /// `.crate` files in the data folder.
    pub fn stored_crates(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else if path.extension().is_some_and(|x| x == "crate") {
                        out.push(path);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir.join("crates"), &mut out);
        out
    }
}

impl Drop for Cratedock {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fake upstream holding `serde 1.0.0`, and cratedock mirroring it as `crates-io` with the
/// mirror settings `extra` (TOML lines).
pub async fn one_crate_mirror(extra: &str) -> (FakeUpstream, Cratedock) {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&mirror_config(&up.index_url(), extra)).await;
    (up, cd)
}

/// The name the authenticated cargo projects give cratedock's mirror in `[registries]`.
pub const MIRROR: &str = "mirror";

impl Cratedock {
    /// The first admin's token file.
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.admin_token_file())
            .expect("the first admin's token file")
            .trim()
            .to_owned()
    }

    /// Runs `cratedock admin ARGS` against this server with the first admin's token file.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.admin_as(&self.admin_token_file(), args)
    }

    /// Runs `cratedock admin ARGS` with the token in `token_file`; fails the test on failure.
    pub fn admin_as(&self, token_file: &Path, args: &[&str]) -> Output {
        let out = self.admin_command(token_file, args);
        assert!(
            out.status.success(),
            "cratedock admin {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `cratedock admin ARGS` with the token in `token_file`, whatever the outcome.
    pub fn admin_command(&self, token_file: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cratedock"))
            .arg("admin")
            .args(args)
            .env("CRATEDOCK_URL", self.url(""))
            .env("CRATEDOCK_TOKEN_FILE", token_file)
            .env_remove("CRATEDOCK_TOKEN")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `cratedock ARGS`, a client of this server (`prefetch`, `export`, `import`, ...),
    /// with `CRATEDOCK_URL` and the first admin's token file, whatever the outcome.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cratedock"))
            .args(args)
            .env("CRATEDOCK_URL", self.url(""))
            .env("CRATEDOCK_TOKEN_FILE", self.admin_token_file())
            .env_remove("CRATEDOCK_TOKEN")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// An admin API call with the first admin's token.
    pub async fn admin_api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> reqwest::Response {
        let mut req = http_client()
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {}", self.admin_token()));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        req.send().await.unwrap()
    }
}

/// A cargo project with its own `CARGO_HOME` whose crates.io is replaced by cratedock.
pub struct CargoProject {
    dir: tempfile::TempDir,
}

impl CargoProject {
    pub fn new(index_url: &str, deps: &[(&str, &str)]) -> Self {
        Self::with_config(index_url, deps, "")
    }

    /// A project whose cargo config has `extra` appended (e.g. `[http]` settings).
    pub fn with_config(index_url: &str, deps: &[(&str, &str)], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("app/src")).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        let mut manifest = String::from(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
        );
        for (name, req) in deps {
            manifest.push_str(&format!("{name} = \"{req}\"\n"));
        }
        std::fs::write(root.join("app/Cargo.toml"), manifest).unwrap();
        std::fs::write(root.join("app/src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(
            root.join("home/config.toml"),
            format!(
                "[source.crates-io]\nreplace-with = \"cratedock\"\n\n[source.cratedock]\nregistry = \"sparse+{index_url}\"\n\n[net]\nretry = 0\n\n{extra}\n"
            ),
        )
        .unwrap();
        Self { dir }
    }

    /// A project whose crates.io is replaced by cratedock's mirror declared as the registry
    /// [`MIRROR`], so that cargo sends tokens for it (with the `cargo:token` provider).
    pub fn authenticated(index_url: &str, deps: &[(&str, &str)]) -> Self {
        let me = Self::new(index_url, deps);
        std::fs::write(
            me.dir.path().join("home/config.toml"),
            format!(
                "[source.crates-io]\nreplace-with = \"{MIRROR}\"\n\n[registries.{MIRROR}]\nindex = \"sparse+{index_url}\"\n\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n[net]\nretry = 0\n"
            ),
        )
        .unwrap();
        me
    }

    /// Runs cargo with extra environment variables and `stdin` as its input.
    pub fn cargo_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .env_remove("CARGO_REGISTRIES_MIRROR_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// A second project sharing nothing with this one but its lockfile.
    pub fn fresh_home(&self, index_url: &str) -> CargoProject {
        let other = CargoProject::new(index_url, &[]);
        for f in ["Cargo.toml", "Cargo.lock"] {
            let from = self.dir.path().join("app").join(f);
            if from.exists() {
                std::fs::copy(from, other.dir.path().join("app").join(f)).unwrap();
            }
        }
        other
    }

    pub fn cargo(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs cargo on a pseudo-terminal (util-linux `script`), as a person at a terminal does,
    /// typing `input`; `None` when there is no `script` command.
    pub fn cargo_on_terminal(&self, args: &[&str], input: &str) -> Option<Output> {
        use std::io::Write;
        Command::new("script").arg("--version").output().ok()?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let line = std::iter::once(cargo.as_str())
            .chain(args.iter().copied())
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = self
            .command_for("script", &["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        Some(child.wait_with_output().unwrap())
    }

    /// cargo in this project, with its own `CARGO_HOME` and nothing from the environment that
    /// would change what it does.
    fn command(&self, args: &[&str]) -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        self.command_for(&cargo, args)
    }

    /// `program` (cargo, or something that runs it) with this project's cargo environment.
    fn command_for(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.dir.path().join("app"))
            .env("CARGO_HOME", self.dir.path().join("home"))
            .env("CARGO_TARGET_DIR", self.dir.path().join("target"))
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_HTTP_TIMEOUT", "30")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy");
        command
    }

    /// Runs cargo and fails the test with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cargo(args);
        assert!(
            out.status.success(),
            "cargo {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn lockfile(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("app/Cargo.lock")).unwrap_or_default()
    }
}

/// The name of the test's private registry, in cratedock's configuration and in the cargo
/// configuration of [`CargoProject::with_private`].
pub const PRIVATE: &str = "internal";

/// A configuration with the test's `crates-io` mirror of `upstream` standing for crates.io (no
/// names reserved) and a private registry [`PRIVATE`] with the extra TOML lines `private`.
pub fn private_config(upstream: &str, private: &str) -> String {
    format!(
        "{}\n[registries.{PRIVATE}]\nkind = \"private\"\n{private}\n",
        mirror_config(upstream, "crates_io = true\nreserved_names = []")
    )
}

impl Cratedock {
    /// The sparse index URL of cratedock's registry `registry` (without `sparse+`).
    pub fn registry_index_url(&self, registry: &str) -> String {
        self.url(&format!("/{registry}/index/"))
    }
}

impl CargoProject {
    /// A project with no manifest yet (the test writes it with [`CargoProject::write`]) whose
    /// crates.io is cratedock's mirror, declared as the registry [`MIRROR`], and which knows
    /// cratedock's private registry as [`PRIVATE`]; tokens come from the `cargo:token` provider.
    pub fn with_private(cd: &Cratedock) -> Self {
        let me = Self::new(&cd.index_url(), &[]);
        let app = me.root();
        std::fs::remove_file(app.join("Cargo.toml")).unwrap();
        std::fs::remove_dir_all(app.join("src")).unwrap();
        std::fs::write(
            me.dir.path().join("home/config.toml"),
            format!(
                "[source.crates-io]\nreplace-with = \"{MIRROR}\"\n\n[registries.{MIRROR}]\nindex = \"sparse+{}\"\n\n[registries.{PRIVATE}]\nindex = \"sparse+{}\"\n\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n[net]\nretry = 0\n",
                cd.index_url(),
                cd.registry_index_url(PRIVATE)
            ),
        )
        .unwrap();
        me
    }

    /// The project folder (where cargo runs).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    /// Writes `contents` to `path` in the project folder, making the folders it needs.
    pub fn write(&self, path: &str, contents: &str) {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// Runs cargo with `token`, if any, as the private registry's token in the environment
    /// (and no other registry token from the environment).
    pub fn cargo_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut command = self.command(args);
        command
            .env_remove("CARGO_REGISTRIES_MIRROR_TOKEN")
            .env_remove("CARGO_REGISTRIES_INTERNAL_TOKEN")
            .env_remove("CARGO_REGISTRY_TOKEN")
            .stdin(Stdio::null());
        if let Some(t) = token {
            command.env("CARGO_REGISTRIES_INTERNAL_TOKEN", t);
        }
        command.output().unwrap()
    }

    /// Removes the project's target folder (built artifacts and packaged crates).
    pub fn remove_target(&self) {
        let target = self.dir.path().join("target");
        if target.exists() {
            std::fs::remove_dir_all(target).unwrap();
        }
    }
}
