//! A throwaway `redis-server` per test: own port, no persistence, killed by PID on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRedis {
    child: Child,
    pub port: u16,
}

impl TestRedis {
    /// Starts a server on a free port. Panics (fails the test) when `redis-server` is not
    /// installed: these tests are the only check of the Redis code, skipping would hide that.
    pub fn start() -> TestRedis {
        // Another test may grab the port between our probe and the server's bind: retry.
        for _ in 0..5 {
            let port = free_port();
            if let Some(redis) = Self::try_start_on(port) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server on `port`, e.g. again after [`TestRedis::kill`].
    pub fn start_on(port: u16) -> TestRedis {
        Self::try_start_on(port).unwrap_or_else(|| panic!("redis-server did not start on {port}"))
    }

    fn try_start_on(port: u16) -> Option<TestRedis> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--bind", "127.0.0.1"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; the cluster registry tests need it \
                 (Debian: apt-get install -y redis-server)"
            ),
            Err(err) => panic!("cannot run redis-server: {err}"),
        };
        let mut redis = TestRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = redis.child.try_wait() {
                return None; // exited: most likely the port was taken
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None // dropped: killed
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL by PID), like a crash.
    pub fn kill(mut self) -> u16 {
        self.stop();
        self.port
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A raw connection for tests that plant garbage or inspect keys behind the registry.
pub async fn raw(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}
