//! Child processes that never outlive their parent.
//!
//! Every server the testbed starts is a [`Child`]: it runs in its own process group, receives
//! SIGKILL if the process that started it dies (Linux `PR_SET_PDEATHSIG`), and is killed with
//! its whole group when dropped. The death signal is tied to the *thread* that spawned the child,
//! so children are spawned from one long-lived spawner thread, never from a short-lived runtime
//! worker.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, mpsc::Sender<io::Result<std::process::Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the testbed spawner thread");
        Mutex::new(tx)
    })
}

/// A running child process (and its process group), killed on drop.
#[derive(Debug)]
pub struct Child {
    name: String,
    inner: std::process::Child,
}

impl Child {
    /// Spawns `cmd` in a new process group, with SIGKILL as its parent-death signal.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> io::Result<Child> {
        cmd.process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() == 1 {
                    return Err(io::Error::other("parent exited before the child started"));
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| io::Error::other("spawner lock poisoned"))?
            .send((cmd, tx))
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
        let inner = rx
            .recv()
            .map_err(|_| io::Error::other("spawner thread is gone"))??;
        Ok(Child {
            name: name.into(),
            inner,
        })
    }

    /// The child's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` to the child's whole process group.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        let rc = unsafe { libc::kill(-(self.inner.id() as libc::pid_t), signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Returns the exit status if the child has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.inner.try_wait()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.inner.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps the child. The exit status when
    /// the child ended by itself (before or within `grace`), `None` when it had to be killed.
    pub fn stop(&mut self, grace: std::time::Duration) -> Option<ExitStatus> {
        let mut exited = self.inner.try_wait().ok().flatten();
        if exited.is_none() {
            let _ = self.signal(libc::SIGCONT);
            let _ = self.signal(libc::SIGTERM);
            let deadline = std::time::Instant::now() + grace;
            while exited.is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
                exited = self.inner.try_wait().ok().flatten();
            }
        }
        self.kill();
        exited
    }

    /// SIGKILL to the whole group, then reap.
    pub fn kill(&mut self) {
        let _ = self.signal(libc::SIGKILL);
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}
