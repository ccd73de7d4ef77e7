//! Servers a test starts die with the test: a test driver killed with SIGKILL (a CI timeout,
//! a developer's Ctrl-\) runs no `Drop`, and would leave `zvon` and `redis-server` processes
//! holding ports and CPU on a machine shared with other runs.
//!
//! Linux's parent-death signal is tied to the *thread* that spawned the child, not to the
//! process: a child spawned from a thread that exits is killed then. The harness spawns from
//! the test's own thread or a tokio worker thread, which live as long as the test; never
//! spawn through `spawn_blocking` (its threads exit when idle).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd`'s process receive SIGKILL when the thread that spawns it dies (with the test
/// process, whatever kills it).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (prctl,
    // getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl, and then no signal comes.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        // The spawning thread stands in for a killed test driver: it ends, and the child
        // (which would sleep for a minute) must be killed by the kernel.
        let mut child = std::thread::spawn(|| {
            die_with_parent(Command::new("sleep").arg("60"))
                .spawn()
                .expect("spawn sleep")
        })
        .join()
        .expect("spawning thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child outlived its parent thread by 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    #[test]
    fn without_it_the_child_outlives_the_thread() {
        // The control: the same child spawned plainly keeps running.
        let mut child = std::thread::spawn(|| Command::new("sleep").arg("60").spawn().unwrap())
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "the plain child died");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
