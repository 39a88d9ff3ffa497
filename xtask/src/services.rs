//! Throwaway PostgreSQL and Redis servers on free loopback ports.
//!
//! PostgreSQL comes from the system's `initdb`/`pg_ctl` (found with
//! `pg_config --bindir` or under `/usr/lib/postgresql/*/bin`), Redis from
//! `redis-server` on the PATH. PgBouncer, which the tests start themselves
//! in front of PostgreSQL, and `nats-server`, which the JetStream relay's
//! tests start themselves, must be installed too. Missing ones are installed
//! with apt-get when running as root, unless `ANNALS_NO_INSTALL=1`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::Cluster;

/// The variable the tests read the PostgreSQL URL from.
pub(crate) const DATABASE_URL_VAR: &str = "ANNALS_TEST_DATABASE_URL";
/// The variable the tests read the Redis URL from.
pub(crate) const REDIS_URL_VAR: &str = "ANNALS_TEST_REDIS_URL";

const PG_USER: &str = "annals";
const PG_DATABASE: &str = "annals";

/// Running servers; stopped (and their directory removed, if owned) on drop.
pub(crate) struct Services {
    dir: PathBuf,
    pg_bin: PathBuf,
    pg_port: u16,
    redis_port: u16,
    /// The deployment topology's other servers (`services up --cluster`).
    cluster: Option<Cluster>,
    /// Whether dropping stops the servers and removes `dir`.
    owned: bool,
}

impl Services {
    /// Starts both servers with their files under `dir`.
    pub(crate) fn start(dir: &Path) -> Result<Services> {
        let pg_bin = find_postgres()?;
        let redis = find_redis()?;
        find_pgbouncer()?;
        find_nats()?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut services = Services {
            dir: dir.to_owned(),
            pg_bin,
            pg_port: free_port()?,
            redis_port: free_port()?,
            cluster: None,
            owned: true,
        };
        services.start_postgres()?;
        services.start_redis(&redis)?;
        Ok(services)
    }

