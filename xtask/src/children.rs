//! The programs xtask starts (labs, chromium, cargo, shellcheck) and how they end.
//!
//! Each child runs in a process group of its own and is registered while it runs. When xtask is
//! interrupted (SIGINT, SIGTERM, SIGHUP) or a child outlives its time limit, the child's group is
//! ended the same way: SIGTERM (the labs binary then removes its servers, directories and
//! containers, as on Ctrl-C), [`GRACE`] to finish, then SIGKILL. On an interrupt xtask then exits
//! 128 + the signal's number (130, 143, 129), saying what it ended.
//!
//! Why a group of its own: a terminal's Ctrl-C reaches only xtask, and `timeout`, CI runners and
//! `kill` signal only xtask's pid; either way xtask decides, and the child gets the one signal
//! labs cleans up on, once. In-process work that holds a server (the book's SQL step) takes a
//! [`Hold`], and xtask waits for it to be released before exiting.
//!
//! **Architecture Invariant:** xtask starts programs only through this module ([`run`],
//! [`output`], [`Running::spawn`]), never with `Command::status`, `output` or `spawn` directly,
//! so no program it started outlives it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long an ended child gets between SIGTERM and SIGKILL: time for labs to stop its servers
/// and remove a container.
pub const GRACE: Duration = Duration::from_secs(10);

/// How often a running child is looked at (its exit, its time limit).
const POLL: Duration = Duration::from_millis(50);

/// The signals xtask ends its children on.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

struct Registered {
    pid: u32,
    name: String,
}

#[derive(Default)]
struct Registry {
    /// The signal xtask is stopping on, once one arrived: nothing new starts after it.
    stopping: Option<libc::c_int>,
    children: Vec<Registered>,
    /// In-process work that must finish its cleanup before xtask exits.
    holds: Vec<(u64, String)>,
    next_hold: u64,
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { stopping: None, children: Vec::new(), holds: Vec::new(), next_hold: 0 });
/// Signalled whenever a child or a hold leaves the registry.
static CHANGED: Condvar = Condvar::new();
/// A second signal while stopping: skip the rest of the grace period.
static HURRY: AtomicBool = AtomicBool::new(false);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The signal xtask is stopping on, if any.
pub fn stopping() -> Option<libc::c_int> {
    registry().stopping
}

/// `SIGTERM` for 15, as shells and `kill -l` name them.
pub fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}

/// The write end of the pipe the signal handler reports on (-1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The handler: one byte, the signal's number, down the pipe. `write` is async-signal-safe;
/// everything else happens on the thread that reads the pipe.
extern "C" fn on_signal(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: writing one byte from a valid buffer to a descriptor we own (or -1: EBADF).
    unsafe { libc::write(SIGNAL_PIPE.load(Ordering::Relaxed), (&byte as *const u8).cast(), 1) };
}

/// Takes SIGINT, SIGTERM and SIGHUP away from their default (xtask dying at once, its children
/// left running): a handler hands each to a thread that ends the children, then exits. A signal
/// ignored when xtask started (`nohup`) stays ignored. Handlers, unlike a blocked signal mask,
/// are not inherited: every program xtask or the labs library starts gets the defaults back at
/// exec, so labs and PostgreSQL still hear SIGTERM and SIGINT.
pub fn end_children_on_signals() {
    // std makes both ends close-on-exec: no child inherits them.
    let (reader, writer) = match std::os::unix::net::UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("warning: xtask cannot watch for Ctrl-C ({e}); an interrupt may leave its children running");
            return;
        }
    };
    SIGNAL_PIPE.store(std::os::fd::IntoRawFd::into_raw_fd(writer), Ordering::SeqCst);
    for signal in SIGNALS {
        // SAFETY: sigaction with zeroed structs we own; the handler only calls write().
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, std::ptr::null(), &mut current);
            if current.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut byte = [0u8; 1];
        while reader.read_exact(&mut byte).is_ok() {
            let signal = libc::c_int::from(byte[0]);
            let first = {
                let mut registry = registry();
                let first = registry.stopping.is_none();
                registry.stopping.get_or_insert(signal);
                first
            };
            if first {
                std::thread::spawn(move || stop(signal));
            } else {
                eprintln!("xtask: {} again: killing what is left now", signal_name(signal));
                HURRY.store(true, Ordering::SeqCst);
                CHANGED.notify_all();
            }
        }
    });
}

