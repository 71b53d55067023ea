//! Running code on a stock Debian kernel, which has ESP (the build hosts' kernel does
//! not), under QEMU with the host's root file system visible in the guest.
//!
//! The work is done by the project's script `tests/vm/vm` (see its header); this module
//! drives it. A test binary boots **one** VM, the first time a test asks for it, and
//! every VM test of that binary runs in it as a job, in parallel if libtest runs them
//! so. The VM stops when the test process exits (the script watches its parent).
//!
//! The usual way to write a VM test is [`guest_test`]: the same test function runs on
//! the host, where it hands itself to the VM, and in the guest, where it runs its body:
//!
//! ```no_run
//! #[test]
//! fn esp_works() {
//!     ikemesh_testbed::vm::guest_test(|| {
//!         // runs inside the VM, as root, on Debian's kernel
//!     });
//! }
//! ```

use crate::error;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The VM runner script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vm/vm");

/// Set to `1` in the environment of a test body that runs inside the guest.
pub const IN_GUEST_ENV: &str = "IKEMESH_IN_VM";

/// How long a guest job may run unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_mins(5);

/// How long setup (downloads on a fresh machine) and boot may take together.
const BOOT_TIMEOUT: Duration = Duration::from_mins(15);

/// Whether this process runs inside the test VM.
pub fn in_guest() -> bool {
    std::env::var_os(IN_GUEST_ENV).is_some_and(|v| v == "1")
}

