//! Servers a test owns, started as real processes from the system's
//! packages on free loopback ports, in temporary directories, so the test
//! can kill, crash and restart them: [`OwnPostgres`] (and its streaming
//! replica), [`OwnRedis`], [`OwnRedisCluster`] and [`OwnNats`]. Each stops
//! when dropped. A missing binary panics naming the package
//! (`cargo xtask test` installs them); no test passes silently without its
//! server.

use tempfile::TempDir;

/// A Redis server this test owns, so it can stop and restart it.
pub struct OwnRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    binary: std::path::PathBuf,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts `redis-server` on a free loopback port. Panics with
    /// instructions when the binary is missing.
    pub async fn start() -> Self {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!("redis-server is not installed; `cargo xtask test` installs it (apt-get install redis-server)")
            });
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let mut redis = OwnRedis {
            port,
            binary,
            dir,
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (like a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server: {error}"));
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas) this test owns:
/// `redis-server --cluster-enabled yes` on three free loopback ports, joined
/// with `redis-cli --cluster create`, each writing every command to its
/// append-only file before replying. A master can be killed and started
/// again (its slots fail meanwhile; the others keep serving theirs).
pub struct OwnRedisCluster {
    /// The masters' ports on 127.0.0.1.
    pub ports: Vec<u16>,
    binary: std::path::PathBuf,
    dir: TempDir,
    children: Vec<Option<std::process::Child>>,
}

impl OwnRedisCluster {
    /// Starts the three masters and forms the cluster; waits until it
    /// reports `cluster_state:ok`. Panics with instructions when Redis is
    /// missing.
    pub async fn start() -> Self {
        let find = |name: &str| {
            ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
                .iter()
                .map(|dir| std::path::Path::new(dir).join(name))
                .find(|path| path.is_file())
                .unwrap_or_else(|| {
                    panic!("{name} is not installed; `cargo xtask test` installs it (apt-get install redis-server)")
                })
        };
        let binary = find("redis-server");
        let cli = find("redis-cli");
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                std::net::TcpListener::bind(("127.0.0.1", 0))
                    .and_then(|listener| listener.local_addr())
                    .map(|address| address.port())
                    .unwrap_or_else(|error| panic!("no free port: {error}"))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let mut cluster = OwnRedisCluster {
            children: ports.iter().map(|_| None).collect(),
            ports,
            binary,
            dir,
        };
        for node in 0..3 {
            cluster.start_node(node).await;
        }
        let mut create = std::process::Command::new(cli);
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|error| panic!("cannot run redis-cli: {error}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_ok().await;
        cluster
    }

    /// The nodes' URLs, comma-separated: how Annals is told of a cluster.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills master `node` (like a crash).
    pub fn stop_node(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts master `node` (again, with its cluster configuration) and
    /// waits until it accepts connections.
    pub async fn start_node(&mut self, node: usize) {
        self.stop_node(node);
        let port = self.ports[node];
        let node_dir = self.dir.path().join(format!("node-{node}"));
        std::fs::create_dir_all(&node_dir).unwrap_or_else(|error| panic!("node dir: {error}"));
        let child = std::process::Command::new(&self.binary)
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
            // Every write on disk before its reply: a killed master comes
            // back with what it acknowledged.
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server: {error}"));
        self.children[node] = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Waits until every node reports the cluster's state as ok.
    pub async fn wait_until_ok(&self) {
        for _ in 0..400 {
            let ok = self.ports.iter().all(|port| {
                std::net::TcpStream::connect(("127.0.0.1", *port))
                    .and_then(|mut stream| {
                        use std::io::{Read, Write};
                        stream.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
                        stream.write_all(b"CLUSTER INFO\r\n")?;
                        let mut reply = [0_u8; 2048];
                        let read = stream.read(&mut reply)?;
                        Ok(String::from_utf8_lossy(&reply[..read]).contains("cluster_state:ok"))
                    })
                    .unwrap_or(false)
            });
            if ok {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "the Redis Cluster on ports {:?} never reported cluster_state:ok",
            self.ports
        );
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.stop_node(node);
        }
    }
}

/// A NATS server with JetStream this test owns, so it can kill and restart
/// it: `nats-server` from the PATH (Debian's package; `cargo xtask test`
/// installs it), on a free loopback port, its JetStream files in a
/// temporary directory that outlives restarts.
pub struct OwnNats {
    /// Its port on 127.0.0.1.
    pub port: u16,
    binary: std::path::PathBuf,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl OwnNats {
    /// Starts `nats-server -js`. Panics with instructions when the binary
    /// is missing.
    pub async fn start() -> Self {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!("nats-server is not installed; `cargo xtask test` installs it (apt-get install nats-server)")
            });
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let mut nats = OwnNats {
            port,
            binary,
            dir,
            child: None,
        };
        nats.restart().await;
        nats
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory, and
    /// waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start nats-server: {error}"));
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start on port {}", self.port);
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server this test owns, so it can crash and restart it.
/// Uses the system's `initdb`/`pg_ctl` (as the `postgres` user when run as
/// root), in a temporary directory, on a free loopback port.
pub struct OwnPostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: std::path::PathBuf,
    dir: TempDir,
    as_root: bool,
}

impl OwnPostgres {
    /// Initialises and starts a cluster. Panics with instructions when the
    /// server tools are missing.
    pub async fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .find(|dir| dir.join("initdb").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL's server tools are not installed; `cargo xtask test` installs them"
                )
            });
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
        let server = OwnPostgres {
            port,
            bin,
            dir,
            as_root,
        };
        if as_root {
            server.run(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(server.dir.path()),
            );
        }
        let data = server.data();
        server.run(server.pg("initdb").arg("-D").arg(&data).args([
            "-U",
            "annals",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        server.restart().await;
        server
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, program: &str) -> std::process::Command {
        let binary = self.bin.join(program);
        if self.as_root {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            std::process::Command::new(binary)
        }
    }

    fn run(&self, command: &mut std::process::Command) {
        let output = command
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
        assert!(
            output.status.success(),
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("postgres://annals@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts a streaming replica (a hot standby) of this server, copied
    /// with `pg_basebackup -R` on a free port of its own.
    pub async fn start_replica(&self) -> OwnPostgres {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp dir: {error}"));
        let replica = OwnPostgres {
            port,
            bin: self.bin.clone(),
            dir,
            as_root: self.as_root,
        };
        if replica.as_root {
            replica.run(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(replica.dir.path()),
            );
        }
        replica.run(
            replica
                .pg("pg_basebackup")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "annals",
                    "-D",
                ])
                .arg(replica.data())
                .args(["-R", "-X", "stream", "--no-sync"]),
        );
        replica.restart().await;
        replica
    }

    /// Copies `schema` of this server's `postgres` database into `target`'s
    /// with `pg_dump -Fc` and `pg_restore`: a logical backup restored into
    /// another cluster.
    pub fn dump_schema_into(&self, target: &OwnPostgres, schema: &str) {
        let file = self.dir.path().join(format!("{schema}.dump"));
        self.run(
            self.pg("pg_dump")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "annals",
                ])
                .args(["-d", "postgres", "-n", schema, "-Fc", "-f"])
                .arg(&file),
        );
        self.run(
            target
                .pg("pg_restore")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &target.port.to_string(),
                    "-U",
                    "annals",
                ])
                .args(["-d", "postgres"])
                .arg(&file),
        );
    }

    /// Makes the server hand out `count` transaction ids (subtransactions
    /// that write), as a cluster that has run for a while has.
    pub fn use_transaction_ids(&self, count: u32) {
        self.run(
            self.pg("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "annals"])
                .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!(
                    "CREATE TEMPORARY TABLE used_ids (n int); \
                     DO $$ BEGIN FOR i IN 1..{count} LOOP \
                       BEGIN INSERT INTO used_ids VALUES (i); EXCEPTION WHEN others THEN NULL; END; \
                     END LOOP; END $$;"
                )),
        );
    }

    /// Stops the server like a crash (`pg_ctl stop -m immediate`).
    pub fn crash(&self) {
        self.run(self.pg("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn restart(&self) {
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(std::process::Stdio::null())
            .output();
    }
}