/// Ends every registered child (SIGTERM, [`GRACE`], SIGKILL), waits for the holds, and exits.
fn stop(signal: libc::c_int) -> ! {
    let started = Instant::now();
    let children: Vec<(u32, String)> = registry().children.iter().map(|c| (c.pid, c.name.clone())).collect();
    if children.is_empty() {
        eprintln!("\nxtask: {}: stopping (no program of xtask's was running)", signal_name(signal));
    } else {
        eprintln!(
            "\nxtask: {}: ending what xtask started (SIGTERM, then SIGKILL after {} s):",
            signal_name(signal),
            GRACE.as_secs()
        );
    }
    for (pid, name) in &children {
        eprintln!("  `{name}` (pid {pid})");
        signal_group(*pid, libc::SIGTERM);
    }
    wait_until(started + GRACE, |r| r.children.is_empty());
    let killed: Vec<u32> = registry().children.iter().map(|c| c.pid).collect();
    if !killed.is_empty() {
        for pid in &killed {
            signal_group(*pid, libc::SIGKILL);
        }
        // SIGKILL cannot be refused; the thread waiting on the child reaps it.
        wait_until(Instant::now() + Duration::from_secs(5), |r| r.children.is_empty());
    }
    // In-process cleanups (a server the book's SQL ran on) finish on their own once stopping is set.
    let holds: Vec<String> = registry().holds.iter().map(|(_, what)| what.clone()).collect();
    if !holds.is_empty() {
        eprintln!("xtask: waiting for {} to be removed", holds.join(", "));
        if !wait_until(Instant::now() + GRACE * 3, |r| r.holds.is_empty()) {
            eprintln!("xtask: gave up waiting; `cargo labs clean` removes what is left");
        }
    }
    for (pid, name) in &children {
        if killed.contains(pid) {
            eprintln!(
                "xtask: killed `{name}` (pid {pid}) with SIGKILL: it did not end within {} s of SIGTERM",
                GRACE.as_secs()
            );
        } else {
            eprintln!("xtask: ended `{name}` (pid {pid}) with SIGTERM");
        }
    }
    eprintln!("xtask: interrupted by {}: stopped after {:.1} s", signal_name(signal), started.elapsed().as_secs_f64());
    std::process::exit(128 + signal);
}

/// Waits until `done` holds for the registry, or `deadline`, or a second signal; returns `done`.
fn wait_until(deadline: Instant, done: impl Fn(&Registry) -> bool) -> bool {
    let mut registry = registry();
    loop {
        if done(&registry) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline || HURRY.load(Ordering::SeqCst) {
            return false;
        }
        registry = CHANGED.wait_timeout(registry, (deadline - now).min(POLL * 4)).unwrap_or_else(|p| p.into_inner()).0;
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: signalling the process group of a child we started with process_group(0): its
    // group id is its pid, and the group holds only it and its descendants.
    unsafe { libc::killpg(pid as libc::pid_t, signal) };
}

/// Once xtask is stopping, the thread that would start something new, or carry on after its
/// child ended, waits here for the exit instead (so no step reports the interrupted child as a
/// failure of its own, and nothing new starts).
fn park_if_stopping() {
    if stopping().is_some() {
        park_for_exit();
    }
}

fn park_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// A child that xtask started and has not yet seen end.
pub struct Running {
    child: Child,
    name: String,
}

impl Running {
    /// Starts `cmd` in a process group of its own and registers it; refuses once xtask is stopping.
    pub fn spawn(cmd: &mut Command, name: String) -> Result<Running> {
        let mut registry = registry();
        if registry.stopping.is_some() {
            drop(registry);
            park_for_exit();
        }
        // No child reads the terminal: from a process group of its own that would stop it (SIGTTIN).
        let child = cmd.process_group(0).stdin(Stdio::null()).spawn().with_context(|| {
            format!("could not start `{}`: is it installed and on PATH?", cmd.get_program().to_string_lossy())
        })?;
        registry.children.push(Registered { pid: child.id(), name: name.clone() });
        Ok(Running { child, name })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child, ending its group when `limit` passes (None: no limit).
    pub fn wait(&mut self, limit: Option<Duration>) -> Result<ExitStatus> {
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            if let Some(status) = self.child.try_wait().with_context(|| format!("waiting for `{}`", self.name))? {
                self.deregister();
                park_if_stopping();
                return Ok(status);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let how = self.end(GRACE);
                self.deregister();
                park_if_stopping();
                bail!(
                    "`{}` did not finish within {}: {how}",
                    self.name,
                    describe_limit(limit.expect("a deadline has a limit"))
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM to the group, up to `grace` for the child to exit, then SIGKILL; says which it took.
    fn end(&mut self, grace: Duration) -> String {
        let pid = self.pid();
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Whatever it left in its group (a script it ran) goes with it.
                signal_group(pid, libc::SIGKILL);
                return format!("ended it with SIGTERM (pid {pid})");
            }
            std::thread::sleep(POLL);
        }
        signal_group(pid, libc::SIGKILL);
        let _ = self.child.wait();
        format!("sent SIGTERM, then SIGKILL after {} s (pid {pid})", grace.as_secs())
    }

    fn deregister(&mut self) {
        let pid = self.pid();
        registry().children.retain(|c| c.pid != pid);
        CHANGED.notify_all();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped before it ended (an error on the way): it must not outlive its owner.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.end(GRACE);
        }
        self.deregister();
    }
}

fn describe_limit(limit: Duration) -> String {
    match limit.as_secs() {
        0 => format!("{} ms", limit.as_millis()),
        s if s >= 120 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Runs `cmd` with inherited output; its exit status, or an error when it outlived `limit`.
pub fn run(cmd: &mut Command, limit: Option<Duration>) -> Result<ExitStatus> {
    let name = crate::describe(cmd);
    Running::spawn(cmd, name)?.wait(limit)
}

/// Runs `cmd` capturing its output; an error when it outlived `limit`.
pub fn output(cmd: &mut Command, limit: Option<Duration>) -> Result<Output> {
    let name = crate::describe(cmd);
    let mut running = Running::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()), name)?;
    // Read both pipes while waiting: a child that fills a pipe nobody reads would block for ever.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = sender.send(bytes);
        });
        receiver
    };
    let stdout = drain(running.child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(running.child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = running.wait(limit)?;
    // A process the child left behind in another group (a server it failed to stop) may hold the
    // pipes open: take what came within a few seconds of the exit rather than wait for it.
    let deadline = Instant::now() + PIPES_AFTER_EXIT;
    let collect = |receiver: std::sync::mpsc::Receiver<Vec<u8>>| {
        receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            format!("[xtask: output cut off: something `{}` left behind still holds it open]\n", running.name)
                .into_bytes()
        })
    };
    Ok(Output { status, stdout: collect(stdout), stderr: collect(stderr) })
}

