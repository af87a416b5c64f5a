//! A child process owned by a test, stopped by its own PID (SIGTERM, then SIGKILL) on drop.

use std::io::{BufRead, BufReader};

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running child.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Spawns `cmd`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// Spawns `cmd` with stdout piped and waits (bounded) for it to print `ready`.
    pub fn spawn_until_ready(name: &str, cmd: &mut Command, timeout: Duration) -> Result<Self> {
        let mut p = Self::spawn(name, cmd.stdout(Stdio::piped()))?;
        let stdout = p.child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(timeout) {
            Ok(line) if line.trim() == "ready" => Ok(p),
            Ok(line) => bail!("{name} did not start: printed {line:?}"),
            Err(_) => bail!("{name} not ready after {timeout:?}"),
        }
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), sig)
            .with_context(|| format!("signalling {}", self.name))
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it wrote to its piped stdout, once it has exited (what fits a pipe's buffer).
    pub fn read_stdout(&mut self) -> Result<String> {
        use std::io::Read as _;
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .context("piped stdout, not read yet")?
            .read_to_string(&mut out)?;
        Ok(out)
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Stops it: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        if self.has_exited() {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        if self.wait_timeout(Duration::from_secs(3)).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