    pub(crate) fn database_url(&self) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/{PG_DATABASE}",
            self.pg_port
        )
    }

    pub(crate) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    fn start_postgres(&mut self) -> Result<()> {
        let data = self.dir.join("pgdata");
        let socket_dir = self.dir.join("pgsocket");
        std::fs::create_dir_all(&socket_dir)?;
        let as_root = is_root();
        if as_root {
            // PostgreSQL refuses to run as root: hand the directory to `postgres`.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir))?;
        }
        run(self
            .pg_command("initdb", as_root)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]))
        .context("initdb failed")?;
        let server_options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.pg_port,
            socket_dir.display()
        );
        run(self
            .pg_command("pg_ctl", as_root)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &server_options, "start"]))
        .with_context(|| {
            format!(
                "PostgreSQL did not start; see {}",
                self.dir.join("postgres.log").display()
            )
        })?;
        run(self.pg_command("createdb", as_root).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.pg_port.to_string(),
            "-U",
            PG_USER,
            PG_DATABASE,
        ]))
        .context("createdb failed")?;
        Ok(())
    }

    fn stop_postgres(&self) -> Result<()> {
        run(self
            .pg_command("pg_ctl", is_root())
            .arg("-D")
            .arg(self.dir.join("pgdata"))
            .args(["-m", "fast", "-w", "stop"]))
    }

    fn pg_command(&self, program: &str, as_root: bool) -> Command {
        let binary = self.pg_bin.join(program);
        if as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn start_redis(&mut self, redis: &Path) -> Result<()> {
        let pidfile = self.dir.join("redis.pid");
        run(Command::new(redis)
            .args([
                "--port",
                &self.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--logfile")
            .arg(self.dir.join("redis.log")))
        .context("redis-server did not start")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match redis_command(self.redis_port, "PING") {
                Ok(reply) if reply.starts_with("+PONG") => return Ok(()),
                _ if Instant::now() > deadline => bail!(
                    "Redis did not answer PING on port {} within 30 s; see {}",
                    self.redis_port,
                    self.dir.join("redis.log").display()
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn stop_redis(&self) -> Result<()> {
        // SHUTDOWN closes the connection instead of replying.
        let _ = redis_command(self.redis_port, "SHUTDOWN NOSAVE");
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_command(self.redis_port, "PING").is_ok() {
            if Instant::now() > deadline {
                bail!("Redis on port {} did not shut down", self.redis_port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn stop(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.stop(&self.dir, &|program| self.pg_command(program, is_root()));
        }
        if let Err(error) = self.stop_postgres() {
            eprintln!("xtask: stopping PostgreSQL: {error:#}");
        }
        if let Err(error) = self.stop_redis() {
            eprintln!("xtask: stopping Redis: {error:#}");
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if self.owned {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends one inline command and returns the first reply line.
pub(crate) fn redis_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buffer = [0_u8; 64];
    let read = stream.read(&mut buffer)?;
    if read == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} exited with {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn find_postgres() -> Result<PathBuf> {
    if let Some(bin) = postgres_bindir() {
        return Ok(bin);
    }
    install("postgresql", &["postgresql"])?;
    postgres_bindir().context("PostgreSQL was installed but initdb and pg_ctl are still not found")
}

fn postgres_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| has_tools(dir)) {
        return Some(dir);
    }
    // Debian keeps the server tools off the PATH, one folder per major version.
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir)
}

fn find_redis() -> Result<PathBuf> {
    if let Some(path) = on_path("redis-server") {
        return Ok(path);
    }
    install("redis-server", &["redis-server"])?;
    on_path("redis-server").context("redis-server was installed but is still not on the PATH")
}

/// The tests run their own PgBouncer (transaction pooling) in front of the
/// test server; it only needs to be installed.
fn find_pgbouncer() -> Result<PathBuf> {
    if let Some(path) = on_path("pgbouncer") {
        return Ok(path);
    }
    install("pgbouncer", &["pgbouncer"])?;
    // The package starts a system-wide instance on port 6432; the tests do
    // not use it.
    let _ = Command::new("service")
        .args(["pgbouncer", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    on_path("pgbouncer").context("pgbouncer was installed but is still not on the PATH")
}

/// The JetStream relay's tests run their own `nats-server -js` (to kill
/// and restart it); it only needs to be installed.
fn find_nats() -> Result<PathBuf> {
    if let Some(path) = on_path("nats-server") {
        return Ok(path);
    }
    install("nats-server", &["nats-server"])?;
    // A package that starts a system-wide instance would hold port 4222;
    // the tests use free ports of their own, but nothing needs it running.
    let _ = Command::new("service")
        .args(["nats-server", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    on_path("nats-server").context("nats-server was installed but is still not on the PATH")
}

/// The console's browser tests drive Debian's Chromium through
/// ChromeDriver; they only need both installed.
pub(crate) fn ensure_browser() -> Result<()> {
    if on_path("chromium").is_some() && on_path("chromedriver").is_some() {
        return Ok(());
    }
    install(
        "Chromium and ChromeDriver",
        &["chromium", "chromium-driver"],
    )?;
    on_path("chromedriver")
        .map(drop)
        .context("chromium-driver was installed but chromedriver is still not on the PATH")
}

pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn install(what: &str, packages: &[&str]) -> Result<()> {
    let how = format!(
        "install it (apt-get install {}) and run again",
        packages.join(" ")
    );
    if std::env::var_os("ANNALS_NO_INSTALL").is_some_and(|value| value == "1") {
        bail!("{what} is not installed and ANNALS_NO_INSTALL=1 forbids installing it: {how}");
    }
    if !is_root() || on_path("apt-get").is_none() {
        bail!("{what} is not installed, and installing needs root and apt-get: {how}");
    }
    println!(
        "xtask: {what} is missing; installing {} with apt-get",
        packages.join(" ")
    );
    let quiet_apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    quiet_apt(&["update", "-qq"]).context("apt-get update failed")?;
    let mut install_args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install_args.extend_from_slice(packages);
    quiet_apt(&install_args).with_context(|| format!("apt-get could not install {what}"))
}

/// Where `services up` keeps its servers.
fn persistent_dir() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Ok(workspace.join("target").join("annals-services"))
}

/// The record `services up` leaves for `services down`.
fn state_file(dir: &Path) -> PathBuf {
    dir.join("services.env")
}

/// `services up`, and with `cluster` the deployment topology: a replica,
/// a Redis Cluster and NATS beside them.
pub(crate) fn up(cluster: bool) -> Result<()> {
    let dir = persistent_dir()?;
    if state_file(&dir).exists() {
        bail!(
            "services are already up (see {}); run `cargo xtask services down` first",
            state_file(&dir).display()
        );
    }
    let mut services = Services::start(&dir)?;
    if cluster {
        let started = Cluster::start(
            &dir,
            &|program| services.pg_command(program, is_root()),
            services.pg_port,
        )?;
        services.cluster = Some(started);
    }
    let mut state = format!(
        "{DATABASE_URL_VAR}={}\n{REDIS_URL_VAR}={}\nPG_BIN={}\nPG_PORT={}\nREDIS_PORT={}\n",
        services.database_url(),
        services.redis_url(),
        services.pg_bin.display(),
        services.pg_port,
        services.redis_port
    );
    if let Some(cluster) = &services.cluster {
        state.push_str(&cluster.state());
    }
    std::fs::write(state_file(&dir), state)?;
    // Written down: from here on the servers outlive this command.
    services.owned = false;
    println!("PostgreSQL: {}", services.database_url());
    println!("Redis:      {}", services.redis_url());
    if let Some(cluster) = &services.cluster {
        print_cluster(&services, cluster);
        return Ok(());
    }
    println!();
    println!(
        "Try: DATABASE_URL={} REDIS_URL={} cargo run -p iam-example",
        services.database_url(),
        services.redis_url()
    );
    println!(
        "Tests: {DATABASE_URL_VAR}={} {REDIS_URL_VAR}={} cargo test --workspace",
        services.database_url(),
        services.redis_url()
    );
    println!("Stop: cargo xtask services down");
    Ok(())
}

fn print_cluster(services: &Services, cluster: &Cluster) {
    let replica = cluster.replica_url(PG_USER, PG_DATABASE);
    println!("Replica:    {replica} (hot standby of the PostgreSQL above)");
    println!("Redis Cluster: {}", cluster.redis_url());
    println!("NATS:       {} (JetStream)", cluster.nats_url());
    println!();
    println!("Try three instances of the IAM service on them:");
    println!("  export ANNALS_MASTER_KEY=$(openssl rand -base64 32)");
    println!("  cargo build -p iam-example");
    println!("  for n in 1 2 3; do");
    println!(
        "    target/debug/iam-example serve --listen 127.0.0.1:808$n --instance iam-$n \\\n      \
         --database-url {} --replica-url {replica} \\\n      \
         --redis-url {} --nats-url {} &",
        services.database_url(),
        cluster.redis_url(),
        cluster.nats_url()
    );
    println!("  done");
    println!(
        "  curl -X POST localhost:8081/tenants -H 'X-Actor: me' -d '{{\"id\":\"acme\",\"name\":\"Acme\"}}'"
    );
    println!("  curl localhost:8082/health");
    println!("Stop: kill the instances, then cargo xtask services down");
}

fn read_state(dir: &Path) -> Result<Option<Services>> {
    let Ok(text) = std::fs::read_to_string(state_file(dir)) else {
        return Ok(None);
    };
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .with_context(|| format!("{} has no {key}", state_file(dir).display()))
    };
    let optional = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    };
    Ok(Some(Services {
        dir: dir.to_owned(),
        pg_bin: PathBuf::from(value("PG_BIN")?),
        pg_port: value("PG_PORT")?.parse()?,
        redis_port: value("REDIS_PORT")?.parse()?,
        cluster: Cluster::from_state(&optional)?,
        owned: false,
    }))
}

pub(crate) fn down() -> Result<()> {
    let dir = persistent_dir()?;
    let Some(services) = read_state(&dir)? else {
        println!("no services are up");
        return Ok(());
    };
    services.stop();
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    println!("services stopped");
    Ok(())
}

pub(crate) fn status() -> Result<()> {
    let dir = persistent_dir()?;
    let Some(services) = read_state(&dir)? else {
        println!("no services are up");
        return Ok(());
    };
    let redis = redis_command(services.redis_port, "PING").is_ok();
    let postgres = TcpStream::connect(("127.0.0.1", services.pg_port)).is_ok();
    println!(
        "PostgreSQL {} ({})",
        if postgres { "up" } else { "DOWN" },
        services.database_url()
    );
    println!(
        "Redis      {} ({})",
        if redis { "up" } else { "DOWN" },
        services.redis_url()
    );
    if let Some(cluster) = &services.cluster {
        let replica = TcpStream::connect(("127.0.0.1", cluster.replica_port)).is_ok();
        let masters = cluster
            .redis_ports
            .iter()
            .filter(|port| redis_command(**port, "PING").is_ok())
            .count();
        let nats = TcpStream::connect(("127.0.0.1", cluster.nats_port)).is_ok();
        let up = |ok: bool| if ok { "up" } else { "DOWN" };
        println!(
            "Replica    {} ({})",
            up(replica),
            cluster.replica_url(PG_USER, PG_DATABASE)
        );
        println!(
            "Redis Cluster {masters} of 3 masters up ({})",
            cluster.redis_url()
        );
        println!("NATS       {} ({})", up(nats), cluster.nats_url());
    }
    Ok(())
}