/// What a command printed in the guest, and how it ended there.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The guest command's own exit status (124 when the job timed out).
    pub status: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl GuestOutput {
    /// Whether the guest command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A booted VM that runs jobs until this process exits.
#[derive(Debug)]
pub struct Vm {
    dir: PathBuf,
    serve: Mutex<Child>,
    next_job: AtomicU64,
    modules: String,
}

impl Vm {
    /// The VM of this test process, booted on first use. Every caller gets the same one;
    /// if it could not boot, every caller gets the same error.
    pub fn shared() -> Result<&'static Vm, String> {
        static VM: OnceLock<Result<Vm, String>> = OnceLock::new();
        VM.get_or_init(|| Vm::boot().map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
    }

    fn boot() -> io::Result<Vm> {
        let started = Instant::now();
        let setup = Command::new(SCRIPT).arg("setup").stdin(Stdio::null()).output()?;
        if !setup.status.success() {
            return Err(error(format!(
                "{SCRIPT} setup failed: {}",
                String::from_utf8_lossy(&setup.stderr).trim()
            )));
        }
        let dir = tempfile::Builder::new().prefix("ikemesh-vm.").tempdir_in("/tmp")?.keep();
        let log = fs::File::create(dir.join("serve.log"))?;
        let serve = Command::new(SCRIPT)
            .arg("serve")
            .arg(&dir)
            .args(["--parent", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut vm = Vm {
            dir,
            serve: Mutex::new(serve),
            next_job: AtomicU64::new(0),
            modules: String::new(),
        };
        while !vm.dir.join("ready").exists() {
            if let Some(status) = vm.serve_exited()? {
                return Err(error(format!(
                    "the VM stopped before it was ready ({status}):\n{}",
                    vm.logs()
                )));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                return Err(error(format!(
                    "the VM was not ready after {BOOT_TIMEOUT:?}:\n{}",
                    vm.logs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        vm.modules = fs::read_to_string(vm.dir.join("modules"))?;
        if vm.modules.contains("MISSING") {
            return Err(error(format!("the guest kernel lacks required modules:\n{}", vm.modules)));
        }
        eprintln!(
            "testbed: VM on kernel {} ready after {:.1} s",
            vm.kernel_release(),
            started.elapsed().as_secs_f64()
        );
        Ok(vm)
    }

    fn serve_exited(&self) -> io::Result<Option<std::process::ExitStatus>> {
        self.serve.lock().map_err(|_| error("VM handle poisoned"))?.try_wait()
    }

    /// The last lines of the runner's and the guest's logs, for error messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["serve.log", "boot.log", "agent.log"] {
            if let Ok(log) = fs::read_to_string(self.dir.join(name)) {
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(25)..];
                let _ =
                    writeln!(text, "--- {name} (last {} lines)\n{}", tail.len(), tail.join("\n"));
            }
        }
        text
    }

    /// The guest's kernel release (first line of the module report).
    pub fn kernel_release(&self) -> &str {
        self.modules.lines().next().unwrap_or("unknown")
    }

    /// Which modules the guest loaded (`loaded NAME`) or could not (`absent NAME`).
    pub fn module_report(&self) -> &str {
        &self.modules
    }

    /// The folder shared with the guest (same path inside and out).
    pub fn shared_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs a bash script in the guest as root and waits for it, at most `timeout`
    /// (after which the guest kills it and the status is 124).
    pub fn run(&self, script: &str, timeout: Duration) -> io::Result<GuestOutput> {
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let body = self.dir.join(format!("job-{id}.body"));
        fs::write(&body, script)?;
        let job = format!(
            "exec timeout -k 5 {} bash {}\n",
            timeout.as_secs().max(1),
            shell_quote(&body.to_string_lossy())
        );
        // Written beside jobs/ and renamed in, so the agent never sees half a job.
        let staging = self.dir.join(format!("job-{id}.staging"));
        fs::write(&staging, job)?;
        fs::rename(&staging, self.dir.join("jobs").join(format!("{id}.sh")))?;
        let results = self.dir.join("results");
        let rc_path = results.join(format!("{id}.rc"));
        let deadline = Instant::now() + timeout + Duration::from_secs(30);
        while !rc_path.exists() {
            if let Some(status) = self.serve_exited()? {
                return Err(error(format!(
                    "the VM stopped while job {id} ran ({status}):\n{}",
                    self.logs()
                )));
            }
            if Instant::now() > deadline {
                return Err(error(format!(
                    "job {id} did not finish in {timeout:?}:\n{}",
                    self.logs()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        let status = fs::read_to_string(&rc_path)?
            .trim()
            .parse()
            .map_err(|e| error(format!("job {id}: bad exit status file: {e}")))?;
        let read =
            |ext: &str| fs::read_to_string(results.join(format!("{id}.{ext}"))).unwrap_or_default();
        Ok(GuestOutput { status, stdout: read("out"), stderr: read("err") })
    }
}

/// Boots a VM of its own, runs `args` in it, shuts it down: the script's one-shot mode.
/// The status is the guest command's; 124 if it timed out, 125 if the VM failed.
pub fn run_once(args: &[&str], timeout: Duration) -> io::Result<GuestOutput> {
    let out = Command::new(SCRIPT)
        .args(["run", "--timeout", &timeout.as_secs().to_string(), "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok(GuestOutput {
        status: out.status.code().unwrap_or(125),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs the calling test's `body` inside the shared VM.
///
/// On the host this re-runs the current test executable in the guest, filtered to this
/// one test (libtest names each test's thread after the test), and fails the test with
/// the guest's output if the guest run failed. In the guest it runs `body`.
///
/// # Panics
/// On the host, if the VM cannot boot or the guest run fails; in the guest, whenever
/// `body` panics.
pub fn guest_test(body: impl FnOnce()) {
    guest_test_with_timeout(DEFAULT_TIMEOUT, body);
}

/// [`guest_test`] with a time limit for the guest run.
///
/// # Panics
/// As [`guest_test`].
pub fn guest_test_with_timeout(timeout: Duration, body: impl FnOnce()) {
    if in_guest() {
        body();
        return;
    }
    let name = thread::current()
        .name()
        .filter(|n| *n != "main")
        .expect("guest_test must be called from a #[test] (libtest names its thread)")
        .to_owned();
    let exe = std::env::current_exe().expect("current test executable");
    let script = format!(
        "export {IN_GUEST_ENV}=1 RUST_BACKTRACE=1\nexec {} --exact {} --nocapture --test-threads=1\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&name)
    );
    let vm = Vm::shared().unwrap_or_else(|e| panic!("cannot boot the test VM: {e}"));
    let out = vm.run(&script, timeout).unwrap_or_else(|e| panic!("{name}: {e}"));
    // Relay what the body printed, without the inner libtest's own lines (they would
    // read as a second test run in the outer summary). With --nocapture libtest writes
    // "test NAME ... " and the body's first line after it on the same line, and the
    // verdict ("ok") on a line of its own.
    let prefix = format!("test {name} ... ");
    let relayed: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l))
        .filter(|l| {
            !(l.is_empty()
                || *l == "ok"
                || *l == "FAILED"
                || l.starts_with("running ")
                || l.starts_with("test result:"))
        })
        .collect();
    print_relayed(&name, vm.kernel_release(), &relayed);
    assert!(
        out.success(),
        "{name} failed in the VM with exit status {}\n--- guest stdout\n{}\n--- guest stderr\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

#[allow(clippy::print_stdout)] // relaying the guest's output to the test's own is the point
fn print_relayed(name: &str, kernel: &str, lines: &[&str]) {
    println!("[vm {kernel}] {name}:");
    for line in lines {
        println!("[vm] {line}");
    }
}