/// How long the output of a child that exited may keep coming.
const PIPES_AFTER_EXIT: Duration = Duration::from_secs(5);

/// In-process work that must finish its cleanup (remove a server) before xtask exits on a signal.
pub struct Hold {
    id: u64,
}

/// Registers in-process work; xtask waits for the [`Hold`] to drop before exiting on a signal.
pub fn hold(what: impl Into<String>) -> Hold {
    let mut registry = registry();
    let id = registry.next_hold;
    registry.next_hold += 1;
    registry.holds.push((id, what.into()));
    Hold { id }
}

impl Drop for Hold {
    fn drop(&mut self) {
        registry().holds.retain(|(id, _)| *id != self.id);
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that records the signals it gets, then idles; `ignore_term` makes it refuse SIGTERM.
    fn recorder(dir: &std::path::Path, ignore_term: bool) -> Command {
        let trap = if ignore_term { "trap 'echo TERM >> got' TERM" } else { "trap 'echo TERM >> got; exit 143' TERM" };
        let mut cmd = Command::new("sh");
        // `sleep & wait`: sh runs traps only between commands, and `wait` returns on a signal.
        cmd.arg("-c").arg(format!("{trap}; echo $$ > pid; while true; do sleep 1 & wait $!; done")).current_dir(dir);
        cmd
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only asks whether the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn a_child_past_its_limit_gets_sigterm_and_its_group_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = run(&mut recorder(dir.path(), false), Some(Duration::from_millis(500))).unwrap_err().to_string();
        assert!(err.contains("did not finish within 500 ms: ended it with SIGTERM"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "SIGTERM was enough, no grace needed");
        assert_eq!(std::fs::read_to_string(dir.path().join("got")).unwrap(), "TERM\n");
        let pid: u32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
        assert!(!alive(pid), "the child is still running");
        assert!(registry().children.iter().all(|c| c.pid != pid), "the child is still registered");
    }

    #[test]
    fn a_child_that_refuses_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut running = Running::spawn(&mut recorder(dir.path(), true), "refuses SIGTERM".into()).unwrap();
        // Let sh install its trap before signalling.
        while !dir.path().join("pid").exists() {
            std::thread::sleep(POLL);
        }
        let how = running.end(Duration::from_millis(700));
        assert!(how.starts_with("sent SIGTERM, then SIGKILL"), "{how}");
        assert_eq!(std::fs::read_to_string(dir.path().join("got")).unwrap(), "TERM\n", "SIGTERM came first");
        // Its `sleep`, in the same group, went with it.
        assert!(!alive(running.pid()));
    }

    #[test]
    fn output_is_captured_and_a_failure_is_the_callers_to_judge() {
        let out =
            output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Some(Duration::from_secs(30)))
                .unwrap();
        assert_eq!((out.status.code(), &out.stdout[..], &out.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
    }

    /// A grandchild that outlives the child, in a session of its own, keeps the pipes open: the
    /// output is cut off a few seconds after the child's exit instead of waiting for it.
    #[test]
    fn output_does_not_wait_for_a_process_left_behind() {
        let started = Instant::now();
        let out = output(
            Command::new("sh").args(["-c", "echo before; setsid sleep 9 & exit 0"]),
            Some(Duration::from_secs(30)),
        )
        .unwrap();
        assert!(out.status.success());
        assert!(started.elapsed() < Duration::from_secs(8), "waited {:?} for the pipes", started.elapsed());
        assert!(String::from_utf8_lossy(&out.stdout).contains("output cut off"), "{out:?}");
    }

    #[test]
    fn a_program_that_does_not_exist_is_named() {
        let err = run(&mut Command::new("no-such-program-xtask"), None).unwrap_err().to_string();
        assert!(err.contains("could not start `no-such-program-xtask`"), "{err}");
    }
}
