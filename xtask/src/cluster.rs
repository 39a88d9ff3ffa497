//! `cargo xtask services up --cluster`: the deployment topology for a
//! person to try, beside the primary and Redis that `services up` starts: a
//! streaming replica of the primary (`pg_basebackup -R`), a 3-master Redis
//! Cluster and a NATS server with JetStream, all on free loopback ports
//! under `target/annals-services/`. The same topology the deployment test
//! (`examples/iam-example/tests/deployment.rs`) starts for itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::services::{free_port, on_path, redis_command, run};

/// The servers of the cluster topology, running.
pub(crate) struct Cluster {
    /// The replica's port.
    pub(crate) replica_port: u16,
    /// The Redis Cluster masters' ports.
    pub(crate) redis_ports: Vec<u16>,
    /// NATS's port.
    pub(crate) nats_port: u16,
    /// NATS's process id (it has no daemon mode; `down` ends it).
    pub(crate) nats_pid: u32,
}

impl Cluster {
    /// Starts the replica of the primary on `primary_port`, the Redis
    /// Cluster and NATS, their files under `dir`.
    pub(crate) fn start(
        dir: &Path,
        pg_command: &dyn Fn(&str) -> Command,
        primary_port: u16,
    ) -> Result<Cluster> {
        let replica_port = start_replica(dir, pg_command, primary_port)?;
        let redis_ports = start_redis_cluster(dir)?;
        let (nats_port, nats_pid) = start_nats(dir)?;
        Ok(Cluster {
            replica_port,
            redis_ports,
            nats_port,
            nats_pid,
        })
    }

    /// The replica's URL.
    pub(crate) fn replica_url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{database}",
            self.replica_port
        )
    }

    /// The masters' URLs, comma-separated (how Annals is told of a cluster).
    pub(crate) fn redis_url(&self) -> String {
        self.redis_ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// NATS's URL.
    pub(crate) fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    /// Stops the replica, the masters and NATS.
    pub(crate) fn stop(&self, dir: &Path, pg_command: &dyn Fn(&str) -> Command) {
        if let Err(error) = run(pg_command("pg_ctl")
            .arg("-D")
            .arg(replica_data(dir))
            .args(["-m", "fast", "-w", "stop"]))
        {
            eprintln!("xtask: stopping the replica: {error:#}");
        }
        for port in &self.redis_ports {
            let _ = redis_command(*port, "SHUTDOWN NOSAVE");
        }
        let _ = Command::new("kill")
            .arg(self.nats_pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The lines `services up` records for `services down`.
    pub(crate) fn state(&self) -> String {
        format!(
            "PG_REPLICA_PORT={}\nREDIS_CLUSTER_PORTS={}\nNATS_PORT={}\nNATS_PID={}\n",
            self.replica_port,
            self.redis_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.nats_port,
            self.nats_pid
        )
    }

    /// The cluster recorded in `state`, if any.
    pub(crate) fn from_state(value: &dyn Fn(&str) -> Option<String>) -> Result<Option<Cluster>> {
        let Some(replica_port) = value("PG_REPLICA_PORT") else {
            return Ok(None);
        };
        let missing = |key: &str| format!("the services' state has no {key}");
        Ok(Some(Cluster {
            replica_port: replica_port.parse()?,
            redis_ports: value("REDIS_CLUSTER_PORTS")
                .with_context(|| missing("REDIS_CLUSTER_PORTS"))?
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()?,
            nats_port: value("NATS_PORT")
                .with_context(|| missing("NATS_PORT"))?
                .parse()?,
            nats_pid: value("NATS_PID")
                .with_context(|| missing("NATS_PID"))?
                .parse()?,
        }))
    }
}

fn replica_data(dir: &Path) -> PathBuf {
    dir.join("pgdata-replica")
}

fn start_replica(
    dir: &Path,
    pg_command: &dyn Fn(&str) -> Command,
    primary_port: u16,
) -> Result<u16> {
    let port = free_port()?;
    let data = replica_data(dir);
    run(pg_command("pg_basebackup")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port.to_string(),
            "-U",
            "annals",
            "-D",
        ])
        .arg(&data)
        .args(["-R", "-X", "stream", "--no-sync"]))
    .context("pg_basebackup could not copy the primary")?;
    let options = format!(
        "-p {port} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off -c max_connections=300",
        dir.join("pgsocket").display()
    );
    let log = dir.join("postgres-replica.log");
    run(pg_command("pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o", &options, "start"]))
    .with_context(|| format!("the replica did not start; see {}", log.display()))?;
    Ok(port)
}

fn start_redis_cluster(dir: &Path) -> Result<Vec<u16>> {
    let server = on_path("redis-server").context("redis-server is not installed")?;
    let cli = on_path("redis-cli").context("redis-cli is not installed")?;
    let ports = (0..3).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
    for (node, port) in ports.iter().enumerate() {
        let node_dir = dir.join(format!("redis-cluster-{node}"));
        std::fs::create_dir_all(&node_dir)?;
        run(Command::new(&server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args([
                "--cluster-node-timeout",
                "2000",
                "--cluster-require-full-coverage",
                "no",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "yes"])
            .arg("--dir")
            .arg(&node_dir)
            .arg("--pidfile")
            .arg(node_dir.join("redis.pid"))
            .arg("--logfile")
            .arg(node_dir.join("redis.log")))
        .context("a Redis Cluster master did not start")?;
        wait_for(&format!("Redis on port {port}"), || {
            redis_command(*port, "PING").is_ok_and(|reply| reply.starts_with("+PONG"))
        })?;
    }
    let mut create = Command::new(cli);
    create.args(["--cluster", "create"]);
    for port in &ports {
        create.arg(format!("127.0.0.1:{port}"));
    }
    run(create.args(["--cluster-replicas", "0", "--cluster-yes"]))
        .context("redis-cli --cluster create failed")?;
    wait_for("the Redis Cluster's state ok", || {
        ports.iter().all(|port| {
            redis_command(*port, "CLUSTER INFO")
                .is_ok_and(|reply| reply.contains("cluster_state:ok"))
        })
    })?;
    Ok(ports)
}

fn start_nats(dir: &Path) -> Result<(u16, u32)> {
    let server = on_path("nats-server").context("nats-server is not installed")?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("nats.log"))?;
    let child = Command::new(server)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("nats"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("nats-server did not start")?;
    wait_for(&format!("NATS on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok((port, child.id()))
}

fn wait_for(what: &str, ready: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what}: not ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
